"""Rank agreement between two orderings of the same cells: Kendall's tau-b and a bootstrap over seeds.

:func:`kendall_tau_b` is Kendall's tau with the tie correction of Kendall (1945), the form
``scipy.stats.kendalltau`` computes by default: over the n(n-1)/2 pairs of cells,
``(concordant - discordant) / sqrt((n0 - n1) (n0 - n2))`` where n0 is the number of pairs and
n1, n2 the pairs tied on the first and on the second ordering. It is vectorised over leading
axes (one tau per row of a batch of orderings), O(n^2) per row, which is fine for the tens of
cells a study has. A row in which either side is all ties has no tau (nan).

:func:`bootstrap_tau` is the interval the transfer check reports: each side's cells come with
their seeds' values; a replicate resamples the seeds *within each cell* with replacement on
both sides independently (the two studies' seeds are different runs), takes each cell's mean
and computes tau-b between the two orderings of cell means. The interval is the percentile
interval of the replicates that have a tau. It measures how much the ordering of cell means
moves with the seeds actually run; it says nothing about other backbones, schedules or data.
With few seeds a cell (2 or 3) the resampled means vary less than new seeds would (the
bootstrap's (n - 1) / n), so the interval is on the narrow side; tests/stats/test_rank.py
measures its coverage on a simulated pair of studies.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def kendall_tau_b(x, y) -> np.ndarray | float:
    """Kendall's tau-b of ``x`` and ``y`` along the last axis (broadcast over the leading ones);
    a float for 1-D input. nan where a row has fewer than two cells or either side is all ties."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x, y = np.broadcast_arrays(x, y)
    n = x.shape[-1]
    if n < 2:
        out = np.full(x.shape[:-1], np.nan)
        return float(out) if out.ndim == 0 else out
    i, j = np.triu_indices(n, k=1)
    sx = np.sign(x[..., i] - x[..., j])
    sy = np.sign(y[..., i] - y[..., j])
    s = (sx * sy).sum(axis=-1)
    untied_x = np.count_nonzero(sx, axis=-1)  # n0 - n1
    untied_y = np.count_nonzero(sy, axis=-1)  # n0 - n2
    denom = np.sqrt(untied_x.astype(float) * untied_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denom > 0, s / np.where(denom > 0, denom, 1.0), np.nan)
    return float(tau) if tau.ndim == 0 else tau


def _resampled_means(cells: Sequence[Sequence[float]], replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, cells): each cell's mean over its seeds drawn with replacement."""
    out = np.empty((replicates, len(cells)))
    for c, values in enumerate(cells):
        v = np.asarray(values, dtype=float)
        idx = rng.integers(0, v.size, size=(replicates, v.size))
        out[:, c] = v[idx].mean(axis=1)
    return out


def bootstrap_tau(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], replicates: int = 2000,
                  level: float = 0.95, seed: int = 0) -> dict:
    """Kendall's tau-b between the cell means of ``a`` and ``b`` (cell i of each: the values of its
    seeds) with a percentile bootstrap interval that resamples seeds within each cell on both sides.

    Returns ``tau`` (of the observed means), ``low``/``high`` (the interval; nan when no replicate
    has a tau), ``level``, ``replicates``, ``defined`` (replicates with a tau) and ``n`` (cells).
    Seeded: the same input and ``seed`` give the same interval."""
    if len(a) != len(b):
        raise ValueError(f"both sides need the same cells, got {len(a)} and {len(b)}")
    if any(len(v) == 0 for v in list(a) + list(b)):
        raise ValueError("every cell needs at least one seed's value on both sides")
    if not 0 < level < 1 or replicates < 1:
        raise ValueError(f"level in (0, 1) and replicates >= 1, got {level}, {replicates}")
    mean_a = np.array([np.mean(v) for v in a], dtype=float)
    mean_b = np.array([np.mean(v) for v in b], dtype=float)
    tau = kendall_tau_b(mean_a, mean_b) if len(a) >= 2 else math.nan
    rng = np.random.default_rng(seed)
    taus = kendall_tau_b(_resampled_means(a, replicates, rng), _resampled_means(b, replicates, rng)) \
        if len(a) >= 2 else np.full(replicates, np.nan)
    ok = taus[~np.isnan(taus)]
    tail = (1 - level) / 2
    low, high = (np.quantile(ok, [tail, 1 - tail]) if ok.size else (math.nan, math.nan))
    return {"tau": float(tau), "low": float(low), "high": float(high), "level": level,
            "replicates": replicates, "defined": int(ok.size), "n": len(a)}


# Above this noise-to-spacing ratio the seeds' noise reorders cell means often enough that tau is
# pulled toward 0 and the interval misses the tau of the true means (tests/stats/test_rank.py: a
# 90% interval covered 0.93 at ratio 0.58 and 0.45 near 1.2, with 10 cells of 3 seeds).
NOISY_SPACING = 0.6


def noise_to_spacing(cells: Sequence[Sequence[float]]) -> float:
    """The mean standard error of a cell's mean (its seeds' sd / sqrt(n), cells of two or more
    seeds) over the median gap between neighbouring cell means, sorted: how far seed noise can
    move a cell against the spacing of the ordering. nan without a cell of two seeds or without
    two cells; inf when the median gap is 0 and there is noise."""
    se = [np.std(v, ddof=1) / math.sqrt(len(v)) for v in cells if len(v) >= 2]
    means = np.sort([np.mean(v) for v in cells])
    if not se or means.size < 2:
        return math.nan
    gap = float(np.median(np.diff(means)))
    noise = float(np.mean(se))
    if gap == 0:
        return 0.0 if noise == 0 else math.inf
    return noise / gap
