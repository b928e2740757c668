"""The doctor's one forward and backward through a block, and what its gradients say: NaN/Inf,
parameters that get no gradient or an all-zero one, and why (a listed by-design exception, a
zero-initialised gain found by re-running the block with each zero weight set to small random
values, a bias a later normalisation removes). Item 1 and 4 of :mod:`ablate.doctor`'s docstring;
re-exported there.
"""
from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .findings import ZERO_INIT_FACTORS, factor_text, param_names
from .softmax import recording_softmax

NEGLIGIBLE = 1e-6  # a gradient at most this times the largest parameter gradient is zero up to rounding
GATE_SIDE = 32  # the re-runs that look for zero-initialised gains use at most this corner of the batch


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


@dataclass
class Pass:
    """What one forward and backward gave: the output, the input's gradient, each parameter's
    gradient (None when it got none) and the softmax maps of the forward."""

    out: torch.Tensor
    input_grad: torch.Tensor | None
    grads: dict
    maps: list


def one_pass(block: nn.Module, x: torch.Tensor, seed: int, record: bool = True) -> Pass:
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
    return Pass(y.detach(), x.grad, {n: p.grad for n, p in block.named_parameters()}, maps)


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
            res = one_pass(_perturbed(block, [gate], seed), x, seed, record=False)
        except Exception:  # noqa: BLE001 - a gate that breaks the block explains nothing
            continue
        largest = _largest(res.grads)
        freed = [n for n in dead if res.grads.get(n) is not None
                 and float(res.grads[n].abs().max()) > NEGLIGIBLE * largest]
        if freed:
            found[gate] = freed
    return found


def gradient_findings(block, x, res: Pass, mechanism, args, seed) -> list[tuple[str, str, str]]:
    none, zero, flat = _dead(res.grads, _largest(res.grads))
    out = []
    dead = none + zero + flat
    for rule in BY_DESIGN.get(mechanism, ()):
        hit = [n for n in dead if re.search(rule.pattern, n)]
        if hit and rule.when(args or {}):
            dead = [n for n in dead if n not in hit]
            out.append(("info", "no-grad-by-design", f"no gradient reaches {param_names(hit)}, by design: "
                                                     f"{rule.reason}. To train it: {rule.factor}."))
    if dead:
        explained, dead = _zero_init_findings(block, x, dead, res.grads, args, seed)
        out += explained
    unused, stuck, biases = ([n for n in dead if n in group] for group in (none, zero, flat))
    if unused:
        out.append(("warning", "no-grad", f"no gradient reaches {param_names(unused)} (not used in the forward, or "
                                          f"used only without gradient): never trained. Check the factor that turns "
                                          f"that part on or off."))
    if stuck:
        out.append(("warning", "zero-grad", f"the gradient of {param_names(stuck, params_too=True)} is all zero at "
                                            f"initialisation and no zero-initialised parameter explains it: it may "
                                            f"never train."))
    if biases:
        out.append(("info", "invariant", f"the gradient of the bias of {param_names(biases)} is zero up to rounding "
                                         f"(a normalisation or a softmax after it removes a constant): harmless, "
                                         f"the output does not depend on it."))
    return out


def _zero_init_findings(block, x, dead: list, grads: dict, args, seed) -> tuple[list, list]:
    """(info findings, the ``dead`` parameters they do not explain). First the zero-valued
    weights (a BN gamma, a residual gain, a last layer: the block starts as the identity); then,
    with those open, a zero bias beside a weight still without gradient (a BN scale that a later
    normalisation cancels while the BN's shift is 0)."""
    out = []
    factor = factor_text(ZERO_INIT_FACTORS, args)
    how = f"factor {factor} switches this" if factor else "no factor switches this (the paper's initialisation)"
    x = x[..., :GATE_SIDE, :GATE_SIDE]  # which parameters a gain blocks does not depend on the map's size
    gates = [n for n in _zero_valued(block, grads) if not n.endswith("bias")]
    freed_by = _unblocked(block, x, dead, gates, seed)
    for gate, names in freed_by.items():
        names = [n for n in names if n in dead]
        if names:
            dead = [n for n in dead if n not in names]
            out.append(("info", "zero-init", f"no gradient reaches {param_names(names)} at initialisation because "
                                             f"`{gate}` starts at zero (the block starts as the identity); training "
                                             f"starts once it moves off zero, after the first step. By design; {how}."))
    siblings = [re.sub(r"weight$", "bias", n) for n in dead if n.endswith("weight")]
    if not siblings:
        return out, dead
    if freed_by:
        block = _perturbed(block, list(freed_by), seed)
        grads = one_pass(block, x, seed, record=False).grads
    shifts = [n for n in _zero_valued(block, grads) if n in siblings]
    for gate, names in _unblocked(block, x, dead, shifts, seed).items():
        names = [n for n in names if n in dead]
        if names:
            dead = [n for n in dead if n not in names]
            out.append(("info", "zero-init", f"no gradient reaches {param_names(names, params_too=True)} at "
                                             f"initialisation only because `{gate}` starts at zero (a symmetry of the "
                                             f"initialisation: a later normalisation cancels the scale while the "
                                             f"shift is 0); training starts once it moves, after the first step. "
                                             f"Harmless."))
    return out, dead


def finite_findings(block, res: Pass) -> list[tuple[str, str, str]]:
    out = []
    if not torch.isfinite(res.out).all():
        out.append(("error", "nonfinite", "the block's output has NaN/Inf on a random batch at initialisation."))
    if res.input_grad is not None and not torch.isfinite(res.input_grad).all():
        out.append(("error", "nonfinite", "the gradient reaching the block's input has NaN/Inf at initialisation."))
    bad = [n for n, g in res.grads.items() if g is not None and not torch.isfinite(g).all()]
    if bad:
        out.append(("error", "nonfinite", f"the gradients of {param_names(bad)} have NaN/Inf at initialisation."))
    return out
