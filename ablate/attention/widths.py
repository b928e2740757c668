"""One rule for every reduced width (bottleneck, inner, state) of the blocks that take a ratio.

Papers give a ratio r for a backbone with hundreds or thousands of channels (SE, CBAM and GCNet
r = 16 at C = 256 to 2048). This harness's small backbone has C = 32, where C // 16 = 2: a
2-unit bottleneck, and for GCNet a LayerNorm over 2 channels, whose output is +-1 whatever its
input, so almost no gradient reaches the attention pooling behind it. So every ratio-reduced
width here is ``max(C // r, min(4, C))``: the paper's width wherever C // r >= 4 (every
real-dataset setting), at least 4 otherwise, never more than C. SE and CBAM clamped at 4
already; GCNet (which kept 2), DNL, Non-local, GloRe, SGR and LatentGNN use the same rule.
mmseg's GCHead uses r = 4 instead, which at C = 32 gives 8. ``python -m ablate list`` prints
each block's effective widths.
"""
from __future__ import annotations

FLOOR = 4


def reduced(channels: int, reduction: int, floor: int = FLOOR) -> int:
    """The width ``channels // reduction``, but at least ``min(floor, channels)``."""
    return max(channels // reduction, min(floor, channels))
