"""Verdicts of a study's comparisons: better / worse / equivalent / inconclusive from the adjusted
p-values of :mod:`ablate.stats.ttests`, the seeds a cell that would decide an inconclusive one
(power of the t test), and when a pair is decided.

The rule is the one :mod:`ablate.stats`' docstring describes; :func:`judge_family` applies it to
all comparisons of a study at once. Everything here is re-exported by :mod:`ablate.stats`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats as _st

from .ttests import Diff, adjust, interval_level, tost

LABELS = ("better", "worse", "equivalent", "inconclusive")


def power(n: int, sd: float, margin: float, alpha: float, method: str = "paired") -> float:
    """Power of the two-sided t test at level alpha to detect a true Δ = margin with n seeds a cell.

    Noncentral t (e.g. Cohen 1988, ch. 2): paired df = n - 1, δ = margin·√n / sd; Welch uses the
    equal-n two-sample test, df = 2n - 2, δ = margin / (sd·√(2/n)) with sd the pooled std.
    power = P(T'_{df,δ} > t_c) + P(T'_{df,δ} < -t_c), t_c = t_{1-alpha/2, df}.
    """
    if n < 2:
        return 0.0
    if sd == 0:
        return 1.0
    if method == "paired":
        df, nc = n - 1, margin * math.sqrt(n) / sd
    elif method == "welch":
        df, nc = 2 * n - 2, margin / (sd * math.sqrt(2 / n))
    else:
        raise ValueError(f"unknown method {method!r}; valid: paired, welch")
    tc = _st.t.ppf(1 - alpha / 2, df)
    return float(_st.nct.sf(tc, df, nc) + _st.nct.cdf(-tc, df, nc))


def seeds_needed(sd: float, margin: float, alpha: float, method: str = "paired",
                 target: float = 0.8, max_seeds: int = 50) -> int | None:
    """Smallest n ≥ 2 seeds a cell with :func:`power` ≥ target; None when even max_seeds falls short."""
    if not math.isfinite(sd):
        raise ValueError("seeds_needed needs a finite spread (at least 2 seeds in each cell)")
    for n in range(2, max_seeds + 1):
        if power(n, sd, margin, alpha, method) >= target:
            return n
    return None


@dataclass(frozen=True)
class Verdict:
    label: str  # one of LABELS
    n: int  # seeds a cell now (the smaller cell for Welch)
    seeds: int | None = None  # inconclusive: seeds a cell that would decide it; None if unknown/over cap
    capped: bool = False  # inconclusive and more than max_seeds would be needed
    different: bool = False  # adjusted difference p < alpha (also true for a tiny but detected Δ)
    equivalent: bool = False  # adjusted TOST p < alpha
    max_seeds: int = 50  # the cap the seeds were searched up to

    @property
    def more(self) -> int | None:
        """Seeds to add to each cell, or None."""
        return None if self.seeds is None else self.seeds - self.n

    @property
    def seeds_text(self) -> str:
        """Seeds a cell as text: e.g. "12", ">50", or "n/a" (fewer than 2 seeds: no spread to go on)."""
        if self.capped:
            return f">{self.max_seeds}"
        return "n/a" if self.seeds is None else str(self.seeds)


def label(d: Diff, p_diff: float, p_tost: float, alpha: float = 0.05) -> str:
    """better/worse when the (adjusted) difference p < alpha, by the sign of Δ; equivalent when the
    (adjusted) TOST p < alpha; else inconclusive. Equivalence wins when both hold: a Δ detected but
    inside ±margin is, by the study's own margin, too small to matter (``Verdict.different`` keeps it).
    """
    if p_tost < alpha:
        return "equivalent"
    if p_diff < alpha:
        return "better" if d.mean > 0 else "worse"
    return "inconclusive"


def verdict(d: Diff, p_diff: float, p_tost: float, margin: float, alpha: float = 0.05,
            n_tests: int = 1, target_power: float = 0.8, max_seeds: int = 50, seeds: bool = True) -> Verdict:
    """One comparison's verdict from its adjusted p-values (see the module docstring).

    Inconclusive verdicts carry the seeds a cell that the observed spread (``d.sd``) says would
    give 80% power to detect a difference of ``margin`` at the Bonferroni level alpha/n_tests
    (conservative for Holm), via :func:`seeds_needed` (noncentral t); never fewer than one seed
    more than now. With fewer than 2 seeds a cell there is no spread: inconclusive, seeds None.
    ``seeds=False`` skips that search (seeds None), for callers that need the label only.
    """
    lab = label(d, p_diff, p_tost, alpha)
    v = dict(label=lab, n=d.n, different=p_diff < alpha, equivalent=p_tost < alpha, max_seeds=max_seeds)
    if lab != "inconclusive" or not math.isfinite(d.sd) or not seeds:
        return Verdict(**v)
    n = seeds_needed(d.sd, margin, alpha / max(1, n_tests), d.method, target_power, max_seeds)
    if n is None or max(n, d.n + 1) > max_seeds:
        return Verdict(**v, capped=True)
    return Verdict(**v, seeds=max(n, d.n + 1))


def printable(interval: tuple[float, float], metric_range: float) -> bool:
    """Whether an interval means something: finite and no wider than the metric's range."""
    lo, hi = interval
    return math.isfinite(lo) and math.isfinite(hi) and hi - lo <= metric_range


