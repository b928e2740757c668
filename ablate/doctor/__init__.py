"""The health pre-flight: each cell's block built and run one batch forward and backward
(:mod:`.check`), the softmax recorder (:mod:`.softmax`), the gradient pass (:mod:`.gradients`),
findings and their thresholds (:mod:`.findings`) and their text (:mod:`.text`)."""
from .check import check_block, check_study, main, preflight

__all__ = ["check_block", "check_study", "main", "preflight"]
