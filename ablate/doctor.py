"""Health pre-flight: build each cell's attention block and check it on one batch before training.

``python -m ablate.doctor STUDY.yaml`` prints one line per cell and the findings under it; it
exits 0 when no block has a hard error, 1 when one has, 2 for a mistake in the study file or
the command line (one paragraph, no traceback).

The three functions the rest of ablate uses (their signatures stay this simple):

* ``check_study(study) -> list[Finding]``: every finding of every cell of a loaded study;
* ``summary_lines(findings) -> list[str]``: a few Markdown lines for the report;
* ``preflight(study, out) -> bool``: the runner's check before the first trial; prints a
  count, then each distinct warning and error once with its cells, to the file ``out`` and
  returns False only for a hard error (NaN/Inf at initialisation, a block that fails to run).

``check_block(block, channels, size, name=...)`` checks one block (what ``check_study`` calls for
each distinct block; tests call it with deliberately broken ones).

What is checked, on a batch of ``BATCH`` random feature maps at the study's width and feature-map
size (``relu`` of a standard normal: what a conv-BN-ReLU backbone hands the block at
initialisation; fixed seed), the block in train mode, one forward and one backward through a
fixed random linear function of the output:

1. parameters with no gradient (``None``) or an all-zero one (zero up to rounding: at most
   ``NEGLIGIBLE`` times the largest parameter gradient). These causes are told apart and are
   info: a listed by-design exception (:data:`BY_DESIGN`, e.g. EMANet's input conv); a
   parameter behind a zero-initialised gain (the block starts as the identity: Non-local's and
   GloRe's zero BN gamma, DANet's and CCNet's zero ``gamma``, STN's zero regression layer; found
   by setting each zero-valued weight, alone, to small random values and seeing whose gradient
   appears), or behind its own zero-initialised bias (a BN scale that a later normalisation
   cancels while the shift is 0); a bias whose gradient stays zero (a BatchNorm or a softmax
   after it removes it). Any other is a warning;
2. named inner widths (a block's ``widths`` dict, see ``ablate/attention/widths.py``) below 4;
3. every softmax the forward computes (``torch.softmax``, ``F.softmax``, ``Tensor.softmax`` and
   the map inside ``F.scaled_dot_product_attention``, recorded by :func:`recording_softmax`):
   near one-hot rows (mean largest weight > 0.9, or mean weight of a position on itself > 0.5
   for square maps with rows of at least 8) and near uniform rows (entropy normalised by the
   log of the row's positive entries > 0.99). A message says where the map was computed and
   names the preset's factors that set its sharpness;
4. NaN/Inf in the output, the input's gradient or a parameter's gradient: an error.

Blocks depend only on (mechanism, args, channels, feature size), so a study's cells share the
checks of their block (the zoo's 116 cells build 29 blocks). The checks run on the CPU, with one
torch thread (fastest for one small batch, and on a busy machine by far); on CUDA the Triton
kernels (criss-cross, local window, EM) compute their softmax inside the kernel, out of the
recorder's sight. The global RNG state is left as it was. (Inputs over ``ONE_THREAD_UP_TO``
elements, the real datasets' 512-channel maps, keep the caller's thread count.)
"""
from __future__ import annotations

import contextlib
import copy
import math
import re
import sys
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

BATCH = 2  # feature maps in the one batch (BatchNorm needs more than one value per channel)
SEED = 0
NARROW = 4  # a named inner width below this is a warning (ablate/attention/widths.py's floor)
ONE_HOT_MAX = 0.9  # mean largest weight of a row above this: near one-hot
ONE_HOT_SELF = 0.5  # mean weight of a position on itself above this: the map mostly copies the input
SELF_MIN_SIZE = 8  # rows over fewer positions are local by construction: their self-weight is not judged
UNIFORM_ENTROPY = 0.99  # normalised entropy above this: near uniform (a global average)
NEGLIGIBLE = 1e-6  # a gradient at most this times the largest parameter gradient is zero up to rounding
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
GATE_SIDE = 32  # the re-runs that look for zero-initialised gains use at most this corner of the batch
ONE_THREAD_UP_TO = 2 ** 20  # input elements up to which a block is checked on one torch thread


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


