"""Power, type-I error and seeds advice of the seed-comparison tests, by simulation.

Two outcome models of a pair of cells run on the same seeds: :class:`TwoValued` (each seed
learns the cue or stays at the floor, what the synthetic tasks give) and :class:`Normal`. The
power is the fraction of simulated datasets whose two-sided p is below alpha, every test applied
to all datasets at once (one dataset a row). No noncentral t: scipy's returns nan at large
noncentrality (issue 28), and it describes neither two-valued outcomes nor the exact tests.

Tests (:data:`TESTS`): "perm", "signflip", "boschloo" (:mod:`ablate.stats.exact`), "paired_t",
"welch_t", "yuen" and "yuen_paired" (:mod:`ablate.stats.robust`). Pure functions of numbers.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from .cache import cached
from .exact import EXACT_MAX, boschloo_table, min_p, perm_pvalues, signflip_pvalues
from .robust import t_pvalues, yuen_arrays

TESTS = ("perm", "signflip", "boschloo", "paired_t", "welch_t", "yuen", "yuen_paired")
SCAN_UP_TO = 12  # seeds_for_power tries every n up to here, then bisects (power ~monotone there)


# --- outcome models ----------------------------------------------------------------------------

def _correlated_normals(rng: np.random.Generator, reps: int, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    if not -1 <= rho <= 1:
        raise ValueError(f"rho must be in [-1, 1], got {rho}")
    z = rng.standard_normal((2, reps, n))
    return z[0], rho * z[0] + math.sqrt(1 - rho * rho) * z[1]


@dataclass(frozen=True)
class TwoValued:
    """Seed i learns in cell a with probability p_a, in cell b with p_b; a learned seed scores
    N(learned, learned_sd), a floor seed N(floor, floor_sd) (fractions of mIoU, noise independent
    across cells). ``rho``: the correlation of the latent normals whose thresholds decide the learn
    events of one seed in the two cells (a Gaussian copula); the events' own correlation is smaller.
    """
    p_a: float
    p_b: float
    floor: float = 0.42
    floor_sd: float = 0.007
    learned: float = 0.89
    learned_sd: float = 0.01
    rho: float = 0.0

    def __post_init__(self):
        if not (0 <= self.p_a <= 1 and 0 <= self.p_b <= 1):
            raise ValueError(f"learn probabilities must be in [0, 1], got {self.p_a} and {self.p_b}")
        if not self.learned > self.floor:
            raise ValueError(f"learned ({self.learned}) must lie above floor ({self.floor})")

    @property
    def null(self) -> bool:
        return self.p_a == self.p_b

    @property
    def threshold(self) -> float:
        """The value that separates learned from floor seeds: the midpoint of the two levels."""
        return (self.floor + self.learned) / 2

    def sample(self, rng: np.random.Generator, reps: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(a, b), each (reps, n): reps datasets of n seeds, seed i of a paired with seed i of b."""
        za, zb = _correlated_normals(rng, reps, n, self.rho)
        out = []
        for z, p in ((za, self.p_a), (zb, self.p_b)):
            learned = _st.norm.cdf(z) < p
            noise = rng.standard_normal((reps, n))
            out.append(np.where(learned, self.learned + self.learned_sd * noise, self.floor + self.floor_sd * noise))
        return out[0], out[1]


