"""Gating family: SENet, CBAM, and the spatial transformer (STN).

Gates multiply the input by weights in (0, 1) computed from the input; none of them is
residual (``out = x * gate``), as in the papers, where the gate sits inside a residual
branch of the host network. Placed after the backbone here, the block is the gate alone.

SENet
-----
Squeeze-and-Excitation Networks, Jie Hu, Li Shen, Gang Sun, CVPR 2018 (the TPAMI version adds
Samuel Albanie and Enhua Wu), https://arxiv.org/abs/1709.01507. Official code
consulted: hujie-frank/SENet (Caffe prototxts: global pool, FC C -> C/r, ReLU, FC C/r -> C,
sigmoid, scale). Reduction r = 16. Ours differs: the hidden width is ``max(C // r, 4)`` (the
shared rule of :mod:`.widths`): with this harness's narrow features (C = 32 gives 2 hidden
units at r = 16) the paper's ratio leaves a bottleneck of 1-2 units; the floor keeps at least 4.
FCs are 1x1 convs with bias (the same map).

CBAM
----
CBAM: Convolutional Block Attention Module, Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So
Kweon, ECCV 2018, https://arxiv.org/abs/1807.06521. Official code consulted:
Jongchan/attention-module (``MODELS/cbam.py``). Channel gate: a shared MLP (C -> C/r -> C,
r = 16) on the average- and max-pooled descriptors, summed, sigmoid. Then the spatial gate on
the channel-gated features: channel-wise max and mean (concatenated in that order, as the
official ``ChannelPool``), a 7x7 conv (no bias) with BatchNorm (official ``BasicConv``, BN
momentum 0.01), sigmoid. Factors ``channel`` and ``spatial`` switch either gate off (both
off is the identity). Ours differs: the same floor of 4 hidden units as SE.

STN
---
Spatial Transformer Networks, Max Jaderberg, Karen Simonyan, Andrew Zisserman, Koray
Kavukcuoglu, NeurIPS 2015, https://arxiv.org/abs/1506.02025 (no official code released; the
PyTorch ``affine_grid``/``grid_sample`` pair is the paper's grid generator and bilinear
sampler). A localisation network regresses the 6 parameters of an affine transform theta; its
final layer is zero-initialised with the identity as bias (the paper initialises to the
identity transform), so the block starts as the identity; the feature map is resampled
bilinearly on the transformed grid (zeros outside). Residual-free, as in the paper. The
paper's localisation nets are task-specific; ours is conv3x3 (C -> C/4, at least 8) + ReLU,
conv3x3 + ReLU, adaptive average pool to 4x4, FC -> 32, ReLU, FC -> 6. Only the affine
transform is implemented (the paper also uses projective and thin-plate-spline ones).
``align_corners=False`` in both grid functions so that the identity theta samples exactly the
pixel centres.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .widths import reduced


class SEBlock(nn.Module):
    """Squeeze (global average pool) and excitation (bottleneck MLP, sigmoid) channel gate."""

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
        return x * self.gate(x)


class CBAMBlock(nn.Module):
    """Channel gate (shared MLP on avg- and max-pool) then spatial gate (7x7 conv on max/mean)."""

    def __init__(self, channels: int, reduction: int = 16, channel: bool = True, spatial: bool = True):
        super().__init__()
        self.use_channel, self.use_spatial = channel, spatial
        if channel:
            hidden = reduced(channels, reduction)
            self.widths = {"hidden": hidden}
            self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, channels, 1))
        if spatial:
            self.spatial_conv = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)
            self.spatial_norm = nn.BatchNorm2d(1, momentum=0.01)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 1, 1) in (0, 1); ones when the channel gate is off."""
        if not self.use_channel:
            return x.new_ones(x.shape[0], x.shape[1], 1, 1)
        return torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in (0, 1) from the (channel-gated) features; ones when off."""
        if not self.use_spatial:
            return x.new_ones(x.shape[0], 1, *x.shape[2:])
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_norm(self.spatial_conv(pooled)))

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Mc, Ms)`` with ``forward(x) == x * Mc * Ms``."""
        mc = self.channel_gate(x)
        return mc, self.spatial_gate(x * mc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc, ms = self.gates(x)
        return x * mc * ms


class STNBlock(nn.Module):
    """Spatial transformer: a localisation net predicts an affine theta; resample the features."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(8, channels // 4)
        self.localisation = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(hidden * 16, 32), nn.ReLU(inplace=True),
            nn.Linear(32, 6),
        )
        last = self.localisation[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3) affine transforms (output grid -> input coordinates, in [-1, 1] units)."""
        return self.localisation(x).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.theta(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
