"""One rule for every reduced width (bottleneck, inner, state) of the blocks that take a ratio.

Papers give a ratio r for a backbone with hundreds or thousands of channels (SE, CBAM and GCNet
r = 16 at C = 256 to 2048). This harness's small backbone has C = 32, where C // 16 = 2: a
2-unit bottleneck. So a ratio-reduced width here is ``max(C // r, min(4, C))``: the paper's
width wherever C // r >= 4 (every real-dataset setting), at least 4 otherwise, never more
than C. SE and CBAM clamped at 4 already; Non-local's inner width and GloRe's state width use
this rule.
"""
from __future__ import annotations

FLOOR = 4


def reduced(channels: int, reduction: int) -> int:
    """The width ``channels // reduction``, but at least ``min(FLOOR, channels)``."""
    return max(channels // reduction, min(FLOOR, channels))
