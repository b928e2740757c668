"""The combinations of factor values a block cannot build, checked without importing torch.

A block's ``check_args(args)`` refuses what its factors may each take but not together (a sparse
``pattern`` needs the dot affinity with softmax ...). The blocks with such rules (Non-local, GloRe)
take their ``check_args`` from here, so that loading a study checks a cell's values through the
preset table's :class:`~ablate.config.vocab.BlockRef` without importing the block's module, which
imports torch. ``args`` holds every argument a check reads (a preset's resolved arguments, or the
block's ``__init__``'s); a refusal is a :class:`~ablate.config.vocab.FactorConflict` naming the
factor to blame.
"""
from __future__ import annotations

from ..config.vocab import FactorConflict

# the Non-local block's ``pattern``: which pixels meet (one function each in .patterns)
PATTERNS = ("full", "criss_cross", "interlaced", "local_window", "sampled")


def non_local(args: dict) -> None:
    """The Non-local block's (:class:`~ablate.attention.non_local.NonLocalBlock`): the sparse patterns' needs and ranges."""
    pattern = args["pattern"]
    if pattern not in PATTERNS:
        raise FactorConflict("pattern", f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    if pattern != "full" and (args["affinity"] != "dot" or args["normalization"] != "softmax"):
        raise FactorConflict("pattern", f"pattern {pattern!r} chooses the pixels a softmax of dot products runs over: it needs "
                         f"affinity 'dot' and normalization 'softmax' (got {args['affinity']!r}, "
                         f"{args['normalization']!r}); only pattern 'full' takes the other forms")
    if args.get("dropped_qk", "identity") not in ("identity", "matched"):
        raise FactorConflict("dropped_qk", f"dropped_qk must be 'identity' or 'matched', got {args['dropped_qk']!r}")
    if args.get("dropped_qk", "identity") == "matched":
        phi_on = args["theta"] if args["shared_qk"] else args["phi"]
        if args["theta"] or phi_on or args["reduction"] != 2:
            raise FactorConflict("dropped_qk", "dropped_qk: matched stands in for theta and phi dropped together "
                                 "(their C^2 + C parameters as one C x C conv), so it needs theta: off, phi: off "
                                 f"and reduction: 2 (got theta {args['theta']}, phi {phi_on}, reduction "
                                 f"{args['reduction']}); a single drop keeps the count at reduction 2")
    if args["init_std"] < 0:
        raise FactorConflict("init_std", f"init_std must be >= 0 (0: PyTorch's default init), got {args['init_std']}")
    if args["R"] < 1:
        raise FactorConflict("R", f"R (passes of the block) must be >= 1, got {args['R']}")
    if pattern == "local_window" and (args["window"] < 1 or args["window"] % 2 == 0):
        raise FactorConflict("window", f"window must be odd and >= 1, got {args['window']}")
    if pattern == "interlaced" and args["down_factor"] < 2:
        raise FactorConflict("down_factor", f"down_factor must be >= 2, got {args['down_factor']}")
    if pattern == "sampled":
        side = 2 * args["radius"] + 1
        if not 1 <= args["samples"] <= side * side:
            raise FactorConflict("samples", f"samples must be between 1 and (2 radius + 1)^2 = {side * side}, "
                             f"got {args['samples']}")


def glore(args: dict) -> None:
    """GloRe's (:class:`~ablate.attention.glore.LowRankBlock`): the GCN's mixing and the normalisation."""
    if not args.get("gcn", True) and args.get("gcn_mixing", "nodes") != "nodes":
        raise FactorConflict("gcn_mixing", "gcn_mixing chooses what the GCN step mixes; with gcn: off there is "
                             "no GCN step, so leave gcn_mixing at nodes")
    if args["normalize"] and args["mapping"] != "learned":
        raise FactorConflict("normalize", "normalize divides GloRe's learned projection by the pixel count; "
                             f"mapping {args['mapping']!r} already averages, so use normalize: off with it")