@dataclass(frozen=True)
class Normal:
    """a_i ~ N(delta, sd²), b_i ~ N(0, sd²), corr(a_i, b_i) = rho (the seed shared by the cells)."""
    delta: float
    sd: float
    rho: float = 0.0

    def __post_init__(self):
        if not self.sd > 0:
            raise ValueError(f"sd must be positive, got {self.sd}")

    @property
    def null(self) -> bool:
        return self.delta == 0

    def sample(self, rng: np.random.Generator, reps: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        za, zb = _correlated_normals(rng, reps, n, self.rho)
        return self.delta + self.sd * za, self.sd * zb


# --- p-values of many datasets at once -------------------------------------------------------

MITM_FROM = 6  # seeds a cell from which the exact permutation counts go through perm_pvalues_split


@functools.lru_cache(maxsize=256)
def _subset_matrix(width: int, cols: tuple, size: int, first: int | None) -> np.ndarray:
    """0/1 matrix, one row per ``size``-subset of the columns ``cols`` (plus ``first``), ``width`` wide."""
    combos = list(itertools.combinations(cols, size))
    m = np.zeros((len(combos), width))
    for j, c in enumerate(combos):
        m[j, list(c)] = 1.0
    if first is not None:
        m[:, first] = 1.0
    m.setflags(write=False)
    return m


def _subset_sums(x: np.ndarray, cols, size: int, first: int | None = None) -> np.ndarray:
    """(R, C): each row's sum over every ``size``-subset of the columns ``cols`` (plus ``first``)."""
    return x @ _subset_matrix(x.shape[1], tuple(cols), size, first).T


def _count_at_least(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per row: the sum over the columns of q of #{columns of s >= q} (one stable sort a row, the
    queries ahead of equal values)."""
    nq = q.shape[1]
    is_s = np.argsort(np.concatenate([q, s], axis=1), axis=1, kind="stable") >= nq
    return nq * s.shape[1] - np.where(is_s, 0, np.cumsum(is_s, axis=1)).sum(axis=1)


def _count_at_most(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per row: the sum over the columns of q of #{columns of s <= q} (equal values ahead of the queries)."""
    ns = s.shape[1]
    is_q = np.argsort(np.concatenate([s, q], axis=1), axis=1, kind="stable") >= ns
    return np.where(is_q, np.cumsum(~is_q, axis=1), 0).sum(axis=1)


def perm_pvalues_split(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`~ablate.stats.exact.perm_pvalues`' exact p-values (n seeds in each cell) counted by
    meeting in the middle: a relabeling that puts value 0 in cell a (the half
    :func:`~ablate.stats.exact.split_matrix` enumerates) is k of the first n pooled values (value 0
    among them) and n - k of the last n, so its sum is S_left + S_right; for each k the right sums
    are sorted once and the pairs with |S_left + S_right| >= |S| - tol counted by a sort, not
    enumerated: ~2^n sums a row instead of C(2n - 1, n - 1) (12x fewer at n = 10). The same
    tolerance and the same count; the p-values equal perm_pvalues' (a test compares them, ties included)."""
    from .exact import TIE_TOL

    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    n = a.shape[1]
    x = np.hstack([a, b])
    x = x - x.mean(axis=1, keepdims=True)
    limit = (np.abs(x[:, :n].sum(axis=1)) - TIE_TOL * (x.max(axis=1) - x.min(axis=1)))[:, None]
    counts = np.zeros(len(x), dtype=np.int64)
    for k in range(1, n + 1):
        left = _subset_sums(x, range(1, n), k - 1, first=0)
        right = _subset_sums(x, range(n, 2 * n), n - k)
        counts += _count_at_least(limit - left, right) + _count_at_most(-limit - left, right)
    total = math.comb(2 * n - 1, n - 1)
    return np.where(limit[:, 0] <= 0, total, counts) / total  # limit <= 0: every relabeling is as extreme

def mc_resamples(alpha: float) -> int:
    """Relabelings of a Monte-Carlo permutation test in a simulation: at least 1,999, and enough
    that the smallest p, 1/(1 + R), is a tenth of alpha or less."""
    return max(1999, math.ceil(10 / alpha) - 1)


@functools.lru_cache(maxsize=4)
def _shared_splits(n: int, resamples: int) -> np.ndarray:
    """A fixed random set of relabelings of 2n values (n to each cell), seeded by (n, resamples)."""
    rng = np.random.default_rng([n, resamples])
    out = np.zeros((resamples, 2 * n))
    np.put_along_axis(out, np.argsort(rng.random((resamples, 2 * n)), axis=1)[:, :n], 1.0, axis=1)
    return out


def pvalues(test: str, a: np.ndarray, b: np.ndarray, alpha: float = 0.05,
            threshold: float | None = None) -> np.ndarray:
    """Two-sided p-values of ``test`` on each row of a and b, each (R, n), seeds aligned by column.

    perm: exact up to C(2n, n) = 200,000 arrangements, else a Monte-Carlo permutation test over
    one random set of :func:`mc_resamples` (alpha) relabelings shared by all rows; signflip:
    exact up to n = 16, else seeded Monte-Carlo; boschloo: on the counts of values above
    ``threshold`` (required), looked up in the table of every (k_a, k_b); paired_t: Student on
    a_i - b_i; welch_t: Welch (Yuen with trim 0); yuen / yuen_paired: trim 0.2.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    n = a.shape[1]
    if test == "perm":
        if math.comb(2 * n, n) <= EXACT_MAX:
            return perm_pvalues(a, b) if n < MITM_FROM else perm_pvalues_split(a, b)
        return perm_pvalues(a, b, splits=_shared_splits(n, mc_resamples(alpha)))
    if test == "signflip":
        return signflip_pvalues(a - b, resamples=mc_resamples(alpha))
    if test == "boschloo":
        if threshold is None:
            raise ValueError("boschloo needs the threshold that separates learned from floor seeds")
        table = boschloo_table(n, b.shape[1])
        return table[(a > threshold).sum(axis=1), (b > threshold).sum(axis=1)]
    if test == "paired_t":
        d = a - b
        return t_pvalues(d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n), n - 1)
    if test in ("welch_t", "yuen", "yuen_paired"):
        trim = 0.0 if test == "welch_t" else 0.2
        diff, se, df, _ = yuen_arrays(a, b, trim, paired=test == "yuen_paired")
        return t_pvalues(diff, se, df)
    raise ValueError(f"unknown test {test!r}; valid: {', '.join(TESTS)}")


def _threshold(test: str, model) -> float | None:
    if test != "boschloo":
        return None
    if not isinstance(model, TwoValued):
        raise ValueError("boschloo counts learned seeds: it needs the TwoValued model")
    return model.threshold


def _rejections(test: str, a: np.ndarray, b: np.ndarray, alpha: float, model) -> float:
    return float(np.mean(pvalues(test, a, b, alpha, _threshold(test, model)) < alpha))


REACH_CHUNK = 125  # datasets a step of _reaches


def _reaches(test: str, a: np.ndarray, b: np.ndarray, alpha: float, model, target: float) -> bool:
    """``_rejections(test, a, b, alpha, model) >= target``, the same answer, found with fewer
    p-values: the datasets (rows) are tested REACH_CHUNK at a time, and the count stops once it
    decides the comparison (enough rejections already, or too few left to reach the target). Each
    row's p-value depends on that row alone (exact counts, and Monte-Carlo relabelings shared by
    all rows), so the rows read are tested as they would be among all; the comparison is made on
    the count as ``_rejections`` makes it on the fraction (count / reps, rounded the same way)."""
    reps = len(a)
    need = next((c for c in range(math.ceil(target * reps) - 1, reps + 1) if c >= 0 and c / reps >= target), None)
    if need is None:
        return False
    threshold, hits = _threshold(test, model), 0
    for lo in range(0, reps, REACH_CHUNK):
        hits += int(np.sum(pvalues(test, a[lo:lo + REACH_CHUNK], b[lo:lo + REACH_CHUNK], alpha, threshold) < alpha))
        if hits >= need:
            return True
        if hits + reps - min(reps, lo + REACH_CHUNK) < need:
            return False
    return hits >= need


# --- power, type-I error, seeds ----------------------------------------------------------------

def power(test: str, n: int, model, alpha: float, reps: int = 2000, seed: int = 0) -> float:
    """Fraction of ``reps`` datasets of n seeds a cell drawn from ``model`` (seeded) whose
    two-sided p-value of ``test`` is below alpha. Under a null model this is the type-I error."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; valid: {', '.join(TESTS)}")
    if n < 2:
        raise ValueError(f"power needs at least 2 seeds a cell, got {n}")
    a, b = model.sample(np.random.default_rng(seed), reps, n)
    return _rejections(test, a, b, alpha, model)


