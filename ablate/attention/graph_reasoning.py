"""Graph reasoning over K nodes: SGR, Beyond Grids (GCU) and LatentGNN (low-rank family).

All three project the N pixels onto K nodes, reason over the nodes, and map back; they
differ in each slot. ``gcn: off`` removes the reasoning step in each, as in GloRe's preset,
leaving projection and reprojection (the ``gcn_effect`` study). Each reasoning step follows its
own paper or official code, not GloRe's ``W_s relu(V + A_g V)``: SGR's and Beyond Grids' are
``ReLU(A Z W)`` (their papers' equations, nonlinearity after the weight; neither released
code), LatentGNN's is a parameter-free ``softmax(Z_n Z_n^T) Z`` (its official code, no ReLU).
Reduced widths (SGR's state, LatentGNN's C/4) follow the shared floor of :mod:`.widths`
(unchanged at C = 32 and the default ratios).

SGR
---
Symbolic Graph Reasoning Meets Convolutions, Xiaodan Liang, Zhiting Hu, Hao Zhang, Liang Lin,
Eric P. Xing, NeurIPS 2018 (proceedings; no arXiv version found). No official
code was released that we could find; an unofficial TensorFlow re-implementation
(julianschoep/SGRLayer) was read to cross-check the equations.

* local-to-semantic voting: ``a_{x->n} = softmax_n(W^a_n . x)`` (each pixel votes over the K
  nodes), ``H^ps_n = sum_x a_{x->n} W^ps x`` (a sum over pixels), ReLU (drawn in the paper's
  figure);
* graph reasoning: ``H^g = ReLU(A_hat [H^ps, S] W^g)`` with S the nodes' linguistic
  embeddings (word vectors) and A_hat = Q^-1/2 (A + I) Q^-1/2 the normalised knowledge-graph
  adjacency;
* semantic-to-local mapping: compatibilities ``W^s [H^g_n, x]`` normalised into A^sp, then
  ``X' = X + ReLU(A^sp H^g W^sp)``.

Ours differs: **there is no knowledge graph or word embedding here**, so S is a learned
(K x C_s) embedding and A is learned: ``A = sigmoid((P + P^T) / 2)`` (symmetric, edge weights
in (0, 1); P = 0 at init, a uniform graph), self-loops and the paper's symmetric degree
normalisation kept. The compatibility, taken literally (a linear W^s on the concatenation
[H^g_n, x] inside a softmax), does not depend on the pixel once normalised over nodes (the
x-term is the same for every node and cancels), nor on the node once normalised over pixels;
we insert a ReLU, ``ReLU(w_h . H^g_n + w_x . x)``, as Non-local's concatenation form does,
and normalise over the K nodes per pixel (each pixel a convex combination of nodes; the
re-implementation above instead softmaxes over pixels and then L1-normalises over nodes).
Voting sums over pixels as in the paper, so node features scale with N; ``vote_norm: mean``
divides by N (GloRe's official choice) for resolution-independent magnitudes.
Node count K and state width C_s = C / ``state_reduction`` are study factors (the paper's K is
the knowledge graph's concept count, its state width 256).

Beyond Grids (GCU)
------------------
Beyond Grids: Learning Graph Representations for Visual Recognition, Yin Li, Abhinav Gupta,
NeurIPS 2018 (proceedings, pp. 9225-9235; no arXiv version found). No official code found.

* graph projection: K anchors w_k and scales sigma_k (both learned, per channel):
  ``q_nk = softmax_k(-||(x_n - w_k) / sigma_k||^2 / 2)``; node features are the normalised
  weighted residuals ``z'_k = sum_n q_nk (x_n - w_k) / sigma_k / sum_n q_nk``,
  ``z_k = z'_k / ||z'_k||``;
* graph convolution: adjacency from the node features, ``A = Z Z^T`` (the paper's Z^T Z with
  Z stored d x K; K x K cosine similarities since the z_k are unit length), ``Z~ = ReLU(A Z W_g)``;
* reprojection with the same assignment: ``X~ = Q Z~``.

Ours differs: the paper runs several GCUs (different vertex counts) side by side and
concatenates their outputs with the input; a block here must keep C channels, so one GCU with
K vertices whose W_g maps to C channels is *added* to the input (residual). f is a ReLU (no BN
over the K nodes). Anchors are initialised from N(0, 1) and sigma = 1 (log-parametrised to
stay positive); the paper's initialisation is not reproduced.

LatentGNN
---------
LatentGNN: Learning Efficient Non-local Relations for Visual Recognition, Songyang Zhang,
Shipeng Yan, Xuming He, ICML 2019, https://arxiv.org/abs/1905.11634. Official code consulted:
latentgnn/LatentGNN-V1-PyTorch (``lib/latentgnn_v1.py``), followed closely:

* the input is reduced to C/4 channels (1x1 conv + BN) and L2-normalised over channels, one
  reduction for visible-to-latent and one for latent-to-visible (``asymmetric`` mode, the
  default; ``symmetric: on`` shares one reduction and one kernel);
* visible-to-latent: kernel psi = ReLU(BN(1x1 conv)) gives (K x N) weights, L2-normalised
  over the pixels; latent features = weights @ x (K x C/4);
* latent-to-latent (``gcn``): the latent features, L2-normalised, give a dense affinity
  ``softmax(Z_n Z_n^T)`` over the K latent nodes, which mixes them;
* latent-to-visible: a second kernel's (K x N) weights, L2-normalised over the K nodes,
  spread the latent features back; 1x1 conv + BN to C channels; ``x + gamma * out`` with
  gamma a zero-initialised scalar (the block starts as the identity).

Defaults: K = 100 latent nodes (the official code's example), reduction 4 (the official
default), one kernel (the official default; more kernels are concatenated there, not
exposed here), the optional graph-conv weight of the official code off (its default).
Compared line by line with ``lib/latentgnn_v1.py`` (``LatentGNNV1``, ``LatentGNN_Kernel``):
no further difference found except ``gcn: off``, which the official code does not offer
(its latent-to-latent step always runs); convs and BNs keep PyTorch's init, as there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .widths import reduced


# ----------------------------------------------------------------------------------------- SGR
class SGRBlock(nn.Module):
    """Symbolic Graph Reasoning with a learned graph: vote to K nodes, GCN, map back."""

    def __init__(self, channels: int, K: int = 16, state_reduction: int = 2, gcn: bool = True,
                 vote_norm: str = "sum"):
        super().__init__()
        if vote_norm not in ("sum", "mean"):
            raise ValueError(f"vote_norm must be 'sum' or 'mean', got {vote_norm!r}")
        state = reduced(channels, state_reduction)
        self.K, self.state, self.gcn, self.vote_norm = K, state, gcn, vote_norm
        self.widths = {"state": state, "nodes": K}
        self.vote = nn.Conv2d(channels, K, kernel_size=1, bias=False)  # W^a
        self.to_state = nn.Conv2d(channels, state, kernel_size=1, bias=False)  # W^ps
        if gcn:
            self.embedding = nn.Parameter(torch.randn(K, state) * state ** -0.5)  # S (learned)
            self.edge_logits = nn.Parameter(torch.zeros(K, K))  # P; A = sigmoid((P + P^T) / 2)
            self.graph_weight = nn.Linear(2 * state, state, bias=False)  # W^g
        self.compat_node = nn.Linear(state, 1, bias=False)  # W^s, node half
        self.compat_pixel = nn.Conv2d(channels, 1, kernel_size=1, bias=False)  # W^s, pixel half
        self.from_state = nn.Linear(state, channels, bias=False)  # W^sp

    def adjacency(self) -> torch.Tensor:
        """A_hat = Q^-1/2 (A + I) Q^-1/2 of the learned symmetric graph (K x K)."""
        a = torch.sigmoid((self.edge_logits + self.edge_logits.T) / 2)
        a = a + torch.eye(self.K, dtype=a.dtype, device=a.device)
        d = a.sum(1).rsqrt()
        return d[:, None] * a * d[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        votes = torch.softmax(self.vote(x).flatten(2), dim=1)  # B, K, N: each pixel over nodes
        xs = self.to_state(x).flatten(2)  # B, C_s, N
        h = votes @ xs.transpose(1, 2)  # B, K, C_s
        if self.vote_norm == "mean":
            h = h / xs.shape[-1]
        h = torch.relu(h)
        if self.gcn:
            s = self.embedding.unsqueeze(0).expand(b, -1, -1)
            h = torch.relu(self.adjacency() @ self.graph_weight(torch.cat([h, s], dim=2)))
        compat = torch.relu(self.compat_node(h) + self.compat_pixel(x).flatten(2))  # B, K, N
        mapping = torch.softmax(compat, dim=1)  # each pixel: convex combination of nodes
        y = self.from_state(h).transpose(1, 2) @ mapping  # B, C, N
        return x + torch.relu(y).reshape_as(x)


# ---------------------------------------------------------------------------------------- GCU
class GCUBlock(nn.Module):
    """Beyond Grids' graph convolutional unit: anchor/variance soft assignment, GCN, reprojection."""

    def __init__(self, channels: int, K: int = 16, gcn: bool = True):
        super().__init__()
        self.K, self.gcn = K, gcn
        self.anchors = nn.Parameter(torch.randn(K, channels))  # w_k
        self.log_sigma = nn.Parameter(torch.zeros(K, channels))  # sigma_k = exp(log_sigma_k)
        if gcn:
            self.graph_weight = nn.Linear(channels, channels, bias=False)  # W_g (d -> d_out = C)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Z, Q)``: unit-norm node features (B, K, C) and the soft assignment (B, N, K)."""
        xt = x.flatten(2).transpose(1, 2)  # B, N, C
        inv_var = torch.exp(-2 * self.log_sigma)  # K, C
        # ||(x - w_k) / sigma_k||^2 expanded so no (B, N, K, C) tensor is built.
        dist = (xt * xt) @ inv_var.T - 2 * xt @ (self.anchors * inv_var).T \
            + (self.anchors * self.anchors * inv_var).sum(1)
        q = torch.softmax(-dist / 2, dim=2)  # B, N, K
        mass = q.sum(1).unsqueeze(2)  # B, K, 1
        z = (q.transpose(1, 2) @ xt / mass.clamp_min(1e-12) - self.anchors) * torch.exp(-self.log_sigma)
        return F.normalize(z, dim=2), q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, q = self.project(x)
        if self.gcn:
            adj = z @ z.transpose(1, 2)  # B, K, K
            z = torch.relu(adj @ self.graph_weight(z))
        y = (q @ z).transpose(1, 2)  # B, C, N
        return x + y.reshape_as(x)