@dataclass(frozen=True)
class ByDesign:
    """A parameter that gets no gradient on purpose: ``pattern`` matches its name (re.search),
    ``when`` the resolved args under which it holds, ``reason`` why, ``factor`` what changes it."""

    pattern: str
    when: Callable[[dict], bool]
    reason: str
    factor: str


# Per preset, the parameters that receive no gradient by design (reported as info).
BY_DESIGN: dict[str, tuple[ByDesign, ...]] = {
    "emanet": (ByDesign(
        r"(^|\.)conv_in\.",
        lambda a: a.get("bases", "moving_average") == "moving_average" and a.get("shared_maps", True),
        "EMANet's EM iterations run without gradient and the reconstruction is built from their output alone "
        "(official code; the author confirms it in XiaLiPKU/EMANet issue #14), so its input conv is never "
        "trained; the bases follow a moving average instead",
        "`bases: learned` (backprop through the iterations) or `shared_maps: off` (a learned distribution map)"),),
}

# Which factors set how sharp a softmax is, and which set each named width, when a preset has them.
SHARPNESS_FACTORS = ("scale", "temperature", "init_std", "affinity", "normalization", "whiten")
WIDTH_FACTORS = {"qk": ("reduction", "qk_reduction", "key_reduction"), "value": ("reduction",),
                 "bottleneck": ("reduction", "min_width"), "inner": ("reduction",), "hidden": ("reduction",),
                 "state": ("state_reduction",), "nodes": ("K",)}
ZERO_INIT_FACTORS = ("zero_init",)


# ---------------------------------------------------------------------------------------
# recording every softmax of a forward pass


@dataclass
class MapStats:
    """Row statistics of one softmax map: ``rows`` rows of ``size`` entries."""

    shape: tuple
    size: int
    rows: int
    max_weight: float  # mean over rows of the largest weight
    entropy: float  # mean over rows of the entropy / log(positive entries)
    self_weight: float | None  # mean weight of a position on itself (square maps), else None
    where: str = ""  # the call site: file:line of the code that called the softmax


def map_stats(p: torch.Tensor, dim: int, self_axis: int | None = None, chunk: int = 4096) -> MapStats | None:
    """Statistics of softmax output ``p`` along ``dim``; None for rows of one entry. ``self_axis``:
    the axis of the query positions when the map is square over positions (its diagonal is the
    weight of each position on itself)."""
    p = p.detach().float()
    dim = dim % p.dim()
    n = p.shape[dim]
    if n < 2 or p.numel() == 0:
        return None
    square = self_axis is not None and p.shape[self_axis % p.dim()] == n
    rows = p.movedim(dim, -1)
    diag = torch.diagonal(p, dim1=self_axis % p.dim(), dim2=dim) if square else None
    rows = rows.reshape(-1, n)
    tot_max = tot_ent = 0.0
    for part in rows.split(chunk):
        tot_max += float(part.amax(-1).sum())
        tot_ent += float(_normalised_entropy(part).sum())
    count = rows.shape[0]
    self_weight = float(diag.float().mean()) if diag is not None else None
    return MapStats(tuple(p.shape), n, count, tot_max / count, tot_ent / count, self_weight)


def _normalised_entropy(rows: torch.Tensor) -> torch.Tensor:
    """Entropy of each row over log(its positive entries): 1 for uniform over the entries a row
    may use (masked entries are exactly 0), 0 for one-hot."""
    positive = (rows > 0).sum(-1)
    ent = -(rows * rows.clamp_min(1e-30).log()).sum(-1)
    return torch.where(positive > 1, ent / positive.clamp_min(2).float().log(), torch.zeros_like(ent))