def type1(test: str, n: int, model_null, alpha: float, reps: int = 2000, seed: int = 0) -> float:
    """Simulated type-I error: :func:`power` under a null model (p_a == p_b, or delta == 0)."""
    if not model_null.null:
        raise ValueError(f"type1 needs a null model (p_a == p_b or delta == 0), got {model_null}")
    return power(test, n, model_null, alpha, reps, seed)


def mc_margin(rate: float, reps: int, k: float = 3.0) -> float:
    """k Monte-Carlo standard errors of a simulated rejection rate: k·√(rate(1 - rate)/reps)."""
    return k * math.sqrt(rate * (1 - rate) / reps)


def seeds_for_power(test: str, model, alpha: float, target: float = 0.8, max_seeds: int = 50,
                    reps: int = 1000, seed: int = 0) -> int | None:
    """Smallest seeds a cell n ≤ max_seeds at which :func:`power` of ``test`` reaches ``target``.

    One seeded draw of max_seeds seeds a dataset is made and its first n columns used for every
    n (the seeds a study would add), so the curve is smooth in n. n whose smallest attainable p
    (:func:`~ablate.stats.exact.min_p`) is not below alpha are skipped (power 0). Every n up to
    SCAN_UP_TO is tried (discreteness makes the power of exact tests jump there); above, the
    power is taken as increasing in n and n found by doubling and bisection. None: over the cap.

    The answer is kept in a content-addressed cache on disk (:mod:`ablate.stats.cache`: the
    inputs, the package's source and the libraries' versions are its key), so a report rewritten
    from the same results reads it instead of simulating again; it is the simulated answer bit for bit.
    """
    return cached("power.seeds_for_power", _seeds_for_power, **_power_inputs(test, model, alpha, target, max_seeds,
                                                                             reps, seed))


