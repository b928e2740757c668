"""What a block costs: parameters, FLOPs, latency (median and spread) and peak memory of one
mechanism's block at one input (:mod:`.measure`, cached by content), each study cell's block and the
``ablate costs`` table (:mod:`.blocks`), and how the costs grow with the feature map
(:mod:`.scaling`)."""
from .blocks import Cost, cell_costs, main, measure, measure_preset

__all__ = ["Cost", "cell_costs", "main", "measure", "measure_preset"]