def _sdpa_stats(q, k, attn_mask=None, is_causal=False, scale=None, chunk: int = 1024) -> MapStats | None:
    """The statistics of the softmax map inside ``scaled_dot_product_attention(q, k, ...)``,
    computed a block of queries at a time (the N x N map is never held whole)."""
    q, k = q.detach().float(), k.detach().float()
    nq, nk = q.shape[-2], k.shape[-2]
    if nk < 2:
        return None
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    tot_max = tot_ent = tot_self = 0.0
    count = 0
    for start in range(0, nq, chunk):
        s = (q[..., start:start + chunk, :] @ k.transpose(-1, -2)) * scale
        if attn_mask is not None:
            m = attn_mask[..., start:start + chunk, :] if attn_mask.shape[-2] == nq else attn_mask
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m
        if is_causal:
            rows = torch.arange(start, start + s.shape[-2], device=s.device)[:, None]
            s = s.masked_fill(torch.arange(nk, device=s.device)[None, :] > rows, float("-inf"))
        p = _ORIGINAL["torch"](s, dim=-1).reshape(-1, s.shape[-2], nk)
        tot_max += float(p.amax(-1).sum())
        tot_ent += float(_normalised_entropy(p.reshape(-1, nk)).sum())
        if nq == nk:
            tot_self += float(torch.diagonal(p, offset=start, dim1=-2, dim2=-1).sum())
        count += p.shape[0] * p.shape[1]
    return MapStats((*q.shape[:-1], nk), nk, count, tot_max / count, tot_ent / count,
                    tot_self / count if nq == nk else None)


_ORIGINAL: dict = {}


def _call_site() -> str:
    """``file.py:line`` of the nearest caller outside torch and this module (the block's code)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != __name__ and module.split(".")[0] != "torch":
            return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


@contextlib.contextmanager
def recording_softmax():
    """Record the statistics of every softmax computed inside the ``with``: yields a list that
    gets one :class:`MapStats` per map. Patches ``torch.softmax``, ``torch.nn.functional.softmax``,
    ``torch.Tensor.softmax`` and ``torch.nn.functional.scaled_dot_product_attention`` (whose map is
    recomputed for the statistics); a softmax called inside another is recorded once."""
    import torch.nn.functional as F

    records: list[MapStats] = []
    depth = [0]
    own_tensor_softmax = "softmax" in torch.Tensor.__dict__
    saved = {"torch": torch.softmax, "F": F.softmax, "Tensor": torch.Tensor.softmax,
             "sdpa": F.scaled_dot_product_attention}
    _ORIGINAL.update(saved)

    def dim_of(args, kwargs, pos):
        return kwargs.get("dim", args[pos] if len(args) > pos else None)

    def softmax_wrapper(fn, dim_pos):
        def wrapped(*args, **kwargs):
            depth[0] += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                depth[0] -= 1
            dim = dim_of(args, kwargs, dim_pos)
            if depth[0] == 0 and dim is not None and isinstance(out, torch.Tensor):
                depth[0] += 1
                try:
                    with torch.no_grad():
                        d = dim % out.dim()
                        stats = map_stats(out, d, self_axis=d - 1 if d >= 2 or (d == 1 and out.dim() == 2) else None)
                finally:
                    depth[0] -= 1
                if stats is not None:
                    records.append(replace(stats, where=_call_site()))
            return out
        return wrapped

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        depth[0] += 1
        try:
            out = saved["sdpa"](query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                scale=scale, **kwargs)
            if depth[0] == 1:
                with torch.no_grad():
                    stats = _sdpa_stats(query, key, attn_mask, is_causal, scale)
                if stats is not None:
                    records.append(replace(stats, where=_call_site()))
        finally:
            depth[0] -= 1
        return out

    torch.softmax = softmax_wrapper(saved["torch"], 1)
    F.softmax = softmax_wrapper(saved["F"], 1)
    torch.Tensor.softmax = softmax_wrapper(saved["Tensor"], 1)
    F.scaled_dot_product_attention = sdpa
    try:
        yield records
    finally:
        torch.softmax, F.softmax = saved["torch"], saved["F"]
        if own_tensor_softmax:
            torch.Tensor.softmax = saved["Tensor"]
        else:  # the method lives on torch._C.TensorBase: remove our wrapper, add nothing to Tensor
            del torch.Tensor.softmax
        F.scaled_dot_product_attention = saved["sdpa"]


# ---------------------------------------------------------------------------------------
# one block


@dataclass
class _Pass:
    """What one forward and backward gave: the output, the input's gradient, each parameter's
    gradient (None when it got none) and the softmax maps of the forward."""

    out: torch.Tensor
    input_grad: torch.Tensor | None
    grads: dict
    maps: list


def _one_pass(block: nn.Module, x: torch.Tensor, seed: int, record: bool = True) -> _Pass:
    """Forward ``x`` in train mode and backpropagate a fixed random linear function of the output;
    ``record``: keep the statistics of its softmax maps."""
    block.train()
    block.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        with (recording_softmax() if record else contextlib.nullcontext([])) as maps:
            y = block(x)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"the block returned {type(y).__name__}, not a tensor")
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1))
        loss = (y.float() * weights).mean()
        if loss.requires_grad:
            loss.backward()
    return _Pass(y.detach(), x.grad, {n: p.grad for n, p in block.named_parameters()}, maps)


def _names(params: list[str], limit: int = 6, params_too: bool = False) -> str:
    """``theta, phi, out.0`` for ``theta.weight, theta.bias, phi.weight, out.0.weight`` (the
    parameters' own names with ``params``)."""
    modules = list(dict.fromkeys(n if params_too else re.sub(r"\.(weight|bias)$", "", n) for n in params))
    shown = ", ".join(f"`{m}`" for m in modules[:limit])
    return shown + (f" and {len(modules) - limit} more" if len(modules) > limit else "")


def _factor_text(names, args: dict | None) -> str:
    """```scale` (on), `init_std` (0.01)`` for the factors of ``names`` the block's args have."""
    if not args:
        return ""
    said = [f"`{n}` ({_value(args[n])})" for n in names if n in args]
    return ", ".join(said)


def _value(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def _dead(grads: dict, largest: float) -> tuple[list, list, list]:
    """(no gradient, all-zero or negligible weight gradient, all-zero or negligible bias gradient);
    negligible: at most ``NEGLIGIBLE`` times the largest parameter gradient (rounding)."""
    none, zero, flat = [], [], []
    for n, g in grads.items():
        if g is None:
            none.append(n)
        elif torch.isfinite(g).all() and (not g.numel() or float(g.abs().max()) <= NEGLIGIBLE * largest):
            (flat if n.endswith("bias") else zero).append(n)
    return none, zero, flat


def _largest(grads: dict) -> float:
    tops = [float(g.abs().max()) for g in grads.values() if g is not None and g.numel() and torch.isfinite(g).all()]
    return max(tops, default=0.0)


def _zero_valued(block: nn.Module, grads: dict) -> list[str]:
    """Parameters that are all zero and get a gradient (so they move off zero at the first step)."""
    return [n for n, p in block.named_parameters() if p.is_floating_point() and p.numel() and not p.detach().any()
            and grads.get(n) is not None and bool(grads[n].any())]


def _perturbed(block: nn.Module, names: list, seed: int) -> nn.Module:
    """A copy of ``block`` with the parameters ``names`` set to small random values."""
    trial = copy.deepcopy(block)
    params = dict(trial.named_parameters())
    with torch.no_grad():
        for name in names:
            p = params[name]
            p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 2)))
    return trial