# ---------------------------------------------------------------------------------- LatentGNN
def _conv_bn(cin: int, cout: int, relu: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel_size=1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LatentGNNBlock(nn.Module):
    """LatentGNN (V1): visible -> K latent nodes -> latent message passing -> visible."""

    def __init__(self, channels: int, K: int = 100, reduction: int = 4, gcn: bool = True,
                 symmetric: bool = False):
        super().__init__()
        inter = reduced(channels, reduction)
        self.K, self.gcn, self.symmetric = K, gcn, symmetric
        self.widths = {"inner": inter, "nodes": K}
        self.down_v2l = _conv_bn(channels, inter)
        self.psi_v2l = _conv_bn(inter, K, relu=True)
        if not symmetric:
            self.down_l2v = _conv_bn(channels, inter)
            self.psi_l2v = _conv_bn(inter, K, relu=True)
        self.up = _conv_bn(inter, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v2l = F.normalize(self.down_v2l(x), dim=1)  # B, C', H, W
        w_v2l = self.psi_v2l(v2l).flatten(2)  # B, K, N
        if self.symmetric:
            w_v2l = w_l2v = F.normalize(w_v2l, dim=1)  # official symmetric mode: over K
            l2v = v2l
        else:
            l2v = F.normalize(self.down_l2v(x), dim=1)
            w_l2v = F.normalize(self.psi_l2v(l2v).flatten(2), dim=1)  # over the K nodes
            w_v2l = F.normalize(w_v2l, dim=2)  # over the pixels
        latent = w_v2l @ v2l.flatten(2).transpose(1, 2)  # B, K, C'
        if self.gcn:
            zn = F.normalize(latent, dim=2)
            latent = torch.softmax(zn @ zn.transpose(1, 2), dim=2) @ latent
        visible = (latent.transpose(1, 2) @ w_l2v).reshape(x.shape[0], -1, *x.shape[2:])
        return x + self.gamma * self.up(visible)
