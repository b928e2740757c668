"""Layers several mechanisms share; each mechanism's own code is in the module named after it."""
from __future__ import annotations

import torch
from torch import nn

from .widths import reduced


class QueryKeyValue(nn.Module):
    """The projections DANet's position module and CCNet share: query and key 1x1 convs at
    C / ``qk_reduction`` channels (at least 4, :mod:`.widths`; the papers' C/8 at C >= 32), a
    value 1x1 conv at C, and a zero-initialised residual gain ``gamma`` (so the module starts as
    the identity). Subclasses add the pattern in ``forward``."""

    def __init__(self, channels: int, qk_reduction: int = 8):
        super().__init__()
        d = reduced(channels, qk_reduction)
        self.query = nn.Conv2d(channels, d, 1)
        self.key = nn.Conv2d(channels, d, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