def _power_inputs(test: str, model, alpha: float, target: float, max_seeds: int, reps: int, seed: int) -> dict:
    """:func:`seeds_for_power`'s inputs, checked, as the cache's key takes them."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; valid: {', '.join(TESTS)}")
    if max_seeds < 2:
        raise ValueError(f"max_seeds must be at least 2, got {max_seeds}")
    return {"test": test, "model": model, "alpha": alpha, "target": target, "max_seeds": max_seeds, "reps": reps,
            "seed": seed}


def seeds_for_power_many(calls: list[dict], processes: int | None = None) -> list[int | None]:
    """:func:`seeds_for_power` of each keyword set in ``calls``, in order; the answers the cache does
    not hold are simulated side by side in forked processes (one a core, at most ``processes``),
    each the same seeded simulation as alone, so the answers equal the one-by-one answers bit for
    bit (:func:`ablate.config.forks.fork_map`: one by one here when a fork is not safe)."""
    from ..config.forks import run_together

    return run_together([seeds_for_power_pending(calls)], processes)[0]


def seeds_for_power_pending(calls: list[dict]):
    """:func:`seeds_for_power_many` as work not yet run (:class:`ablate.config.forks.Pending`), for a
    caller that runs it beside other work; its finish returns the answers in order."""
    import inspect

    from .cache import pending_many

    full = []
    for c in calls:  # seeds_for_power's own defaults: the same keys as a call of it
        bound = inspect.signature(seeds_for_power).bind(**c)
        bound.apply_defaults()
        full.append(_power_inputs(**bound.arguments))
    return pending_many("power.seeds_for_power", _seeds_for_power, full)


def _seeds_for_power(test: str, model, alpha: float, target: float, max_seeds: int, reps: int,
                     seed: int) -> int | None:
    """:func:`seeds_for_power` computed (the simulation itself, without the cache)."""
    a, b = model.sample(np.random.default_rng(seed), reps, max_seeds)
    exact = {"perm": "perm", "signflip": "signflip", "boschloo": "boschloo"}.get(test)

    def reaches(n: int) -> bool:
        if exact and min_p(exact, n) >= alpha:
            return False
        return _reaches(test, a[:, :n], b[:, :n], alpha, model, target)

    for n in range(2, min(SCAN_UP_TO, max_seeds) + 1):
        if reaches(n):
            return n
    lo, hi = SCAN_UP_TO, SCAN_UP_TO  # reaches(lo) is False
    while hi < max_seeds:
        hi = min(max_seeds, 2 * hi)
        if reaches(hi):
            break
        lo = hi
    else:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi
