"""SENet: a channel gate (gating family).

Squeeze-and-Excitation Networks, Jie Hu, Li Shen, Gang Sun, CVPR 2018 (the TPAMI version adds
Samuel Albanie and Enhua Wu), https://arxiv.org/abs/1709.01507. Official code
consulted: hujie-frank/SENet (Caffe prototxts: global pool, FC C -> C/r, ReLU, FC C/r -> C,
sigmoid, scale). Reduction r = 16. Ours differs: the hidden width is ``max(C // r, 4)`` (the
shared rule of :mod:`.widths`): with this harness's narrow features (C = 32 gives 2 hidden
units at r = 16) the paper's ratio leaves a bottleneck of 1-2 units; the floor keeps at least 4.
FCs are 1x1 convs with bias (the same map).

Gates multiply the input by weights in (0, 1) computed from the input; none of them is
residual (``out = x * gate``), as in the papers, where the gate sits inside a residual
branch of the host network. Placed after the backbone here, the block is the gate alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import reduction
from .widths import reduced


class SEBlock(nn.Module):
    """Squeeze (global average pool) and excitation (bottleneck MLP, sigmoid) channel gate."""

    FACTORS = (reduction("MLP hidden width max(4, C/reduction)"),)

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = reduced(channels, reduction)
        self.widths = {"hidden": hidden}
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, 1) channel weights in (0, 1)."""
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(x)
        maps.record("channel", gate.flatten(1), kind="channel")
        return x * gate