def _unblocked(block: nn.Module, x: torch.Tensor, dead: list, gates: list, seed: int) -> dict:
    """gate name -> the ``dead`` parameters that get a gradient once that zero-valued parameter
    is set to small random values (the block re-run with only that change)."""
    found = {}
    for gate in gates:
        try:
            res = _one_pass(_perturbed(block, [gate], seed), x, seed, record=False)
        except Exception:  # noqa: BLE001 - a gate that breaks the block explains nothing
            continue
        largest = _largest(res.grads)
        freed = [n for n in dead if res.grads.get(n) is not None
                 and float(res.grads[n].abs().max()) > NEGLIGIBLE * largest]
        if freed:
            found[gate] = freed
    return found


def _gradient_findings(block, x, res: _Pass, mechanism, args, seed) -> list[tuple[str, str, str]]:
    none, zero, flat = _dead(res.grads, _largest(res.grads))
    out = []
    dead = none + zero + flat
    for rule in BY_DESIGN.get(mechanism, ()):
        hit = [n for n in dead if re.search(rule.pattern, n)]
        if hit and rule.when(args or {}):
            dead = [n for n in dead if n not in hit]
            out.append(("info", "no-grad-by-design", f"no gradient reaches {_names(hit)}, by design: {rule.reason}. "
                                                     f"To train it: {rule.factor}."))
    if dead:
        explained, dead = _zero_init_findings(block, x, dead, res.grads, args, seed)
        out += explained
    unused, stuck, biases = ([n for n in dead if n in group] for group in (none, zero, flat))
    if unused:
        out.append(("warning", "no-grad", f"no gradient reaches {_names(unused)} (not used in the forward, or used "
                                          f"only without gradient): never trained. Check the factor that turns that "
                                          f"part on or off."))
    if stuck:
        out.append(("warning", "zero-grad", f"the gradient of {_names(stuck, params_too=True)} is all zero at "
                                            f"initialisation and no zero-initialised parameter explains it: it may "
                                            f"never train."))
    if biases:
        out.append(("info", "invariant", f"the gradient of the bias of {_names(biases)} is zero up to rounding "
                                         f"(a normalisation or a softmax after it removes a constant): harmless, "
                                         f"the output does not depend on it."))
    return out


