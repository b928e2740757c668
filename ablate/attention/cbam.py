"""CBAM: a channel gate then a spatial gate (gating family).

CBAM: Convolutional Block Attention Module, Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So
Kweon, ECCV 2018, https://arxiv.org/abs/1807.06521. Official code consulted:
Jongchan/attention-module (``MODELS/cbam.py``). Channel gate: a shared MLP (C -> C/r -> C,
r = 16) on the average- and max-pooled descriptors, summed, sigmoid. Then the spatial gate on
the channel-gated features: channel-wise max and mean (concatenated in that order, as the
official ``ChannelPool``), a 7x7 conv (no bias) with BatchNorm (official ``BasicConv``, BN
momentum 0.01), sigmoid. Factors ``channel`` and ``spatial`` switch either gate off (both
off is the identity). Ours differs: the same floor of 4 hidden units as SE.

Gates multiply the input by weights in (0, 1) computed from the input; none of them is
residual (``out = x * gate``), as in the papers, where the gate sits inside a residual
branch of the host network. Placed after the backbone here, the block is the gate alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import reduction, switch
from .widths import reduced


class CBAMBlock(nn.Module):
    """Channel gate (shared MLP on avg- and max-pool) then spatial gate (7x7 conv on max/mean)."""

    FACTORS = (
        reduction("MLP hidden width max(4, C/reduction)"),
        switch("channel", "channel gate (avg+max pool, shared MLP)"),
        switch("spatial", "spatial gate (7x7 conv on channel max/mean)"),
    )

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
        if self.use_channel:
            maps.record("channel", mc.flatten(1), kind="channel")
        if self.use_spatial:
            maps.record("spatial", ms.flatten(2), kind="maps", grid=x.shape[-2:])
        return x * mc * ms
