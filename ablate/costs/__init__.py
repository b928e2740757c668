"""What a block costs: parameters, FLOPs, latency (median and spread) and peak memory of one
mechanism's block at one input (:mod:`.measure`, cached by content), each study cell's block and the
``ablate costs`` table (:mod:`.blocks`), and how the costs grow with the feature map
(:mod:`.scaling`); when a latency is too spread to read (:mod:`.noise`, torch-free).

The names below are imported on first use (PEP 562): a report that prints stored costs imports
:mod:`.noise` alone, not torch."""
from __future__ import annotations

from ..config.lazy import lazy_names

__all__ = ["Cost", "cell_costs", "main", "measure", "measure_preset"]
__getattr__ = lazy_names(__name__, dict.fromkeys(__all__, ".blocks"))