def _zero_init_findings(block, x, dead: list, grads: dict, args, seed) -> tuple[list, list]:
    """(info findings, the ``dead`` parameters they do not explain). First the zero-valued
    weights (a BN gamma, a residual gain, a last layer: the block starts as the identity); then,
    with those open, a zero bias beside a weight still without gradient (a BN scale that a later
    normalisation cancels while the BN's shift is 0)."""
    out = []
    factor = _factor_text(ZERO_INIT_FACTORS, args)
    how = f"factor {factor} switches this" if factor else "no factor switches this (the paper's initialisation)"
    x = x[..., :GATE_SIDE, :GATE_SIDE]  # which parameters a gain blocks does not depend on the map's size
    gates = [n for n in _zero_valued(block, grads) if not n.endswith("bias")]
    freed_by = _unblocked(block, x, dead, gates, seed)
    for gate, names in freed_by.items():
        names = [n for n in names if n in dead]
        if names:
            dead = [n for n in dead if n not in names]
            out.append(("info", "zero-init", f"no gradient reaches {_names(names)} at initialisation because "
                                             f"`{gate}` starts at zero (the block starts as the identity); training "
                                             f"starts once it moves off zero, after the first step. By design; {how}."))
    siblings = [re.sub(r"weight$", "bias", n) for n in dead if n.endswith("weight")]
    if not siblings:
        return out, dead
    if freed_by:
        block = _perturbed(block, list(freed_by), seed)
        grads = _one_pass(block, x, seed, record=False).grads
    shifts = [n for n in _zero_valued(block, grads) if n in siblings]
    for gate, names in _unblocked(block, x, dead, shifts, seed).items():
        names = [n for n in names if n in dead]
        if names:
            dead = [n for n in dead if n not in names]
            out.append(("info", "zero-init", f"no gradient reaches {_names(names, params_too=True)} at "
                                             f"initialisation only because `{gate}` starts at zero (a symmetry of the "
                                             f"initialisation: a later normalisation cancels the scale while the "
                                             f"shift is 0); training starts once it moves, after the first step. "
                                             f"Harmless."))
    return out, dead


def _width_findings(block, channels, args) -> list[tuple[str, str, str]]:
    out = []
    for key, width in dict(getattr(block, "widths", {}) or {}).items():
        if isinstance(width, int) and width < NARROW:
            factor = _factor_text(WIDTH_FACTORS.get(key, ("reduction",)), args)
            change = f"raise it with {factor}" if factor else "no factor of this block sets it"
            out.append(("warning", "narrow", f"inner width `{key}` is {width} at C = {channels} (below {NARROW}): a "
                                             f"bottleneck this narrow carries almost nothing; {change}."))
    return out


def _map_findings(maps: list, args) -> list[tuple[str, str, str]]:
    if not maps:
        return []
    factor = _factor_text(SHARPNESS_FACTORS, args)
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


def _finite_findings(block, res: _Pass) -> list[tuple[str, str, str]]:
    out = []
    if not torch.isfinite(res.out).all():
        out.append(("error", "nonfinite", "the block's output has NaN/Inf on a random batch at initialisation."))
    if res.input_grad is not None and not torch.isfinite(res.input_grad).all():
        out.append(("error", "nonfinite", "the gradient reaching the block's input has NaN/Inf at initialisation."))
    bad = [n for n, g in res.grads.items() if g is not None and not torch.isfinite(g).all()]
    if bad:
        out.append(("error", "nonfinite", f"the gradients of {_names(bad)} have NaN/Inf at initialisation."))
    return out


