"""The health pre-flight: each cell's block built and run one batch forward and backward
(:mod:`.check`), the softmax recorder (:mod:`.softmax`), the gradient pass (:mod:`.gradients`),
findings and their thresholds (:mod:`.findings`) and their text (:mod:`.text`).

The names below are imported on first use (PEP 562): a report whose doctor runs in a piece of its
own (:func:`ablate.report.command.write_report`) reads the findings' text without importing torch."""
from __future__ import annotations

from ..config.lazy import lazy_names

__all__ = ["check_block", "check_study", "main", "preflight"]
__getattr__ = lazy_names(__name__, dict.fromkeys(__all__, ".check"))
