"""SGR: Symbolic Graph Reasoning, pixels vote onto K nodes, reasoning over a learned graph (low-rank family).

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

``gcn: off`` removes the reasoning step, as in GloRe's preset, leaving projection and
reprojection (the ``gcn_effect`` study). The reasoning step is the paper's ``ReLU(A Z W)`` (nonlinearity after
the weight), not GloRe's; the state width follows the shared floor of :mod:`.widths`.
"""
from __future__ import annotations

import torch
from torch import nn

from . import maps
from ..config.vocab import choice, gcn, integer, nodes
from .widths import reduced


class SGRBlock(nn.Module):
    """Symbolic Graph Reasoning with a learned graph: vote to K nodes, GCN, map back."""

    FACTORS = (
        nodes("number of symbolic nodes"),
        integer("state_reduction", 1, "node feature width C/state_reduction"),
        gcn("graph reasoning over the (learned) node graph"),
        choice("vote_norm", ("sum", "mean"), "node features: sum of votes over pixels (paper) or their mean"),
    )

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
        maps.record("votes", votes, kind="maps", grid=x.shape[-2:])
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
        maps.record("mapping", mapping, kind="maps", grid=x.shape[-2:])
        y = self.from_state(h).transpose(1, 2) @ mapping  # B, C, N
        return x + torch.relu(y).reshape_as(x)
