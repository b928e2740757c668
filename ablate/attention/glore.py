"""GloRe: project pixels to K nodes, reason over the nodes, reproject (low-rank family).

Graph-Based Global Reasoning Networks (GloRe), Chen, Rohrbach, Yan, Yan, Feng, Kalantidis,
CVPR 2019, https://arxiv.org/abs/1811.12814. Official code compared against:
facebookresearch/GloRe, ``network/global_reasoning_unit.py`` (``GCN``, ``GloRe_Unit``) and the
initialisation in ``network/resnet50_3d_gcn_x5.py`` / ``network/initializer.py``.

At its defaults the block is the official unit:

* reduce (1x1 conv C -> C_s, bias) and project (1x1 conv C -> K, bias, no softmax: GloRe's B);
  node features ``V = X_s B^T`` (B, C_s, K). The official code sums over the pixels and divides
  by their count N only with ``normalize=True`` (its default is False): factor ``normalize``,
  default off.
* ``gcn``: the reasoning step, official ``GCN.forward``: ``W_s relu(V + A_g V)``, i.e. a 1D conv
  across the K nodes (A_g, with bias), the identity shortcut, a ReLU, then a 1D conv across the
  state channels (W_s, no bias) with no ReLU after. ``gcn_relu: after`` is the form this
  harness used before (``relu(W_s (V + A_g V))``), kept as a named alternative. ``gcn: off``
  skips the step entirely, leaving projection and reprojection (the ``gcn_effect`` study);
  ``gcn_mixing: states`` keeps the step's shape, ReLU and (with K = C_s) parameter count but
  mixes each node's state channels instead of the nodes: the matched control of the graph
  mixing (the ``gcn_control`` study; not in the paper).
* reprojection with the same B (GloRe reuses it), a 1x1 conv back to C channels (no bias), BN
  (eps 1e-4) and the residual. The official network zero-initialises that BN's gamma (the
  ``blocker``), so the unit starts as the identity: factor ``zero_init``, default on.
* initialisation: the official network applies Xavier-uniform (gain 1) to every conv, the
  unit's included, with zero biases; so does this block.

``mapping``: how pixels become nodes. ``learned`` is GloRe's B above. ``em`` (EMANet's EM,
T = 3, no gradient through the iterations) and ``pooled`` (sqrt(K) x sqrt(K) average-pooled
regions) come from ``projection.py``; with them the reprojection uses that mapping's assignment
(EM responsibilities, pooling membership) in place of B, their node features are already
averages, and ``normalize`` does not apply (refused). Not in the paper.

Widths: state channels C_s = C / ``state_reduction`` (the paper: C_s = 2 * C/4 = C/2), at least
4 (``widths.reduced``); K nodes (C/4 in the paper; a study factor here).
"""
from __future__ import annotations

import torch
from torch import nn

from .projection import MAPPINGS, make_projection
from . import maps, rules
from ..config.vocab import choice, gcn, integer, nodes, switch
from .widths import reduced

GCN_RELU = ("between", "after")
GCN_MIXING = ("nodes", "states")


