"""Beyond Grids (GCU): soft assignment to K anchors, graph convolution, reprojection (low-rank family).

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

``gcn: off`` removes the reasoning step, as in GloRe's preset, leaving projection and
reprojection (the ``gcn_effect`` study). The reasoning step is the paper's ``ReLU(A Z W)``, not GloRe's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import gcn, nodes


class GCUBlock(nn.Module):
    """Beyond Grids' graph convolutional unit: anchor/variance soft assignment, GCN, reprojection."""

    FACTORS = (
        nodes("number of graph vertices"),
        gcn("graph convolution with the node-similarity adjacency"),
    )

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
        maps.record("assignment", q.transpose(1, 2), kind="maps", grid=x.shape[-2:])
        if self.gcn:
            adj = z @ z.transpose(1, 2)  # B, K, K
            z = torch.relu(adj @ self.graph_weight(z))
        y = (q @ z).transpose(1, 2)  # B, C, N
        return x + y.reshape_as(x)
