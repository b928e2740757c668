"""Tests for unimodal seed outcomes that the plain t test handles badly: Yuen's trimmed-means test
(an outlying seed moves a mean, much less a trimmed mean) and Smyth's moderated t (few seeds a
comparison, many comparisons: the variances are pooled across comparisons by empirical Bayes).

:func:`yuen` returns the project's :class:`~ablate.stats.ttests.Diff` (``method`` "yuen" or
"yuen_paired"), so its ``p``, ``interval`` and :func:`~ablate.stats.ttests.tost` work unchanged;
:func:`yuen_arrays` is the vectorised core (one dataset a row) the power simulations use.
:func:`moderated_t` takes the paired differences of every comparison of a family at once.
Pure functions of numbers (numpy and scipy).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

from .ttests import Diff


# --- Yuen's trimmed means ----------------------------------------------------------------------

def _trim_parts(x: np.ndarray, trim: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Per row of x (R, n): the trimmed mean, the winsorized values and h = n - 2g, g = ⌊trim·n⌋."""
    n = x.shape[1]
    g = int(math.floor(trim * n))
    h = n - 2 * g
    if h < 2:
        raise ValueError(f"trimming {trim} of {n} values leaves {h}; Yuen's test needs at least 2")
    s = np.sort(x, axis=1)
    tmean = s[:, g:n - g].mean(axis=1)
    wins = np.clip(x, s[:, g:g + 1], s[:, n - g - 1:n - g])
    return tmean, wins, h


