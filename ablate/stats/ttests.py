"""The tests behind every comparison of seeds: cell intervals, paired and Welch differences,
equivalence (TOST) and the multiple-comparison corrections.

Pure functions of numbers (numpy and scipy). :mod:`ablate.stats.verdicts` turns their p-values
into verdicts; :mod:`ablate.stats` re-exports every public name here, and its docstring says how
the correction enters the verdicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats as _st

CORRECTIONS = ("none", "holm", "bonferroni", "bh")


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
    bh (Benjamini & Hochberg 1995; controls the false discovery rate, not the family-wise
    error): p̃_(i) = min_{j≥i} min(1, m·p_(j)/j) (step-up, monotone).
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
    if method == "bh":
        scaled = np.minimum(1.0, m * p[order] / np.arange(1, m + 1))
        out[order] = np.minimum.accumulate(scaled[::-1])[::-1]
        return out.tolist()
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
