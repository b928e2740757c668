"""No attention: the control every ablation is measured against."""
from __future__ import annotations

from torch import nn


class NoAttention(nn.Identity):
    """Identity block; keeps the channel-first constructor of every mechanism."""

    FACTORS = ()

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
