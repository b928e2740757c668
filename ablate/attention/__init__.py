"""Attention mechanisms as presets of one vocabulary; ``MECHANISMS`` is the registry."""
from __future__ import annotations

from .lowrank import LowRankBlock
from .none import NoAttention
from .pairwise import NonLocalBlock
from .patterns import PATTERNS
from .vocab import Factor, Preset

_NL = "Non-local Neural Networks (Wang et al., CVPR 2018)"
_BOOL = dict(kind="bool")


def _nonlocal_factors(affinity: str, normalization: str, qk: bool, scale: bool) -> tuple[Factor, ...]:
    """The Non-local factors; defaults are the official code's (see pairwise.py) for each form."""
    return (
        Factor("reduction", 2, "int", minimum=1, help="inner width C/reduction (paper: 2)"),
        Factor("theta", qk, **_BOOL, help="query transform (identity when off)"),
        Factor("phi", qk, **_BOOL, help="key transform (identity when off)"),
        Factor("sigma", True, **_BOOL, help="value transform g (identity when off)"),
        Factor("shared_qk", False, **_BOOL, help="phi is theta: symmetric affinity for the dot forms"),
        Factor("affinity", affinity, "choice", choices=("dot", "concat")),
        Factor("normalization", normalization, "choice", choices=("softmax", "mean")),
        Factor("scale", scale, **_BOOL,
               help="divide dot products by sqrt(d) (official: in the embedded Gaussian form only)"),
        Factor("zero_init", True, **_BOOL, help="zero BN gamma on the output transform (official)"),
        Factor("init_std", 0.01, "float", minimum=0.0,
               help="convs drawn from N(0, init_std^2), zero biases (official: 0.01); 0: PyTorch's default init"),
        Factor("pre_conv", False, **_BOOL, help="one 1x1 conv before the block (with transforms dropped)"),
        Factor("pattern", "full", "choice", choices=PATTERNS,
               help="which pixels meet (sparse patterns need the dot affinity with softmax)"),
        Factor("R", 1, "int", minimum=1, added=True, help="passes of the block with shared weights (CCNet's recurrence)"),
        Factor("window", 7, "int", minimum=1, added=True, help="local_window pattern: odd window side"),
        Factor("down_factor", 4, "int", minimum=2, added=True, help="interlaced pattern: lattice stride / block side"),
        Factor("samples", 36, "int", minimum=1, added=True, help="sampled pattern: pixels met, the centre included"),
        Factor("radius", 12, "int", minimum=1, added=True, help="sampled pattern: offsets drawn within this radius"),
    )


MECHANISMS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("none", "none", NoAttention, (), "-", "no attention block (control)"),
        Preset("nonlocal", "pairwise", NonLocalBlock, _nonlocal_factors("dot", "softmax", True, True), _NL,
               "embedded Gaussian: softmax(theta_i . phi_j / sqrt(d)) over all pixels"),
        Preset("nonlocal_gaussian", "pairwise", NonLocalBlock, _nonlocal_factors("dot", "softmax", False, False), _NL,
               "Gaussian: softmax(x_i . x_j), theta and phi are the identity"),
        Preset("nonlocal_dot", "pairwise", NonLocalBlock, _nonlocal_factors("dot", "mean", True, False), _NL,
               "dot product: (theta_i . phi_j) / N"),
        Preset("nonlocal_concat", "pairwise", NonLocalBlock, _nonlocal_factors("concat", "mean", True, False), _NL,
               "concatenation: ReLU(w . [theta_i; phi_j]) / N"),
        Preset("glore", "lowrank", LowRankBlock, (
            Factor("K", 16, "int", minimum=1, help="number of graph nodes"),
            Factor("state_reduction", 2, "int", minimum=1, help="state channels C/state_reduction"),
            Factor("gcn", True, **_BOOL, help="graph convolution between projection and reprojection"),
            Factor("gcn_relu", "between", "choice", choices=("between", "after"),
                   help="GCN's ReLU: W_s relu(V + A_g V) (official) or relu(W_s (V + A_g V))"),
            Factor("normalize", False, **_BOOL, help="divide the node features by the pixel count (official default: off)"),
            Factor("zero_init", True, **_BOOL, help="zero BN gamma on the output (the official 'blocker')"),
            Factor("mapping", "learned", "choice", choices=("learned", "em", "pooled"),
                   help="pixels to nodes: GloRe's learned projection, EM (T=3), or pooled regions (K a square)"),
        ), "Graph-Based Global Reasoning Networks (Chen et al., CVPR 2019)",
            "project to K nodes, GCN over nodes, reproject with the same projection"),
    )
}


# the rest of the survey's zoo, one module per mechanism (see zoo_pairwise.py / zoo_lowrank.py)
from .zoo_lowrank import PRESETS as _LOWRANK_AND_GATING  # noqa: E402
from .zoo_pairwise import PRESETS as _PAIRWISE  # noqa: E402

for _p in _PAIRWISE + _LOWRANK_AND_GATING:
    if _p.name in MECHANISMS:
        raise RuntimeError(f"duplicate mechanism preset {_p.name!r}")
    MECHANISMS[_p.name] = _p


def get_preset(name: str) -> Preset:
    try:
        return MECHANISMS[name]
    except KeyError:
        raise KeyError(f"unknown mechanism {name!r}; valid: {', '.join(sorted(MECHANISMS))}") from None


__all__ = ["MECHANISMS", "Factor", "Preset", "get_preset", "NoAttention", "NonLocalBlock", "LowRankBlock"]
