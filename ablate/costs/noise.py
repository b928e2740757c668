"""When a measured latency is too spread to be read precisely (:func:`is_noisy`): torch-free, so a
report that prints stored latencies does not import torch (:mod:`.measure` measures them)."""
from __future__ import annotations

NOISY = 0.2  # a latency whose IQR exceeds this share of its median is reported as noisy, with its spread


def is_noisy(median_ms: float, iqr_ms: float, threshold: float = NOISY) -> bool:
    """True when the spread is large next to the value: IQR / median > ``threshold``."""
    return not median_ms > 0 or iqr_ms / median_ms > threshold
