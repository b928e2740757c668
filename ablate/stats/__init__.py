"""Small-sample statistics for seeds: intervals, tests, corrections, verdicts, budget and images.

Everything here is a pure function of numbers (numpy and scipy only); the report decides what
to compare and how to print it. Values and margins share one unit (the report stores mIoU as a
fraction, so a margin of 1 point is 0.01 here).

How the multiple-comparison correction enters the verdicts: the two-sided p-values of the
difference tests (``Diff.p``) of all comparisons of a study are adjusted together with
:func:`adjust` (Holm by default), and the TOST p-values (``Tost.p``) are adjusted together,
separately from them. :func:`verdict` reads only those adjusted p-values against the family
level alpha. The interval printed beside a verdict is at the Bonferroni level
:func:`interval_level` (1 - alpha/m), which is conservative for Holm: a Bonferroni interval that
excludes 0 implies a Holm-adjusted p below alpha, but Holm can call a difference while the
printed interval still touches 0. :func:`methods_table` lists the formulas and references.

The parts, each in its own module and all importable from here: :mod:`ablate.stats.ttests`
(intervals, differences, TOST, corrections), :mod:`ablate.stats.verdicts` (verdicts, power,
seeds that would decide), :mod:`ablate.stats.sequential` (looks and next seeds of sequential
seeding); this module holds the budget guard, the bootstrap over images and the methods table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

from .sequential import Look, look_alpha, look_counts, next_seeds, sequential_look, verdict_alpha
from .ttests import (CORRECTIONS, Diff, Summary, Tost, adjust, compare, interval_level, paired_diff, summarize,
                          tost, unpaired_diff, welch_diff)
from .verdicts import LABELS, Judged, Verdict, decided, judge_family, label, printable, seeds_needed, verdict
from .verdicts import power as t_power  # the noncentral-t power; ablate.stats.power is the simulation module

__all__ = [
    "CORRECTIONS", "Diff", "Summary", "Tost", "adjust", "compare", "interval_level", "paired_diff", "summarize", "tost",
    "unpaired_diff", "welch_diff",
    "LABELS", "Judged", "Verdict", "decided", "judge_family", "label", "t_power", "printable", "seeds_needed", "verdict",
    "Look", "look_alpha", "look_counts", "next_seeds", "sequential_look", "verdict_alpha",
    "Budget", "budget_limited", "Boot", "miou_from_counts", "bootstrap_miou", "methods_table",
]


# --- budget guard ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    limited: bool
    slope: float  # metric units per epoch over the window
    se: float  # standard error of the slope
    p: float  # one-sided p-value of H0: slope ≤ 0
    gain: float  # slope × (window length - 1): the rise over the window
    window: int  # epochs in the window


def budget_limited(curves: Sequence[Sequence[float]], alpha: float = 0.05, fraction: float = 1 / 3,
                   min_points: int = 3, min_gain: float = 0.0) -> Budget:
    """Is a cell still improving at the end of training? (the validation curve, one list per seed)

    Rule: average the seeds' curves epoch by epoch (cut to the shortest; nan epochs ignored),
    take the last ``fraction`` of the epochs (at least ``min_points``) and fit y = a + b·x by least
    squares. Flag when b > 0 beyond its noise: the slope's one-sided t test,
    t = b / se(b), se(b)² = Σr²/((k-2)·Σ(x-x̄)²), df = k - 2, gives p < alpha, and the rise over
    the window b·(k-1) exceeds ``min_gain`` (0 by default; e.g. a fraction of the margin to ignore
    tiny but steady gains). Epochs are treated as independent, which they are not quite.
    """
    rows = [np.asarray(c, dtype=float) for c in curves if len(c)]
    if not rows:
        return Budget(False, math.nan, math.nan, math.nan, math.nan, 0)
    e = min(len(r) for r in rows)
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.stack([r[:e] for r in rows]), axis=0)
    k = min(e, max(min_points, math.ceil(e * fraction)))
    x = np.arange(e - k, e, dtype=float)
    y = mean[e - k:]
    x, y = x[np.isfinite(y)], y[np.isfinite(y)]
    k = len(y)
    if k < 3:
        return Budget(False, math.nan, math.nan, math.nan, math.nan, k)
    y = y - y[0]  # a flat window becomes exact zeros, so its slope and residuals are exactly 0
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ y) / sxx
    resid = y - (y.mean() + slope * xc)
    se = math.sqrt(float(resid @ resid) / (k - 2) / sxx)
    if se == 0:
        p = 0.0 if slope > 0 else 1.0
    else:
        p = float(_st.t.sf(slope / se, k - 2))
    gain = slope * (k - 1)
    return Budget(p < alpha and gain > min_gain, slope, se, p, gain, k)


# --- image-level uncertainty -------------------------------------------------------------------

@dataclass(frozen=True)
class Boot:
    miou: float  # mIoU of the summed counts (the point estimate)
    lo: float
    hi: float
    n_images: int
    n_boot: int
    level: float


def miou_from_counts(intersections, unions) -> float:
    """mIoU of summed counts: mean over classes with a non-zero union of ΣI_c / ΣU_c."""
    i = np.asarray(intersections, dtype=float).reshape(-1, np.shape(intersections)[-1]).sum(0)
    u = np.asarray(unions, dtype=float).reshape(-1, np.shape(unions)[-1]).sum(0)
    keep = u > 0
    return float((i[keep] / u[keep]).mean()) if keep.any() else math.nan


def bootstrap_miou(intersections, unions, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Boot:
    """Percentile bootstrap over images of the dataset mIoU (Efron & Tibshirani 1993, ch. 13).

    ``intersections``/``unions``: (n_images, n_classes) pixel counts. Each resample draws n_images
    images with replacement (multinomial weights), sums their counts and recomputes mIoU, leaving
    out classes whose union is 0 in that resample; the interval is the (1∓level)/2 quantiles.
    It covers the sampling of validation images only, not the seeds.
    """
    i, u = np.asarray(intersections, dtype=float), np.asarray(unions, dtype=float)
    if i.shape != u.shape or i.ndim != 2:
        raise ValueError(f"need two (n_images, n_classes) arrays of one shape, got {i.shape} and {u.shape}")
    n = len(i)
    point = miou_from_counts(i, u) if n else math.nan
    if n == 0:
        return Boot(point, math.nan, math.nan, 0, n_boot, level)
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)
    si, su = w @ i, w @ u
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(su > 0, si / np.where(su > 0, su, 1), np.nan)
    reps = np.nanmean(iou, axis=1)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Boot(point, float(lo), float(hi), n, n_boot, level)


# --- the table for the README and the report ---------------------------------------------------

_METHODS = [
    ("Cell mean interval", "x̄ ± t_{1-α/2, n-1}·s/√n", "Student 1908", "`summarize`"),
    ("Paired Δ (same seeds in both cells)", "d_i = a_i - b_i; Δ = d̄ ± t_{1-α/2, n-1}·s_d/√n; "
     "p = 2·P(T_{n-1} > abs(Δ)/(s_d/√n))", "Student 1908", "`paired_diff`"),
    ("Welch Δ (different seeds)", "se² = s_a²/n_a + s_b²/n_b; df = se⁴/Σ_g (s_g²/n_g)²/(n_g-1); "
     "Δ ± t_{1-α/2, df}·se", "Welch 1947; Satterthwaite 1946", "`unpaired_diff`"),
    ("Equivalence within ±ε (TOST)", "p = max(P(T_df > (Δ+ε)/se), P(T_df < (Δ-ε)/se)); equivalent "
     "⇔ p < α ⇔ the (1-2α) interval lies inside ±ε", "Schuirmann 1987", "`tost`"),
    ("Holm correction", "p̃_(i) = max_{j≤i} min(1, (m-j+1)·p_(j)) for p_(1) ≤ … ≤ p_(m); "
     "difference and TOST p-values adjusted as two families", "Holm 1979", "`adjust`"),
    ("Bonferroni correction / printed interval", "p̃_i = min(1, m·p_i); intervals at 1 - α/m",
     "Dunn 1961", "`adjust`, `interval_level`"),
    ("Verdict", "equivalent if TOST p̃ < α; else better/worse if p̃ < α (sign of Δ); else inconclusive",
     "Lakens 2017 (equivalence + difference)", "`verdict`"),
    ("Seeds that would decide", "smallest n with P(T'_{df,λ} > t_c) + P(T'_{df,λ} < -t_c) ≥ 0.8, "
     "t_c = t_{1-α/(2m), df}; paired df = n-1, λ = ε√n/s_d; Welch df = 2n-2, λ = ε/(s_p√(2/n))",
     "Cohen 1988 (noncentral t)", "`power`, `seeds_needed`"),
    ("Budget-limited", "OLS slope b of the seed-mean curve over the last third of epochs; flagged "
     "when P(T_{k-2} > b/se(b)) < 0.05 and the fitted rise over that third exceeds ε (the report's "
     "min_gain)", "least-squares slope t test", "`budget_limited`"),
    ("Sequential seeds (seeds: {start, max, step})", "every cell runs *start* seeds; after each look a pair "
     "stops when its verdict is decided or its interval half-width < ε, else it and its baseline get *step* more "
     "seeds, up to *max*; every verdict of such a study (the runner's and the report's) is taken at α/K, K = the "
     "possible looks (start, start+step, ..., max), which keeps the chance of any wrong call ≤ α",
     "Bonferroni over looks; Jennison & Turnbull 2000", "`sequential_look`, `look_alpha`, `verdict_alpha`, "
     "`next_seeds`"),
    ("Image-level mIoU interval", "resample images with replacement, mIoU of the summed counts "
     "(classes with zero union left out), percentile interval", "Efron & Tibshirani 1993",
     "`bootstrap_miou`"),
]


def methods_table() -> str:
    """The statistics used, as a Markdown table (statistic, formula, reference, function)."""
    lines = ["Notation: n seeds a cell, m comparisons in the study, ε the margin, α = 0.05 the family "
             "level.", "",
             "| statistic | formula | reference | `ablate.stats` |", "|---|---|---|---|"]
    lines += [f"| {name} | {formula} | {ref} | {fn} |" for name, formula, ref, fn in _METHODS]
    return "\n".join(lines)
