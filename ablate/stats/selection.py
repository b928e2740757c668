"""The winner's curse of a search, simulated at the decision level: select the best points on the
search seeds, then test them against the baseline either on those same seeds (what "best first"
over a search's own runs amounts to) or on fresh seeds (what a point search's confirmation does,
``ablate/run/search.py``).

Under the null every point equals the baseline: a seed's value is a shared per-seed offset (the
design is paired: seed s of every cell shares the data order and initialisation) plus the cell's
own noise. :func:`selection_rates` draws ``reps`` searches at once (numpy, seeded) and decides
each comparison the way :func:`ablate.stats.decide.decide_family` decides unimodal outcomes
(every seed learned, or no floor to classify against): the paired t test over the shared seeds,
p-values adjusted within the family of the ``top`` comparisons (Holm by default), "better" when the
adjusted p is below alpha and the mean difference is positive (the engine switches to Yuen's trimmed
t, also a level-alpha test, where a cell has an outlier and five or more seeds; not modelled here). It returns the family-wise rate of
at least one false "better" for both ways of testing, with its Monte-Carlo standard error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class SelectionRates:
    reps: int
    on_search_seeds: float  # family-wise false "better" rate, top points tested on the search seeds
    on_fresh_seeds: float  # the same, tested on fresh seeds (the confirmation)
    mean_inflation: float  # the selected points' search mean minus their true mean, in the values' unit

    def mc_se(self, rate: float) -> float:
        """The Monte-Carlo standard error of a rate estimated from ``reps`` repetitions."""
        return float(np.sqrt(max(rate * (1 - rate), 1e-12) / self.reps))


def adjust_rows(p: np.ndarray, correction: str = "holm") -> np.ndarray:
    """:func:`ablate.stats.ttests.adjust` along the last axis of ``p`` (no nan), vectorised."""
    m = p.shape[-1]
    if correction == "none":
        return p
    if correction == "bonferroni":
        return np.minimum(1.0, m * p)
    if correction != "holm":
        raise ValueError(f"adjust_rows supports none, bonferroni and holm, not {correction!r}")
    order = np.argsort(p, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=-1)
    scaled = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * sorted_p), axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, scaled, axis=-1)
    return out


def paired_better(a: np.ndarray, b: np.ndarray, alpha: float, correction: str = "holm") -> np.ndarray:
    """For values ``a`` (..., m, n) of m cells and ``b`` (..., 1 or m, n) of the baseline on the same
    n seeds: whether each comparison is called "better" (paired t, two-sided, adjusted over m)."""
    d = a - b
    n = d.shape[-1]
    mean, sd = d.mean(axis=-1), d.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = np.where(np.isfinite(t), 2 * sps.t.sf(np.abs(t), n - 1), 1.0)
    return (adjust_rows(p, correction) < alpha) & (mean > 0)


def selection_rates(n_points: int = 20, top: int = 3, search_seeds: int = 3, fresh_seeds: int = 5,
                    reps: int = 4000, alpha: float = 0.05, correction: str = "holm", sd: float = 0.01,
                    seed_sd: float = 0.02, seed: int = 0) -> SelectionRates:
    """Simulate ``reps`` null searches (see the module docstring) and return both rates."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, seed_sd, (reps, 1, search_seeds))
    points = shared + rng.normal(0, sd, (reps, n_points, search_seeds))
    base = shared + rng.normal(0, sd, (reps, 1, search_seeds))
    chosen = np.argsort(-points.mean(axis=-1), axis=-1, kind="stable")[:, :top]
    best = np.take_along_axis(points, chosen[..., None], axis=1)
    on_search = paired_better(best, base, alpha, correction).any(axis=-1)
    fresh_shared = rng.normal(0, seed_sd, (reps, 1, fresh_seeds))  # new seeds: new offsets, new noise
    fresh = fresh_shared + rng.normal(0, sd, (reps, top, fresh_seeds))
    fresh_base = fresh_shared + rng.normal(0, sd, (reps, 1, fresh_seeds))
    on_fresh = paired_better(fresh, fresh_base, alpha, correction).any(axis=-1)
    inflation = float((best - shared).mean())
    return SelectionRates(reps, float(on_search.mean()), float(on_fresh.mean()), inflation)
