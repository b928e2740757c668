"""GatedContext: GCNet's global context, added to each pixel through a learned gate.

GCNet (Cao et al., ICCVW 2019) pools one context vector with a query-independent softmax map and
adds it, through a bottleneck, to every pixel alike. Here each pixel decides how much of it to
take: ``gate="pixel"`` computes a sigmoid gate per pixel from the pixel and the context,
``gate="channel"`` one gate per channel from the context alone (as SENet gates), ``gate="none"``
adds the context everywhere (GCNet's ``add`` fusion). The bottleneck's last conv starts at zero, so
the block starts as the identity.

As an ablate plugin, the block follows the contract ``GatedContext(channels, **factors)``, (B, C,
H, W) in and out; its factors are read from the annotated keyword arguments below (``int``,
``Literal[...]``, ``bool``), each with its default.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class GatedContext(nn.Module):
    """GCNet-style global context added through a per-pixel (or per-channel) sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4, gate: Literal["pixel", "channel", "none"] = "pixel",
                 gate_bias: float = 0.0, zero_init: bool = True):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        width = max(channels // reduction, 4)
        self.gate = gate
        self.mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(nn.Conv2d(channels, width, 1), nn.LayerNorm([width, 1, 1]), nn.ReLU(),
                                       nn.Conv2d(width, channels, 1))
        if zero_init:
            nn.init.zeros_(self.transform[-1].weight)
            nn.init.zeros_(self.transform[-1].bias)
        if gate == "pixel":
            self.gate_conv = nn.Conv2d(2 * channels, 1, 1)
        elif gate == "channel":
            self.gate_conv = nn.Conv2d(channels, channels, 1)
        if gate != "none":
            nn.init.constant_(self.gate_conv.bias, gate_bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, C, 1, 1) context: x pooled with one softmax map over positions."""
        weights = torch.softmax(self.mask(x).flatten(1), dim=-1)  # B, N
        return torch.einsum("bcn,bn->bc", x.flatten(2), weights)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.transform(self.context(x))
        if self.gate == "none":
            return x + ctx
        if self.gate == "pixel":
            g = torch.sigmoid(self.gate_conv(torch.cat([x, ctx.expand_as(x)], dim=1)))  # B, 1, H, W
        else:
            g = torch.sigmoid(self.gate_conv(ctx))  # B, C, 1, 1
        return x + g * ctx
