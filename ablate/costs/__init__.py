"""What a block costs: parameters, FLOPs, latency (median and spread) and peak memory of one
mechanism's block at one input (:mod:`.measure`, cached by content), each study cell's block and the
``ablate costs`` table (:mod:`.blocks`), and how the costs grow with the feature map
(:mod:`.scaling`); when a latency is too spread to read (:mod:`.noise`, torch-free).

The names below are imported on first use (PEP 562): a report that prints stored costs imports
:mod:`.noise` alone, not torch."""
from __future__ import annotations

import importlib

__all__ = ["Cost", "cell_costs", "main", "measure", "measure_preset"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".blocks", __name__), name)
    globals()[name] = value
    return value
