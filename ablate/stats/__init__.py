"""Small-sample statistics for seeds: what each seed's outcome is, the test that fits it, families
and their corrections, verdicts, seeds advice, the pre-flight, sequential seeds, the budget rule
and image-level intervals.

Everything here is a pure function of numbers (numpy and scipy only); the report decides what
to compare and how to print it. Values and margins share one unit (the report stores mIoU as a
fraction, so a margin of 1 point is 0.01 here).

The path of a comparison: :mod:`~ablate.stats.outcomes` classifies each seed learned or not
against the task's floor; :mod:`~ablate.stats.decide` picks the test (exact tests from
:mod:`~ablate.stats.exact` for two-valued outcomes; t, Yuen or moderated t from
:mod:`~ablate.stats.ttests` and :mod:`~ablate.stats.robust` for unimodal ones), adjusts within
each family (:func:`adjust`: Holm, Bonferroni, Benjamini-Hochberg) and writes the verdict, with
the seeds that would decide from :mod:`~ablate.stats.power` (simulation).
:mod:`~ablate.stats.feasibility` says before a run whether its seeds can decide;
:mod:`~ablate.stats.sequential` and :mod:`~ablate.stats.spending` add seeds with alpha spending;
:mod:`~ablate.stats.budget` and :mod:`~ablate.stats.images` give the time-to-learn budget rule
and the paired bootstrap over images. :mod:`~ablate.stats.verdicts` keeps the earlier t-only
verdict functions (``verdict``, ``judge_family``) and the noncentral-t power (``t_power``,
``seeds_needed``): no report uses them now; the tests cross-check the simulated power with them.
:func:`methods_table` lists the formulas and references.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

from .budget import Budget, budget_limited, km_learned, learn_epochs, learned_by_text
from .images import ImageBoot, cell_bootstrap, paired_bootstrap_delta
from .exact import boschloo, min_p, perm_test, signflip_test
from .robust import ModT, Prior, fit_prior, moderated_t, yuen
from .sequential import decide as sequential_decide  # ablate.stats.decide is the verdict module
from .sequential import (Decision, Look, Replay, look_alpha, look_counts, look_fractions, look_levels,
                         next_seeds, replay, sequential_look, spend_looks, verdict_alpha)
from .spending import KINDS as SPENDING_KINDS
from .spending import boundaries, nominal_levels, obrien_fleming, pocock, spent, t_levels
from .ttests import (CORRECTIONS, Diff, Summary, Tost, adjust, compare, interval_level, paired_diff, summarize,
                          tost, unpaired_diff, welch_diff)
from .verdicts import LABELS, Judged, Verdict, decided, judge_family, label, printable, seeds_needed, verdict
from .verdicts import power as t_power  # the noncentral-t power; ablate.stats.power is the simulation module

ALPHA = 0.05  # the family-wise level every verdict is judged at (Holm or BH within a family)

__all__ = [
    "ALPHA",
    "CORRECTIONS", "Diff", "Summary", "Tost", "adjust", "compare", "interval_level", "paired_diff", "summarize", "tost",
    "unpaired_diff", "welch_diff",
    "LABELS", "Judged", "Verdict", "decided", "judge_family", "label", "t_power", "printable", "seeds_needed", "verdict",
    "Decision", "Look", "Replay", "sequential_decide", "look_alpha", "look_counts", "look_fractions", "look_levels", "next_seeds",
    "replay", "sequential_look", "spend_looks", "verdict_alpha",
    "SPENDING_KINDS", "boundaries", "nominal_levels", "obrien_fleming", "pocock", "spent", "t_levels",
    "boschloo", "min_p", "perm_test", "signflip_test", "ModT", "Prior", "fit_prior", "moderated_t", "yuen",
    "Budget", "budget_limited", "km_learned", "learn_epochs", "learned_by_text", "ImageBoot", "cell_bootstrap",
    "paired_bootstrap_delta", "Boot", "miou_from_counts", "bootstrap_miou", "methods_table",
]


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
    ("Learned or not", "a seed learned when its mIoU ≥ the study's learned_above, or ≥ f + max(10, (top - f)/2) "
     "points with f the no-attention cell's mean on the task and top its best seed", "—",
     "`outcomes.learn_threshold`"),
    ("k of n learned", "exact binomial interval of the learn rate", "Clopper & Pearson 1934",
     "`outcomes.clopper_pearson`"),
    ("Two-valued comparison (some seeds learned, some not)", "exact two-sample permutation of the 2n values "
     "(C(2n, n) relabelings), p = #{T* as extreme as T}/C(2n, n); or the exact sign-flip of the paired Δ (2^n), or "
     "Boschloo's exact test of k_a/n vs k_b/n; interval: the shifts the test does not reject",
     "Fisher 1935; Pitman 1937; Boschloo 1970; Lehmann 1975", "`exact.perm_test`, `exact.signflip_test`, "
     "`exact.boschloo`, `decide.shift_interval`"),
    ("Paired Δ (same seeds in both cells), unimodal", "d_i = a_i - b_i; Δ = d̄ ± t_{1-α/2, n-1}·s_d/√n; "
     "p = 2·P(T_{n-1} > abs(Δ)/(s_d/√n))", "Student 1908", "`paired_diff`"),
    ("Welch Δ (different seeds), unimodal", "se² = s_a²/n_a + s_b²/n_b; df = se⁴/Σ_g (s_g²/n_g)²/(n_g-1); "
     "Δ ± t_{1-α/2, df}·se", "Welch 1947; Satterthwaite 1946", "`unpaired_diff`"),
    ("Outliers: trimmed test", "Yuen's t on 20%-trimmed means with winsorized variances (a value > 3.5 robust "
     "sd from its cell's median, n ≥ 5)", "Yuen 1974", "`robust.yuen`"),
    ("Few seeds: moderated t", "s̃² = (d₀s₀² + d·s²)/(d₀ + d), t = d̄/(s̃/√n), df = d₀ + d; d₀, s₀² fitted to "
     "the family's variances by moments of log s²", "Smyth 2004", "`robust.moderated_t`"),
    ("Equivalence within ±ε (TOST, unimodal only)", "p = max(P(T_df > (Δ+ε)/se), P(T_df < (Δ-ε)/se)); "
     "equivalent ⇔ p < α ⇔ the (1-2α) interval lies inside ±ε", "Schuirmann 1987; Lakens 2017", "`tost`"),
    ("Families", "the comparisons that answer one question (one task of a task grid; the references apart) "
     "are corrected together", "—", "`Study.family_of`"),
    ("Comparison designs", "ladder: each rung against the one before (one family); all_pairs: every pair (one "
     "family); factorial: effect E = mean(runs with x_E = +1) - mean(runs with x_E = -1) per seed, decided as a paired "
     "comparison of the two half-means (exact permutation on two-valued outcomes, paired t on unimodal ones); a "
     "fraction's aliases E·W for every word W of its defining relation", "Box, Hunter & Hunter 2005; Montgomery 2017",
     "`factorial.decide_effects`, `factorial.effects`"),
    ("Holm correction", "p̃_(i) = max_{j≤i} min(1, (m-j+1)·p_(j)) for p_(1) ≤ … ≤ p_(m)", "Holm 1979",
     "`adjust`"),
    ("Benjamini-Hochberg (correction: bh)", "p̃_(i) = min_{j≥i} min(1, m·p_(j)/j); controls the false "
     "discovery rate", "Benjamini & Hochberg 1995", "`adjust`"),
    ("Printed Δ interval", "at 1 - α/m (Bonferroni, conservative for Holm); clipped to ±100 and marked †",
     "Dunn 1961", "`interval_level`"),
    ("Verdict", "better/worse if p̃ < α (sign of Δ), \"and within ±ε\" when TOST p̃ < α too; else equivalent "
     "if TOST p̃ < α; neither learned when no seed of either cell learned; else inconclusive",
     "Lakens 2017 (equivalence + difference)", "`decide.decide_family`"),
    ("Seeds that would decide", "smallest n at which the chosen test reaches 80% power at α/m under the "
     "observed learn rates (two-valued) or the observed Δ and spread (unimodal), by simulation",
     "Bouthillier et al. 2021 (variance of ML benchmarks)", "`power.seeds_for_power`"),
    ("Feasibility pre-flight", "per family the smallest p the exact test can reach with the planned seeds "
     "against α/m (Holm) or α (BH); undecidable plans refused", "—", "`feasibility.check_family`"),
    ("Budget-limited", "per seed the first epoch ≥ the learned threshold (censored at the budget); "
     "Kaplan-Meier fraction learned with Greenwood's log(-log) interval; limited ⇔ a first crossing in the "
     "last third of the epochs (≥ 2) while a seed has not learned", "Kaplan & Meier 1958; Greenwood 1926",
     "`budget_limited`, `km_learned`"),
    ("Sequential seeds (seeds: {start, max, step})", "looks at start, start+step, ..., max (information "
     "fraction n/max); alpha spent by the Lan-DeMets O'Brien-Fleming-type function (Pocock-type as an option), "
     "boundaries by the Armitage-McPherson-Rowe recursion; Holm across a family's pairs at each look as a "
     "graphical procedure (a rejected pair passes its level on); the t test's levels calibrated by simulation",
     "Lan & DeMets 1983; O'Brien & Fleming 1979; Pocock 1977; Jennison & Turnbull 2000; Maurer & Bretz 2013",
     "`sequential.replay`, `spending.boundaries`"),
    ("Image-level intervals", "paired two-way percentile bootstrap: the same draw of seeds and images for both "
     "cells, mIoU of the summed counts", "Efron & Tibshirani 1993", "`cell_bootstrap`, "
     "`paired_bootstrap_delta`"),
]


def methods_table() -> str:
    """The statistics used, as a Markdown table (statistic, formula, reference, function)."""
    lines = ["Notation: n seeds a cell, m comparisons in a family, ε the margin, α = 0.05 the family "
             "level.", "",
             "| statistic | formula | reference | `ablate.stats` |", "|---|---|---|---|"]
    lines += [f"| {name} | {formula} | {ref} | {fn} |" for name, formula, ref, fn in _METHODS]
    return "\n".join(lines)