def decided(verdict_label: str | Verdict, half_width: float, margin: float) -> bool:
    """A pair stops taking seeds when its verdict is not inconclusive or its interval is precise:
    the half-width (of the interval at the corrected level) is below the margin.

    Stopping on a verdict is a look at the data: with the same alpha at every look from 3 to 10
    seeds, simulated null differences (normal, sd 2-4 margins) are called better/worse about 15%
    of the time instead of 5% (tests/stats/test_stats.py measures it); stopping on precision alone,
    which looks at the spread but not at Δ, gives 5-8%. Verdicts taken at :func:`look_alpha` keep
    the wrong calls at or below alpha under either rule, at the cost of power.
    """
    lab = verdict_label.label if isinstance(verdict_label, Verdict) else verdict_label
    return lab != "inconclusive" or (math.isfinite(half_width) and half_width < margin)


@dataclass(frozen=True)
class Judged:
    """One comparison of a family: its Δ, adjusted p-values, printed interval and verdict."""
    d: Diff
    p_diff: float  # adjusted; nan when the interval is not printable
    p_tost: float
    interval: tuple[float, float] | None  # at ``level``; None when not printable
    level: float
    verdict: Verdict

    @property
    def half_width(self) -> float:
        """Half-width of the interval at ``level``; nan when the spread is unknown."""
        return self.d.half_width_at(self.level)


def judge_family(diffs: Sequence[Diff], margin: float, alpha: float = 0.05, correction: str = "holm",
                 metric_range: float = 1.0, max_seeds: int = 50, seeds: bool = True) -> list[Judged]:
    """Verdicts of a study's comparisons taken together (the report's rule, in numbers).

    Difference and TOST p-values are adjusted as two families with ``correction``; m counts the
    comparisons with a test; the interval is at :func:`interval_level`; an interval that
    :func:`printable` rejects (wider than ``metric_range``) makes its comparison inconclusive.
    ``seeds=False``: inconclusive verdicts without the seeds that would decide them (faster).
    """
    p_diff = adjust([d.p for d in diffs], correction)
    p_tost = adjust([tost(d, margin, alpha).p for d in diffs], correction)
    m = sum(not math.isnan(d.p) for d in diffs)
    level = interval_level(alpha, m, correction)
    out = []
    for d, pd, pt in zip(diffs, p_diff, p_tost):
        iv = d.interval(level)
        if not printable(iv, metric_range):
            iv, pd, pt = None, math.nan, math.nan
        out.append(Judged(d, pd, pt, iv, level, verdict(d, pd, pt, margin, alpha, m, max_seeds=max_seeds,
                                                        seeds=seeds)))
    return out
