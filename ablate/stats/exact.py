"""Exact tests for seeds whose outcomes are two-valued: a seed learns the cue (~0.89) or stays at
the floor (~0.42), so the t distribution does not describe a mean over few seeds (issue 28).

Three tests, each valid without a normal model, and the smallest p-value each can reach:

- :func:`perm_test`: the two-sample label permutation test of the difference of means
  (Fisher 1935; Pitman 1937), all C(n_a + n_b, n_a) relabelings or a seeded Monte-Carlo;
- :func:`signflip_test`: the paired randomisation test of the mean of the per-seed differences
  (Fisher 1935), all 2^n sign vectors or a seeded Monte-Carlo;
- :func:`boschloo`: Boschloo's (1970) exact unconditional test on the counts of learned seeds,
  via ``scipy.stats.boschloo_exact``;
- :func:`min_p`: the smallest two-sided p each test can give for a design, for the pre-flight.

The array versions :func:`perm_pvalues` and :func:`signflip_pvalues` take one dataset a row and
serve the power simulations of :mod:`ablate.stats.power`. Pure functions of numbers.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import numpy as np
from scipy import stats as _st

EXACT_MAX = 200_000  # enumerate every relabeling / sign vector up to this many, else Monte-Carlo
MC_RESAMPLES = 99_999  # Monte-Carlo resamples R: p = (1 + #{|T*| ≥ |T|}) / (1 + R)
MC_SEED = 20240528  # the Monte-Carlo p-values are reproducible
TIE_TOL = 1e-9  # |T*| ≥ |T| - TIE_TOL·(range of the data): float ties count as ties
_BATCH_CELLS = 4_000_000  # rows × arrangements evaluated at once (memory bound, ~32 MB)
TESTS = ("perm", "signflip", "boschloo")


# --- the arrangement matrices ------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def split_matrix(n_a: int, n_b: int) -> np.ndarray:
    """0/1 matrix, one row per way to choose which n_a of the n_a + n_b values form cell a.

    With n_a == n_b only the rows that put value 0 in cell a are kept (half of them): the other
    half are their complements, whose statistic is the same with the opposite sign.
    """
    n = n_a + n_b
    first = [0] if n_a == n_b else []
    rest = range(1, n) if first else range(n)
    combos = itertools.combinations(rest, n_a - len(first))
    idx = np.array([first + list(c) for c in combos], dtype=np.int64).reshape(-1, n_a)
    out = np.zeros((len(idx), n), dtype=np.float64)
    np.put_along_axis(out, idx, 1.0, axis=1)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=32)
def sign_matrix(n: int) -> np.ndarray:
    """±1 matrix of the 2^(n-1) sign vectors whose first sign is +1 (the rest are their negatives)."""
    bits = (np.arange(2 ** (n - 1))[:, None] >> np.arange(n - 1)[None, :]) & 1
    out = np.hstack([np.ones((len(bits), 1)), 1.0 - 2.0 * bits])
    out.setflags(write=False)
    return out


def _count_extreme(centered: np.ndarray, arrangements: np.ndarray, observed: np.ndarray,
                   tol: np.ndarray) -> np.ndarray:
    """Per row r: #{arrangements g with |centered[r] · g| ≥ |observed[r]| - tol[r]}, in batches."""
    counts = np.empty(len(centered), dtype=np.int64)
    step = max(1, _BATCH_CELLS // max(1, len(arrangements)))
    for lo in range(0, len(centered), step):
        s = np.abs(centered[lo:lo + step] @ arrangements.T)
        limit = (np.abs(observed[lo:lo + step]) - tol[lo:lo + step])[:, None]
        counts[lo:lo + step] = (s >= limit).sum(axis=1)
    return counts


def _tolerance(x: np.ndarray) -> np.ndarray:
    return TIE_TOL * (x.max(axis=1) - x.min(axis=1))


def _mc_splits(n_a: int, n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` random 0/1 rows with n_a ones among n (uniform random relabelings)."""
    keys = rng.random((resamples, n))
    out = np.zeros((resamples, n))
    np.put_along_axis(out, np.argsort(keys, axis=1)[:, :n_a], 1.0, axis=1)
    return out


# --- two-sample permutation --------------------------------------------------------------------

def perm_pvalues(a: np.ndarray, b: np.ndarray, resamples: int = MC_RESAMPLES, seed: int = MC_SEED,
                 splits: np.ndarray | None = None) -> np.ndarray:
    """Two-sided permutation p-values of mean(a) - mean(b), one per row of a (R, n_a) and b (R, n_b).

    T = mean(a) - mean(b) is, for fixed pooled values, an increasing affine function of the sum
    S of the values put in cell a, and after centring each row on its pooled mean T = S·(1/n_a +
    1/n_b); so |T*| ≥ |T| ⇔ |S*| ≥ |S|. Exact (Fisher 1935; Pitman 1937): p = #{g : |S_g| ≥ |S| -
    tol} / C(n_a + n_b, n_a) over all relabelings g when there are at most EXACT_MAX; else p =
    (1 + #{...}) / (1 + R) over R seeded uniform relabelings (Phipson & Smyth 2010), or over the
    given ``splits`` rows (a fixed random subset shared by all rows: valid on average over subsets).
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    n_a, n_b = a.shape[1], b.shape[1]
    x = np.hstack([a, b])
    x = x - x.mean(axis=1, keepdims=True)
    observed, tol = x[:, :n_a].sum(axis=1), _tolerance(x)
    if splits is None and math.comb(n_a + n_b, n_a) <= EXACT_MAX:
        m = split_matrix(n_a, n_b)
        return _count_extreme(x, m, observed, tol) / len(m)
    if splits is None:
        splits = _mc_splits(n_a, n_a + n_b, resamples, np.random.default_rng(seed))
    return (1 + _count_extreme(x, splits, observed, tol)) / (1 + len(splits))


def perm_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact permutation p-value of the difference of means of two cells (see
    :func:`perm_pvalues`): every relabeling of the pooled values when C(n_a + n_b, n_a) ≤ 200,000,
    else a seeded Monte-Carlo with R = 99,999. The seeds need not be aligned."""
    if len(a) < 1 or len(b) < 1:
        raise ValueError(f"perm_test needs at least one value a cell, got {len(a)} and {len(b)}")
    return float(perm_pvalues(np.asarray(a, float)[None], np.asarray(b, float)[None])[0])


# --- paired sign-flip --------------------------------------------------------------------------

SIGNFLIP_EXACT_MAX_N = 16  # 2^16 sign vectors


def signflip_pvalues(d: np.ndarray, resamples: int = MC_RESAMPLES, seed: int = MC_SEED) -> np.ndarray:
    """Two-sided sign-flip p-values of mean(d), one per row of the (R, n) paired differences d.

    Under H0 each d_i is symmetric about 0, so the 2^n sign vectors ε give equally likely
    Σ ε_i d_i (Fisher 1935): p = #{ε : |Σ ε_i d_i| ≥ |Σ d_i| - tol} / 2^n, enumerated for n ≤ 16
    (the negated vectors counted through their mirror); above, p = (1 + #{...}) / (1 + R) over R
    seeded random sign vectors (Phipson & Smyth 2010).
    """
    d = np.atleast_2d(np.asarray(d, float))
    n = d.shape[1]
    observed, tol = d.sum(axis=1), _tolerance(np.hstack([d, -d]))
    if n <= SIGNFLIP_EXACT_MAX_N:
        return 2 * _count_extreme(d, sign_matrix(n), observed, tol) / 2 ** n
    signs = 1.0 - 2.0 * np.random.default_rng(seed).integers(0, 2, size=(resamples, n))
    return (1 + _count_extreme(d, signs, observed, tol)) / (1 + resamples)


def signflip_test(d: Sequence[float]) -> float:
    """Two-sided exact sign-flip (paired randomisation) p-value of the mean per-seed difference
    d_i = a_i - b_i (see :func:`signflip_pvalues`); exact for n ≤ 16, seeded Monte-Carlo above."""
    if len(d) < 1:
        raise ValueError("signflip_test needs at least one paired difference")
    return float(signflip_pvalues(np.asarray(d, float)[None])[0])


# --- counts of learned seeds -------------------------------------------------------------------

@functools.lru_cache(maxsize=8192)
def _boschloo_canonical(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    table = [[k_a, k_b], [n_a - k_a, n_b - k_b]]
    return float(_st.boschloo_exact(table, alternative="two-sided").pvalue)


def boschloo(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided Boschloo (1970) exact p-value of H0: p_a = p_b for k_a of n_a vs k_b of n_b learned.

    Boschloo's statistic is Fisher's one-sided exact p; its p-value is the largest, over the
    common learn rate π, of P_π(statistic ≤ observed) under two independent binomials. scipy's
    two-sided convention: twice the smaller one-sided p, clipped to 1. Cached; the table is first
    brought to a canonical orientation (swapping the cells or learned/floor leaves p unchanged).
    """
    for k, n in ((k_a, n_a), (k_b, n_b)):
        if not (0 <= k <= n and n >= 1):
            raise ValueError(f"boschloo needs 0 ≤ k ≤ n and n ≥ 1 a cell, got k={k}, n={n}")
    forms = [(k_a, n_a, k_b, n_b), (k_b, n_b, k_a, n_a),
             (n_a - k_a, n_a, n_b - k_b, n_b), (n_b - k_b, n_b, n_a - k_a, n_a)]
    return _boschloo_canonical(*(int(v) for v in min(forms)))


def boschloo_table(n_a: int, n_b: int | None = None) -> np.ndarray:
    """(n_a + 1, n_b + 1) array of :func:`boschloo` p-values over every (k_a, k_b)."""
    n_b = n_a if n_b is None else n_b
    return np.array([[boschloo(ka, n_a, kb, n_b) for kb in range(n_b + 1)] for ka in range(n_a + 1)])


# --- smallest attainable p ---------------------------------------------------------------------

def min_p(test: str, n_a: int, n_b: int | None = None) -> float:
    """The smallest two-sided p-value ``test`` can give with n_a (and n_b) seeds a cell.

    perm: the observed relabeling and, when n_a == n_b, its mirror are the only ones as extreme
    when all values are distinct and the cells do not overlap: 2/C(2n, n), or 1/C(n_a + n_b, n_a)
    for unequal cells (exact range; the Monte-Carlo range bottoms out at 1/(1 + R)). signflip
    (paired, n = n_a): 2/2^n. boschloo: the p of the most extreme table, all of one cell learned
    and none of the other. A design can decide nothing at level α when min_p ≥ α.
    """
    n_b = n_a if n_b is None else n_b
    if n_a < 1 or n_b < 1:
        raise ValueError(f"min_p needs at least one seed a cell, got {n_a} and {n_b}")
    if test == "perm":
        total = math.comb(n_a + n_b, n_a)
        exact = (2 if n_a == n_b else 1) / total
        return exact if total <= EXACT_MAX else max(exact, 1 / (1 + MC_RESAMPLES))
    if test == "signflip":
        if n_a != n_b:
            raise ValueError(f"signflip is paired: it needs the same seeds in both cells, got {n_a} and {n_b}")
        return 2 / 2 ** n_a if n_a <= SIGNFLIP_EXACT_MAX_N else max(2 / 2 ** n_a, 1 / (1 + MC_RESAMPLES))
    if test == "boschloo":
        return boschloo(n_a, n_a, 0, n_b)
    raise ValueError(f"unknown test {test!r}; valid: {', '.join(TESTS)}")
