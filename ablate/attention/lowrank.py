"""Low-rank family: project pixels to K nodes, reason over the nodes, reproject.

Graph-Based Global Reasoning Networks (GloRe), Chen, Rohrbach, Yan, Yan, Feng, Kalantidis,
CVPR 2019, https://arxiv.org/abs/1811.12814 (official code consulted:
facebookresearch/GloRe, ``GloRe_Unit``).

Slots:

* ``mapping``: how pixels become nodes. ``learned``: a 1x1 conv gives each pixel K
  projection weights (GloRe's B); the node features are the B-weighted sums of the reduced
  pixel features, divided by the pixel count as in the official code. ``em`` (EMANet's EM,
  T = 3, no gradient through the iterations) and ``pooled`` (sqrt(K) x sqrt(K) average-pooled
  regions) come from ``projection.py``; with them the reprojection uses that mapping's
  assignment (EM responsibilities, pooling membership) in place of B.
* ``gcn``: the reasoning step. GloRe's graph convolution is ``relu(W_s ((I + A_g) V))``:
  a 1D conv across the K nodes (the adjacency A_g) with an identity shortcut, then a 1D conv
  across the state channels (W_s) and a ReLU. ``gcn: off`` skips it entirely, leaving only
  projection and reprojection: the ablation DESIGN.md's ``gcn_effect`` study asks for.
* reprojection with the transpose of the same projection (GloRe reuses B), a 1x1 conv back
  to C channels, BN, residual.

Widths follow the paper: state channels C_s = C / ``state_reduction`` (2 in the paper:
C_s = 2 * C/4), K nodes (C/4 in the paper; a study factor here).
"""
from __future__ import annotations

import torch
from torch import nn

from .projection import make_projection


class GraphReasoning(nn.Module):
    """GloRe's GCN over K nodes with C_s state channels: relu(W_s (V + A_g V))."""

    def __init__(self, nodes: int, state: int):
        super().__init__()
        self.node_conv = nn.Conv1d(nodes, nodes, kernel_size=1)  # A_g, mixes nodes
        self.state_conv = nn.Conv1d(state, state, kernel_size=1, bias=False)  # W_s

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # v: B, C_s, K
        h = self.node_conv(v.transpose(1, 2)).transpose(1, 2) + v
        return torch.relu(self.state_conv(h))


class LowRankBlock(nn.Module):
    """Project to K nodes, optionally reason with a GCN, reproject; residual output."""

    def __init__(
        self,
        channels: int,
        K: int = 16,
        state_reduction: int = 2,
        gcn: bool = True,
        mapping: str = "learned",
    ):
        super().__init__()
        state = max(1, channels // state_reduction)
        self.K, self.state, self.mapping_name = K, state, mapping
        if mapping == "learned":  # GloRe's own layers, named as in the paper's B and reduction
            self.reduce = nn.Conv2d(channels, state, kernel_size=1)
            self.project = nn.Conv2d(channels, K, kernel_size=1)
        else:
            self.mapping = make_projection(mapping, channels, state, K)
        self.reason = GraphReasoning(K, state) if gcn else nn.Identity()
        self.extend = nn.Conv2d(state, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=1e-4)

    def nodes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features V (B, C_s, K) and the projection B (B, K, N)."""
        if self.mapping_name != "learned":
            return self.mapping(x)
        xs = self.reduce(x).flatten(2)  # B, C_s, N
        proj = self.project(x).flatten(2)  # B, K, N
        v = xs @ proj.transpose(1, 2) / xs.shape[-1]
        return v, proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v, proj = self.nodes(x)
        v = self.reason(v)
        y = (v @ proj).reshape(b, self.state, h, w)  # reproject with the same B
        return x + self.norm(self.extend(y))