def yuen_arrays(a: np.ndarray, b: np.ndarray, trim: float = 0.2,
                paired: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Yuen's test on each row of a (R, n_a) and b (R, n_b): (Δ_t, se, df, sd) arrays.

    Per cell: g = ⌊trim·n⌋, h = n - 2g, x̄_t the mean of the middle h order statistics, s_w² the
    sample variance of the values winsorized at the g-th order statistic from each end.
    Unpaired (Yuen 1974): q = (n - 1)·s_w²/(h(h - 1)) per cell, se² = q_a + q_b,
    df = (q_a + q_b)²/(q_a²/(h_a - 1) + q_b²/(h_b - 1)). Paired (Yuen's test for dependent groups,
    Wilcox 2012, sec. 5.9.5): each cell winsorized on its own, se² = q_a + q_b - 2·q_ab with
    q_ab = (n - 1)·cov_w(a, b)/(h(h - 1)), df = h - 1. Δ_t = x̄_t,a - x̄_t,b; t = Δ_t/se.
    ``sd``: the pooled winsorized std (unpaired) or the std of the winsorized differences (paired).
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    ta, wa, ha = _trim_parts(a, trim)
    tb, wb, hb = _trim_parts(b, trim)
    na, nb = a.shape[1], b.shape[1]
    va, vb = wa.var(axis=1, ddof=1), wb.var(axis=1, ddof=1)
    qa, qb = (na - 1) * va / (ha * (ha - 1)), (nb - 1) * vb / (hb * (hb - 1))
    if paired:
        if na != nb:
            raise ValueError(f"paired Yuen needs aligned cells of equal length, got {na} and {nb}")
        cov = ((wa - wa.mean(axis=1, keepdims=True)) * (wb - wb.mean(axis=1, keepdims=True))).sum(axis=1) / (na - 1)
        var_d = np.maximum(va + vb - 2 * cov, 0.0)
        se = np.sqrt((na - 1) * var_d / (ha * (ha - 1)))
        return ta - tb, se, np.full(len(se), float(ha - 1)), np.sqrt(var_d)
    se = np.sqrt(qa + qb)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(se > 0, (qa + qb) ** 2 / (qa ** 2 / (ha - 1) + qb ** 2 / (hb - 1)), np.inf)
    sd = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    return ta - tb, se, df, sd


def t_pvalues(mean: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided 2·P(T_df > |mean/se|), with :class:`Diff`'s convention at se = 0 (p = 0 when
    mean ≠ 0, 1 when mean = 0)."""
    mean, se = np.asarray(mean, float), np.asarray(se, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1.0), np.where(mean != 0, np.inf, 0.0))
    p = 2 * _st.t.sf(t, df)
    return np.where(se > 0, p, np.where(mean != 0, 0.0, 1.0))


def yuen(a: Sequence[float], b: Sequence[float], trim: float = 0.2, paired: bool = False,
         level: float = 0.95) -> Diff:
    """Yuen's (1974) trimmed-means test of two cells, or its paired form (Wilcox 2012), as a
    :class:`Diff`: ``mean`` the difference of the trimmed means, ``se``, ``df`` and ``sd`` as in
    :func:`yuen_arrays`; ``Diff.p`` is then Yuen's two-sided p and ``Diff.interval`` its interval.
    The unpaired form equals ``scipy.stats.ttest_ind(a, b, equal_var=False, trim=trim)``; trim = 0
    gives Welch (unpaired) and the paired t (paired). With paired=True the caller aligns by seed.
    """
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    d, se, df, sd = (float(v[0]) for v in yuen_arrays(np.asarray(a, float)[None], np.asarray(b, float)[None],
                                                       trim, paired))
    return Diff("yuen_paired" if paired else "yuen", len(a), len(b), d, se, df, sd, level)


# --- Smyth's moderated t -----------------------------------------------------------------------

class Prior(NamedTuple):
    d0: float  # prior degrees of freedom (inf: every comparison has the same true variance)
    s0_sq: float  # prior variance


class ModT(NamedTuple):
    t: float
    df: float  # total degrees of freedom d0 + d, capped at the pooled Σd
    p: float  # two-sided 2·P(T_df > |t|)


def trigamma_inverse(x: float) -> float:
    """y with ψ'(y) = x, by Newton's method on 1/ψ'(y), which is nearly linear in y (Smyth 2004,
    limma's scheme): start y = 0.5 + 1/x, step y += ψ'(y)(1 - ψ'(y)/x)/ψ''(y) until the relative
    step is below 1e-8. Asymptotes for extreme x: 1/√x when x > 1e7, 1/x when x < 1e-6."""
    if not x > 0:
        raise ValueError(f"trigamma_inverse needs x > 0, got {x}")
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(_sp.polygamma(1, y))
        step = tri * (1 - tri / x) / float(_sp.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def fit_prior(s2: Sequence[float], df: Sequence[float]) -> Prior:
    """Prior (d0, s0²) of the variances s_i² ~ s0²·F(d_i, d0) by moments of log s² (Smyth 2004, sec. 6).

    e_i = log s_i² - ψ(d_i/2) + log(d_i/2); ē = mean e_i; v = Σ(e_i - ē)²/(G - 1) - mean ψ'(d_i/2).
    If v > 0: d0 = 2·ψ'⁻¹(v) and s0² = exp(ē + ψ(d0/2) - log(d0/2)); else d0 = ∞ and s0² = exp(ē).
    Zero variances are raised to 1e-5 × the median (limma's offset); needs G ≥ 2 comparisons.
    """
    x, d = np.asarray(s2, float), np.asarray(df, float)
    if len(x) < 2 or len(x) != len(d) or np.any(d <= 0) or np.any(~np.isfinite(x)) or np.any(x < 0):
        raise ValueError("fit_prior needs ≥ 2 finite variances s² ≥ 0 with positive degrees of freedom")
    med = float(np.median(x))
    x = np.maximum(x, 1e-5 * (med if med > 0 else 1.0))
    e = np.log(x) - _sp.digamma(d / 2) + np.log(d / 2)
    e_mean = float(e.mean())
    v = float(((e - e_mean) ** 2).sum() / (len(e) - 1) - _sp.polygamma(1, d / 2).mean())
    if v <= 0:
        return Prior(math.inf, math.exp(e_mean))
    d0 = 2 * trigamma_inverse(v)
    return Prior(d0, math.exp(e_mean + float(_sp.digamma(d0 / 2)) - math.log(d0 / 2)))


def moderated_t(d_by_comparison: Sequence[Sequence[float]]) -> list[ModT]:
    """Moderated t of each comparison's paired differences (Smyth 2004), for few seeds a comparison.

    Per comparison i: n_i differences, mean d̄_i, s_i² (ddof 1), d_i = n_i - 1. The prior (d0, s0²)
    comes from :func:`fit_prior` over the comparisons with n_i ≥ 2; the posterior variance is
    s̃_i² = (d0·s0² + d_i·s_i²)/(d0 + d_i) (s0² when d0 = ∞), t_i = d̄_i/(s̃_i/√n_i) on
    df_i = min(d0 + d_i, Σ_j d_j) (the cap at the pooled df is limma's). With fewer than 3 usable
    comparisons there is too little to pool: the ordinary paired t (df = d_i) is returned.
    Comparisons with n_i < 2 get nan; s̃ = 0 follows :class:`Diff` (t = ±inf, p = 0; or 0 and 1).

    Approximate, not exact: d0 is estimated, and an overestimate (d0 = ∞ is returned whenever the
    log variances spread less than chance alone would make them) makes t liberal. Simulated under
    the model itself with 2-4 df a comparison (tests/stats/test_robust.py): type-I 1.0-1.2 × α at
    α = 0.05 and up to 1.8 × α at α = 0.01 when the family has 5 comparisons; close to nominal
    with 100. Prefer the exact tests where a small corrected α must hold.
    """
    arrs = [np.asarray(d, float) for d in d_by_comparison]
    n = np.array([len(d) for d in arrs], dtype=float)
    ok = n >= 2
    mean = np.array([d.mean() if len(d) else math.nan for d in arrs])
    s2 = np.array([d.var(ddof=1) if len(d) >= 2 else math.nan for d in arrs])
    df = n - 1
    post, df_t = s2.copy(), df.copy()
    if ok.sum() >= 3:
        prior, pooled = fit_prior(s2[ok], df[ok]), float(df[ok].sum())
        if math.isinf(prior.d0):
            post, df_t = np.full(len(n), prior.s0_sq), np.full(len(n), pooled)
        else:
            post = (prior.d0 * prior.s0_sq + df * s2) / (prior.d0 + df)
            df_t = np.minimum(prior.d0 + df, pooled)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(post / n)
        t = np.where(se > 0, mean / np.where(se > 0, se, 1.0), np.where(mean == 0, 0.0, np.copysign(np.inf, mean)))
    p = t_pvalues(np.where(ok, mean, 0.0), np.where(ok, se, 1.0), np.where(ok, df_t, 1.0))
    return [ModT(float(t[i]), float(df_t[i]), float(p[i])) if ok[i] else ModT(math.nan, math.nan, math.nan)
            for i in range(len(arrs))]
