"""What the doctor reports and how it says it: :class:`Finding`, the thresholds and codes, the
factors a message names, and the findings read from a block's widths and softmax maps.

The thresholds and what each code means are :mod:`ablate.doctor`'s docstring's (items 2 and 3);
the gradient findings are :mod:`ablate.doctor.gradients`'. Re-exported by :mod:`ablate.doctor`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NARROW = 4  # a named inner width below this is a warning (ablate/attention/widths.py's floor)
ONE_HOT_MAX = 0.9  # mean largest weight of a row above this: near one-hot
ONE_HOT_SELF = 0.5  # mean weight of a position on itself above this: the map mostly copies the input
SELF_MIN_SIZE = 8  # rows over fewer positions are local by construction: their self-weight is not judged
UNIFORM_ENTROPY = 0.99  # normalised entropy above this: near uniform (a global average)
SEVERITIES = ("error", "warning", "info")
CODES = {  # code -> what it means, in the report's words
    "failed": "the block cannot be built or run",
    "nonfinite": "NaN/Inf in the output or a gradient at initialisation",
    "no-grad": "parameters that get no gradient",
    "zero-grad": "parameters whose gradient is all zero, unexplained",
    "narrow": f"inner widths below {NARROW}",
    "one-hot": f"softmax rows near one-hot at initialisation (mean largest weight > {ONE_HOT_MAX}, or weight on "
               f"itself > {ONE_HOT_SELF})",
    "uniform": f"softmax rows near uniform at initialisation (normalised entropy > {UNIFORM_ENTROPY})",
    "no-grad-by-design": "parameters without gradient by design (EMANet's input conv)",
    "zero-init": "parameters without gradient at initialisation behind a zero-initialised gain",
    "invariant": "biases a later normalisation or softmax removes",
}


@dataclass(frozen=True)
class Finding:
    """One finding: ``cell`` the cell key ("" for a lone block), ``severity`` error / warning /
    info, ``code`` a short tag (:data:`CODES`), ``message`` what was seen and which factor to
    change, ``title`` the cell in words, ``block`` the block's name (its mechanism)."""

    cell: str
    severity: str
    code: str
    message: str
    title: str = ""
    block: str = ""

    def line(self) -> str:
        return f"{self.severity}: {self.message} [{self.code}]"


# Which factors set how sharp a softmax is, and which set each named width, when a preset has them.
SHARPNESS_FACTORS = ("scale", "temperature", "init_std", "affinity", "normalization", "whiten")
WIDTH_FACTORS = {"qk": ("reduction", "qk_reduction", "key_reduction"), "value": ("reduction",),
                 "bottleneck": ("reduction", "min_width"), "inner": ("reduction",), "hidden": ("reduction",),
                 "state": ("state_reduction",), "nodes": ("K",)}
ZERO_INIT_FACTORS = ("zero_init",)


def param_names(params: list[str], limit: int = 6, params_too: bool = False) -> str:
    """``theta, phi, out.0`` for ``theta.weight, theta.bias, phi.weight, out.0.weight`` (the
    parameters' own names with ``params``)."""
    modules = list(dict.fromkeys(n if params_too else re.sub(r"\.(weight|bias)$", "", n) for n in params))
    shown = ", ".join(f"`{m}`" for m in modules[:limit])
    return shown + (f" and {len(modules) - limit} more" if len(modules) > limit else "")


def factor_text(names, args: dict | None) -> str:
    """```scale` (on), `init_std` (0.01)`` for the factors of ``names`` the block's args have."""
    if not args:
        return ""
    said = [f"`{n}` ({_value(args[n])})" for n in names if n in args]
    return ", ".join(said)


def _value(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def width_findings(block, channels, args) -> list[tuple[str, str, str]]:
    out = []
    for key, width in dict(getattr(block, "widths", {}) or {}).items():
        if isinstance(width, int) and width < NARROW:
            factor = factor_text(WIDTH_FACTORS.get(key, ("reduction",)), args)
            change = f"raise it with {factor}" if factor else "no factor of this block sets it"
            out.append(("warning", "narrow", f"inner width `{key}` is {width} at C = {channels} (below {NARROW}): a "
                                             f"bottleneck this narrow carries almost nothing; {change}."))
    return out


def map_findings(maps: list, args) -> list[tuple[str, str, str]]:
    if not maps:
        return []
    factor = factor_text(SHARPNESS_FACTORS, args)
    knobs = (f"the factors that set it: {factor}" if factor
             else "no factor of this block sets it (its initialisation and the input's scale do)")
    sharp = [m for m in maps if m.max_weight > ONE_HOT_MAX
             or (m.size >= SELF_MIN_SIZE and (m.self_weight or 0.0) > ONE_HOT_SELF)]
    flat = [m for m in maps if m.entropy > UNIFORM_ENTROPY and m not in sharp]
    out = []
    if sharp:
        worst = max(sharp, key=lambda m: max(m.max_weight, m.self_weight or 0.0))
        self_said = f", weight on itself {worst.self_weight:.2f}" if worst.self_weight is not None else ""
        out.append(("warning", "one-hot", f"{len(sharp)} of {len(maps)} softmax map(s) are near one-hot at "
                                          f"initialisation ({_sites(sharp)}; rows of {worst.size}: mean largest weight "
                                          f"{worst.max_weight:.2f}{self_said}): the softmax is saturated and passes "
                                          f"little gradient; {knobs}."))
    if flat:
        worst = max(flat, key=lambda m: m.entropy)
        # a note, not a warning: dot-product softmax maps start near uniform at their official
        # initialisation (Non-local, DANet, CCNet, DNL, EMANet's E-step at C = 32 all do), so a warning
        # here would fire on faithful presets and say nothing a user can act on
        out.append(("info", "uniform", f"{len(flat)} of {len(maps)} softmax map(s) are near uniform at "
                                       f"initialisation ({_sites(flat)}; rows of {worst.size}: normalised entropy "
                                       f"{worst.entropy:.4f}): each row starts as a plain average (a global "
                                       f"pooling) and must learn to select, as with the official initialisation "
                                       f"of dot-product attention; {knobs}."))
    return out


def _sites(maps: list) -> str:
    """``at sgr.py:89`` or ``at ema.py:110 (x2), a2net.py:99``: where the maps were computed."""
    counts: dict = {}
    for m in maps:
        counts[m.where or "?"] = counts.get(m.where or "?", 0) + 1
    return "at " + ", ".join(f"{w}{f' (x{n})' if n > 1 else ''}" for w, n in counts.items())