def _hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_block(block: nn.Module, channels: int, size, name: str = "block", mechanism: str | None = None,
                args: dict | None = None, batch: int = BATCH, seed: int = SEED) -> list[Finding]:
    """Check one block on a (batch, channels, *size) batch; ``size`` an int or (H, W).
    ``mechanism`` (a preset name) selects its :data:`BY_DESIGN` exceptions and ``args`` (its
    resolved factors) the factors a message names. Findings carry ``title=name`` and no cell."""
    h, w = _hw(size)
    with torch.random.fork_rng(devices=[]), _threads(1 if batch * channels * h * w <= ONE_THREAD_UP_TO else 0):
        torch.manual_seed(seed)
        x = torch.randn(batch, channels, h, w).relu()
        try:
            res = _one_pass(block, x, seed)
        except Exception as e:  # noqa: BLE001 - any failure of the block is the finding
            return [Finding("", "error", "failed", f"the block fails on a ({batch}, {channels}, {h}, {w}) input: "
                                                   f"{type(e).__name__}: {_short(str(e))}", name, name)]
        found = _finite_findings(block, res)
        if not found:
            found = _gradient_findings(block, x, res, mechanism, args, seed)
        found += _width_findings(block, channels, args) + _map_findings(res.maps, args)
    return [Finding("", sev, code, msg, name, name) for sev, code, msg in found]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def _threads(n: int):
    """Run with ``n`` torch threads (0: the caller's setting), then restore the caller's setting.
    One thread is fastest for a small batch, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# a study


def block_input(study, cell) -> tuple[int, int, int]:
    """(channels, height, width) of the feature map the cell's block sees in training: the
    backbone's (or the head's) channels at the training input's size over the backbone's stride."""
    from dataclasses import asdict

    from .models.segmenter import feature_geometry, feature_side

    channels, stride = feature_geometry(asdict(cell.backbone), asdict(study.head))
    h, w = cell.data.crop_size if hasattr(cell.data, "crop_size") else (cell.data.size, cell.data.size)
    return channels, feature_side(h, stride), feature_side(w, stride)


def study_cells(study) -> list:
    """The cells to check: the grid and references; for a search study, its base cell (the
    study's mechanism and args, no factor sampled)."""
    if not study.search:
        return study.cells()
    try:
        return [study.search_cell({})]
    except Exception:  # noqa: BLE001 - a search whose base cannot be built has nothing to check
        return []


def check_study(study) -> list[Finding]:
    """The findings of every cell of ``study`` (a loaded :class:`ablate.study.Study`), in cell
    order; each distinct block (mechanism, args, channels, size) is built and checked once."""
    from .attention import get_preset

    seen: dict = {}
    out: list[Finding] = []
    with _threads(1):  # building; check_block picks its own
        for cell in study_cells(study):
            channels, h, w = block_input(study, cell)
            what = (cell.mechanism, cell.args, channels, h, w)
            if what not in seen:
                args = dict(cell.args)
                try:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(SEED)
                        block = get_preset(cell.mechanism).build(channels, **args)
                except Exception as e:  # noqa: BLE001 - a block that cannot be built is the finding
                    seen[what] = [Finding("", "error", "failed", f"the block cannot be built at C = {channels}: "
                                                                 f"{type(e).__name__}: {_short(str(e))}",
                                          block=cell.mechanism)]
                else:
                    seen[what] = check_block(block, channels, (h, w), name=cell.mechanism, mechanism=cell.mechanism,
                                             args=args)
            out += [replace(f, cell=cell.key, title=cell.title()) for f in seen[what]]
    return out


def _counts(findings: list[Finding]) -> str:
    said = [f"{n} {sev}{'s' if n != 1 else ''}" for sev in SEVERITIES
            if (n := sum(f.severity == sev for f in findings))]
    return ", ".join(said) or "ok"


def _grouped(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """Findings with the same severity, code and message once each, with the titles of their cells."""
    groups: dict = {}
    for f in findings:
        groups.setdefault((f.severity, f.code, f.message), (f, []))[1].append(f.title or f.cell)
    return sorted(groups.values(), key=lambda g: SEVERITIES.index(g[0].severity))


def _cells_text(titles: list[str], limit: int = 4) -> str:
    titles = list(dict.fromkeys(titles))
    shown = "; ".join(titles[:limit])
    return shown + (f"; and {len(titles) - limit} more" if len(titles) > limit else "")


def summary_lines(findings: list[Finding]) -> list[str]:
    """A few Markdown lines for the report: the counts, one line per kind of warning or error
    with the blocks (or, when few, the cells) it concerns, and one line counting the by-design
    notes. The messages, with the factor to change, are the doctor's own output."""
    if not findings:
        return ["Health pre-flight (`python -m ablate.doctor`): no findings."]
    lines = [f"Health pre-flight (`python -m ablate.doctor STUDY`, for the details and the factor to change): "
             f"{_counts(findings)}."]
    kinds: dict = {}
    for f in findings:
        kinds.setdefault((SEVERITIES.index(f.severity), f.code), []).append(f)
    notes = []
    for (level, code), found in sorted(kinds.items()):
        cells = list(dict.fromkeys(f.title or f.cell for f in found))
        if SEVERITIES[level] == "info":
            notes.append(f"{code} ({len(cells)} cells)")
            continue
        if len(cells) <= 4 and sum(map(len, cells)) <= 160:
            where = "; ".join(cells)
        else:
            blocks = {}
            for f in found:
                blocks.setdefault(f.block or "?", set()).add(f.title or f.cell)
            where = ", ".join(f"`{b}` ({len(c)})" for b, c in blocks.items()) + f": {len(cells)} cells"
        lines.append(f"- **{SEVERITIES[level]}** {CODES.get(code, code)}: {where}.")
    if notes:
        lines.append(f"- by design (info): {', '.join(notes)}.")
    return lines


def print_findings(cells: list, findings: list[Finding], out=sys.stdout) -> None:
    """One line per cell (its title, mechanism and counts), its findings indented under it."""
    by_cell: dict = {}
    for f in findings:
        by_cell.setdefault(f.cell, []).append(f)
    for cell in cells:
        mine = by_cell.get(cell.key, [])
        print(f"{cell.title()} [{cell.mechanism}]: {_counts(mine)}", file=out)
        for f in sorted(mine, key=lambda f: SEVERITIES.index(f.severity)):
            print(f"    {f.line()}", file=out)


def preflight(study, out=sys.stdout) -> bool:
    """The runner's check before the first trial: prints a count, then each distinct warning or
    error once with the cells it concerns, to ``out``; False only when a block has a hard error
    (NaN/Inf at initialisation, or a block that cannot be built or run)."""
    findings = check_study(study)
    cells = study_cells(study)
    print(f"doctor: {len(cells)} cells checked: {_counts(findings)} "
          f"(details: python -m ablate.doctor {study.path})", file=out)
    for f, titles in _grouped(findings):
        if f.severity != "info":
            print(f"  {f.severity} ({_cells_text(titles)}): {f.message}", file=out)
    return not any(f.severity == "error" for f in findings)


USAGE = """usage: python -m ablate.doctor STUDY.yaml

Builds each cell's attention block at the study's width and feature-map size, runs one random
batch forward and backward, and reports parameters without gradient, bottleneck widths below 4,
near one-hot or near uniform softmax maps at initialisation, and NaN/Inf. Exit status: 0 without
errors (warnings allowed), 1 with an error, 2 for a mistake in the study file or the command line."""


def main(argv=None) -> int:
    from .errors import StudyError, exit_with
    from .study import load_study

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        if len(argv) != 1:
            raise StudyError("command line", "", f"python -m ablate.doctor takes one study file, got "
                                                 f"{len(argv)} arguments; usage: python -m ablate.doctor STUDY.yaml.")
        study = load_study(argv[0], check_files=False)
    except StudyError as e:
        exit_with(e)
    findings = check_study(study)
    cells = study_cells(study)
    print_findings(cells, findings)
    print(f"{len(cells)} cells, {len({(c.mechanism, c.args) for c in cells})} distinct blocks: {_counts(findings)}.")
    return 1 if any(f.severity == "error" for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
