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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats as _st

LABELS = ("better", "worse", "equivalent", "inconclusive")
CORRECTIONS = ("none", "holm", "bonferroni")


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 when n == 1
    half_width: float  # 95% CI half width; nan when n < 2

    @property
    def ci(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width


def summarize(values: list[float], level: float = 0.95) -> Summary:
    """Mean, sample std and the Student t interval mean ± t_{(1+level)/2, n-1} s/√n (Student 1908)."""
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, _st.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def welch_diff(a: list[float], b: list[float], level: float = 0.95) -> Summary:
    """mean(a) - mean(b) with a Welch t interval (unequal variances); ``std`` is the standard error."""
    d = unpaired_diff(a, b, level)
    return Summary(d.n, d.mean, d.se, d.half_width)


# --- differences -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Diff:
    """Δ = mean(a) - mean(b) with its standard error, degrees of freedom and t interval.

    ``sd`` is the spread the power calculation uses: the std of the per-seed differences
    (paired) or the pooled std of the two cells (Welch). ``se``, ``df``, ``sd`` are nan when a
    cell has fewer than 2 values; ``se`` is 0 when every seed gives the same difference.
    """
    method: str  # "paired" or "welch"
    n_a: int
    n_b: int
    mean: float
    se: float
    df: float
    sd: float
    level: float = 0.95

    @property
    def n(self) -> int:
        return min(self.n_a, self.n_b)

    @property
    def t(self) -> float:
        """Δ / se; ±inf when se = 0 and Δ ≠ 0, and 0 when both are 0 (scipy gives nan there)."""
        if math.isnan(self.se):
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean == 0 else math.copysign(math.inf, self.mean)
        return self.mean / self.se

    @property
    def p(self) -> float:
        """Two-sided p-value of H0: Δ = 0, 2·P(T_df > |t|); nan with fewer than 2 values a cell."""
        t = self.t
        if math.isnan(t):
            return math.nan
        return 0.0 if math.isinf(t) else float(2 * _st.t.sf(abs(t), self.df))

    def half_width_at(self, level: float) -> float:
        """t_{(1+level)/2, df}·se; nan when the spread is unknown, 0 when se = 0."""
        if math.isnan(self.se):
            return math.nan
        return 0.0 if self.se == 0 else float(_st.t.ppf(0.5 + level / 2, self.df) * self.se)

    def interval(self, level: float | None = None) -> tuple[float, float]:
        """Δ ± t_{(1+level)/2, df}·se at ``level`` (default: the Diff's own)."""
        hw = self.half_width_at(self.level if level is None else level)
        return self.mean - hw, self.mean + hw

    @property
    def half_width(self) -> float:
        return self.half_width_at(self.level)

    @property
    def ci(self) -> tuple[float, float]:
        return self.interval()


def paired_diff(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Diff:
    """Paired t on the per-seed differences d_i = a_i - b_i (Student 1908; ``scipy.stats.ttest_rel``).

    Δ = mean(d), se = sd(d)/√n, df = n - 1. The caller aligns the lists by seed.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_diff needs aligned lists of equal length, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return Diff("paired", n, n, mean, math.nan, math.nan, math.nan, level)
    sd = float(d.std(ddof=1))
    return Diff("paired", n, n, mean, sd / math.sqrt(n), n - 1, sd, level)


def unpaired_diff(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Diff:
    """Welch's t for unequal variances (Welch 1947; ``scipy.stats.ttest_ind(equal_var=False)``).

    se² = s_a²/n_a + s_b²/n_b; df = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))
    (Welch-Satterthwaite). ``sd`` is the pooled std √(((n_a-1)s_a² + (n_b-1)s_b²)/(n_a+n_b-2)).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(x), len(y)
    mean = float(x.mean() - y.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return Diff("welch", na, nb, mean, math.nan, math.nan, math.nan, level)
    sa2, sb2 = float(x.var(ddof=1)), float(y.var(ddof=1))
    va, vb = sa2 / na, sb2 / nb
    se = math.sqrt(va + vb)
    df = math.inf if se == 0 else (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    sd = math.sqrt(((na - 1) * sa2 + (nb - 1) * sb2) / (na + nb - 2))
    return Diff("welch", na, nb, mean, se, df, sd, level)


def compare(a: Mapping[Hashable, float], b: Mapping[Hashable, float], level: float = 0.95,
            shared: bool = False) -> Diff:
    """Δ between two cells given as {seed: value}: paired when both have the same seeds, else Welch.

    With ``shared=True`` the pairing uses the seeds the cells share whenever there are at least
    two (the extra seeds of the larger cell are left out), which keeps a decided pair's verdict
    when sequential seeding gives its baseline more seeds. ``Diff.method`` says which was used.
    """
    common = sorted(set(a) & set(b))
    if set(a) == set(b) or (shared and len(common) >= 2):
        return paired_diff([a[s] for s in common], [b[s] for s in common], level)
    return unpaired_diff(list(a.values()), list(b.values()), level)


# --- equivalence -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tost:
    p: float  # max(p_lower, p_upper); nan when the spread is unknown
    p_lower: float  # H0: Δ ≤ -margin
    p_upper: float  # H0: Δ ≥ +margin
    interval: tuple[float, float]  # the (1 - 2·alpha) interval
    margin: float
    alpha: float

    @property
    def equivalent(self) -> bool:
        return self.p < self.alpha  # False for nan


def tost(d: Diff, margin: float, alpha: float = 0.05) -> Tost:
    """Two one-sided tests for equivalence within ±margin (Schuirmann 1987), paired or Welch.

    p_lower = P(T_df > (Δ + margin)/se), p_upper = P(T_df < (Δ - margin)/se), p = max of the two.
    p < alpha exactly when the (1 - 2·alpha) t interval lies strictly inside (-margin, +margin).
    With se = 0 each one-sided p is 0 or 1 depending on which side of the bound Δ lies.
    """
    if not margin > 0:
        raise ValueError(f"tost needs a positive margin, got {margin}")
    lo, hi = d.interval(1 - 2 * alpha)
    if math.isnan(d.se):
        p_lo = p_hi = math.nan
    elif d.se == 0:
        p_lo, p_hi = float(d.mean <= -margin), float(d.mean >= margin)
    else:
        p_lo = float(_st.t.sf((d.mean + margin) / d.se, d.df))
        p_hi = float(_st.t.cdf((d.mean - margin) / d.se, d.df))
    return Tost(max(p_lo, p_hi) if not math.isnan(p_lo) else math.nan, p_lo, p_hi, (lo, hi), margin, alpha)


# --- multiple comparisons ----------------------------------------------------------------------

def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values for a family of m tests; reject where adjusted p < alpha.

    bonferroni: min(1, m·p_i) (Dunn 1961). holm (Holm 1979): with p_(1) ≤ … ≤ p_(m),
    p̃_(i) = max_{j≤i} min(1, (m - j + 1)·p_(j)) (step-down, monotone). none: unchanged.
    nan p-values (comparisons without a test) stay nan and are not counted in m.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; valid: {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float)
    out = p.copy()
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if method == "none" or m == 0:
        return out.tolist()
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, m * p[ok])
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out.tolist()


def interval_level(alpha: float, n_tests: int, method: str = "holm") -> float:
    """Level of the interval printed beside a corrected verdict: 1 - alpha/m (Bonferroni).

    Holm has no matching simultaneous intervals, so holm prints the Bonferroni ones too; none
    prints 1 - alpha. A TOST display interval is at 1 - 2·alpha/m likewise.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; valid: {', '.join(CORRECTIONS)}")
    return 1 - alpha / (1 if method == "none" else max(1, n_tests))


# --- verdicts and seeds needed -----------------------------------------------------------------

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


# --- seeds where they decide -------------------------------------------------------------------

def decided(verdict_label: str | Verdict, half_width: float, margin: float) -> bool:
    """A pair stops taking seeds when its verdict is not inconclusive or its interval is precise:
    the half-width (of the interval at the corrected level) is below the margin.

    Stopping on a verdict is a look at the data: with the same alpha at every look from 3 to 10
    seeds, simulated null differences (normal, sd 2-4 margins) are called better/worse about 15%
    of the time instead of 5% (tests/test_stats.py measures it); stopping on precision alone,
    which looks at the spread but not at Δ, gives 5-8%. Verdicts taken at :func:`look_alpha` keep
    the wrong calls at or below alpha under either rule, at the cost of power.
    """
    lab = verdict_label.label if isinstance(verdict_label, Verdict) else verdict_label
    return lab != "inconclusive" or (math.isfinite(half_width) and half_width < margin)


def look_counts(start: int, max_seeds: int, step: int = 1) -> list[int]:
    """The seeds a pair can have when it is looked at: start, start + step, ... and max_seeds.

    :func:`next_seeds` grows a pair by ``step`` or aligns it to its partner's count, so every
    count stays on this grid (a trial that fails for a reason of its own leaves a cell one value
    short: that look happens off the grid, a small excess over the union bound)."""
    if not 1 <= start <= max_seeds or step < 1:
        raise ValueError(f"need 1 <= start <= max_seeds and step >= 1; got start={start}, max_seeds={max_seeds}, "
                         f"step={step}")
    return sorted(set(range(start, max_seeds, step)) | {max_seeds})


def look_alpha(alpha: float, start: int, max_seeds: int, step: int = 1) -> float:
    """Per-look family level alpha / K for the K = len(:func:`look_counts`) possible looks
    (Bonferroni over looks: K = max_seeds - start + 1 with step 1): the chance of any wrong call
    over all looks stays <= alpha whatever the stopping rule, since the verdict at n seeds is a
    function of the first n seeds (conservative; cf. Jennison & Turnbull 2000 for
    group-sequential boundaries, which spend alpha less bluntly)."""
    return alpha / len(look_counts(start, max_seeds, step))


def verdict_alpha(alpha: float, sequential: Mapping | None = None) -> float:
    """The family level a study's verdicts are taken at: ``alpha`` for a fixed set of seeds;
    :func:`look_alpha` for sequential seeds (``sequential``: {"start", "max", "step"}, as
    ``Study.sequential``). The runner stops adding seeds at this level and the report judges at
    it, so the verdict that stopped a pair is the one printed."""
    if not sequential:
        return alpha
    return look_alpha(alpha, sequential["start"], sequential["max"], sequential.get("step", 1))


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


@dataclass(frozen=True)
class Look:
    """One look of sequential seeding: each pair's verdict and whether it is decided, and the
    seeds each cell runs next ({} when the study is finished)."""
    alpha: float  # the per-look family level
    judged: dict  # (cell_a, cell_b) -> Judged; pairs without 2 values in each cell are left out
    decided: dict  # (cell_a, cell_b) -> bool
    new: dict  # cell -> seeds to run next


def sequential_look(values: Mapping[Hashable, Mapping[int, float]], done: Mapping[Hashable, Sequence[int]],
                    pairs: Sequence[tuple], margin: float, alpha: float, correction: str, start: int,
                    max_seeds: int, step: int = 1, seed_order: Sequence[int] | None = None) -> Look:
    """Judge every pair (cell, baseline) on the values finished so far and pick the next seeds.

    ``values``: {cell: {seed: value}} of the finished trials; ``done``: each cell's seeds finished
    (failed ones included). Verdicts are taken at :func:`look_alpha` with :func:`judge_family`,
    Holm replaced by Bonferroni: a Bonferroni-adjusted p is never below Holm's, so a pair stopped
    here stays decided under the report's Holm, however the other pairs move. A pair is decided
    (:func:`decided`) by its verdict or by precision (half-width at the printed level below the
    margin); a pair whose cells have their seeds but fewer than 2 values (failed trials) is not
    grown either. Then :func:`next_seeds` with ``batch=step``.
    """
    a = look_alpha(alpha, start, max_seeds, step)
    ready = [(x, b) for x, b in pairs if len(values.get(x, {})) >= 2 and len(values.get(b, {})) >= 2]
    diffs = [compare(values[x], values[b], shared=True) for x, b in ready]
    family = judge_family(diffs, margin, a, "bonferroni" if correction == "holm" else correction, seeds=False)
    judged = dict(zip(ready, family))
    state = {}
    for pair in pairs:
        x, b = pair
        if pair in judged:
            state[pair] = decided(judged[pair].verdict, judged[pair].half_width, margin)
        else:  # too few values: undecided while seeds are missing, given up once they are done
            state[pair] = min(len(set(done.get(x, ()))), len(set(done.get(b, ())))) >= start
    new = next_seeds(done, state, start, max_seeds, seed_order, batch=step)
    return Look(a, judged, state, new)


def next_seeds(done: Mapping[Hashable, Sequence[int]], pairs: Mapping[tuple, bool], start: int,
               max_seeds: int, seed_order: Sequence[int] | None = None, batch: int = 1) -> dict:
    """Seeds each cell should run next; {} when the study is finished.

    ``done``: each cell's seeds finished or already queued; ``pairs``: {(cell_a, cell_b): decided}
    (see :func:`decided`). Every cell first gets ``start`` seeds. Then each undecided pair whose
    cells both have ``start`` grows: to the larger of its two counts when they differ (aligning
    the pair on the same seeds), else by ``batch``; never beyond ``max_seeds``. A cell takes the
    largest count any of its pairs asks for. Seeds come in ``seed_order`` (default 0, 1, 2, ...),
    the same order in every cell, so seed s of every cell is paired. Deterministic.
    """
    order = list(range(max_seeds)) if seed_order is None else list(seed_order)
    if len(order) < max_seeds or start > max_seeds or start < 1:
        raise ValueError(f"need 1 ≤ start ≤ max_seeds ≤ len(seed_order); got start={start}, "
                         f"max_seeds={max_seeds}, {len(order)} seeds in order")
    count = {c: len(set(s)) for c, s in done.items()}
    target = {c: max(min(start, max_seeds), n) for c, n in count.items()}
    for (a, b), ok in pairs.items():
        missing = [c for c in (a, b) if c not in count]
        if missing:
            raise ValueError(f"pair ({a!r}, {b!r}) names cell(s) {missing!r} that are not in done")
        na, nb = count[a], count[b]
        if ok or min(na, nb) < start:
            continue
        want = min(max_seeds, max(na, nb) if na != nb else na + batch)
        target[a], target[b] = max(target[a], want), max(target[b], want)
    out = {}
    for c, seeds in done.items():
        have, new = set(seeds), []
        for s in order:
            if len(have) + len(new) >= target[c]:
                break
            if s not in have:
                new.append(s)
        if new:
            out[c] = new
    return out


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