class GraphReasoning(nn.Module):
    """GloRe's GCN over K nodes with C_s state channels: W_s relu(V + A_g V) (official), or
    relu(W_s (V + A_g V)) with ``relu='after'``.

    ``mixing='states'`` is the matched control of the graph step: A_g (a K x K conv with bias
    across the nodes) is replaced by a C_s x C_s conv with bias across the state channels of each
    node, so nothing flows between nodes while the shortcut, the ReLU and W_s stay; with
    K = C_s (gcn_effect: K = 16, C_s = 16) its parameter count equals the GCN's."""

    def __init__(self, nodes: int, state: int, relu: str = "between", mixing: str = "nodes"):
        super().__init__()
        if relu not in GCN_RELU:
            raise ValueError(f"gcn_relu must be one of {', '.join(GCN_RELU)}, got {relu!r}")
        if mixing not in GCN_MIXING:
            raise ValueError(f"gcn_mixing must be one of {', '.join(GCN_MIXING)}, got {mixing!r}")
        self.relu, self.mixing = relu, mixing
        if mixing == "nodes":
            self.node_conv = nn.Conv1d(nodes, nodes, kernel_size=1)  # A_g, mixes nodes
        else:
            self.mix_conv = nn.Conv1d(state, state, kernel_size=1)  # the control: mixes channels within a node
        self.state_conv = nn.Conv1d(state, state, kernel_size=1, bias=False)  # W_s

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # v: B, C_s, K
        if self.mixing == "nodes":
            h = self.node_conv(v.transpose(1, 2)).transpose(1, 2) + v
        else:
            h = self.mix_conv(v) + v
        if self.relu == "between":
            return self.state_conv(torch.relu(h))
        return torch.relu(self.state_conv(h))


class LowRankBlock(nn.Module):
    """Project to K nodes, optionally reason with a GCN, reproject; residual output (GloRe's unit)."""

    FACTORS = (
        nodes("number of graph nodes"),
        integer("state_reduction", 1, "state channels C/state_reduction"),
        gcn("graph convolution between projection and reprojection"),
        choice("gcn_relu", GCN_RELU, "GCN's ReLU: W_s relu(V + A_g V) (official) or relu(W_s (V + A_g V))"),
        choice("gcn_mixing", GCN_MIXING, "what the GCN's first conv mixes: the nodes (GloRe's A_g) or, as a "
               "matched control without graph mixing, the state channels of each node", added=True),
        switch("normalize", "divide the node features by the pixel count (official default: off)"),
        switch("zero_init", "zero BN gamma on the output (the official 'blocker')"),
        choice("mapping", MAPPINGS, "pixels to nodes: GloRe's learned projection, EM (T=3), or pooled regions "
               "(K a square)"),
    )

    def __init__(
        self,
        channels: int,
        K: int = 16,
        state_reduction: int = 2,
        gcn: bool = True,
        mapping: str = "learned",
        normalize: bool = False,
        gcn_relu: str = "between",
        zero_init: bool = True,
        gcn_mixing: str = "nodes",
    ):
        super().__init__()
        self.check_args(dict(mapping=mapping, normalize=normalize, gcn=gcn, gcn_mixing=gcn_mixing))
        state = reduced(channels, state_reduction)
        self.K, self.state, self.mapping_name, self.normalize = K, state, mapping, normalize
        self.widths = {"state": state, "nodes": K}
        if mapping == "learned":  # GloRe's own layers, named as in the paper's B and reduction
            self.reduce = nn.Conv2d(channels, state, kernel_size=1)
            self.project = nn.Conv2d(channels, K, kernel_size=1)
        else:
            self.mapping = make_projection(mapping, channels, state, K)
        self.reason = GraphReasoning(K, state, gcn_relu, gcn_mixing) if gcn else nn.Identity()
        self.extend = nn.Conv2d(state, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=1e-4)
        for m in self.modules():  # the official network's Xavier initialiser
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight, gain=1.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init:
            nn.init.zeros_(self.norm.weight)

    check_args = staticmethod(rules.glore)  # combinations it cannot build, torch-free (.rules)

    def nodes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features V (B, C_s, K) and the projection B (B, K, N)."""
        if self.mapping_name != "learned":
            return self.mapping(x)
        xs = self.reduce(x).flatten(2)  # B, C_s, N
        proj = self.project(x).flatten(2)  # B, K, N
        v = xs @ proj.transpose(1, 2)
        return (v / xs.shape[-1] if self.normalize else v), proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v, proj = self.nodes(x)
        maps.record("projection", proj, kind="maps", grid=(h, w))
        v = self.reason(v)
        y = (v @ proj).reshape(b, self.state, h, w)  # reproject with the same B
        return x + self.norm(self.extend(y))
