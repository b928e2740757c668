"""Bootstrap intervals of mIoU over validation images and seeds, paired across cells (issue 28,
item 7).

A cell's mIoU is the mean over its seeds of each seed's dataset mIoU, the mIoU of the summed
per-image counts (mean over classes with a non-zero union of ΣI_c / ΣU_c). Two sources of
variation stand behind it: which validation images were drawn (shared by every seed and every
cell, since they are scored on one fixed set) and which training seeds were run. A resample here
draws both at once (a two-way bootstrap): n_images image indices with replacement and n_seeds
seed indices with replacement, the same image draw for every seed. For a difference between two
cells the *same* image draw and the *same* seed draw go to both cells (paired: the cells share
seeds and images), so what is common to both (hard images, lucky seeds) cancels in Δ.
The interval is the percentile interval of the resampled statistic (Efron & Tibshirani 1993,
ch. 13). Resampling both factors of a crossed design tends to over-count the interaction's share
of the variance, which makes the interval a little conservative (McCullagh 2000); with very few
seeds (2-4) the seed part is underestimated instead (the bootstrap's (n-1)/n and the few distinct
resamples), so read such intervals as covering image sampling mostly.

Weights, not index lists: a resample is a multinomial count vector, and the summed counts of all
resamples are one matrix product (weights @ counts). Seeded and reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

Counts = Sequence[tuple]  # over seeds: (intersections, unions), each (n_images, n_classes)


@dataclass(frozen=True)
class ImageBoot:
    point: float  # the statistic on the full data (mean over seeds of the seeds' mIoU, or its Δ)
    lo: float
    hi: float
    n_seeds: int
    n_images: int
    n_boot: int
    level: float
    seeds_resampled: bool
    reps: np.ndarray = field(repr=False, compare=False)  # the n_boot resampled statistics


def _stack(counts: Counts, name: str) -> tuple[np.ndarray, np.ndarray]:
    if len(counts) == 0:
        raise ValueError(f"{name}: no seeds with image counts")
    i = np.stack([np.asarray(c[0], dtype=float) for c in counts])
    u = np.stack([np.asarray(c[1], dtype=float) for c in counts])
    if i.shape != u.shape or i.ndim != 3:
        raise ValueError(f"{name}: need (intersections, unions) of one (n_images, n_classes) shape per seed, "
                         f"got {i.shape} and {u.shape}")
    return i, u


def _seed_miou(i: np.ndarray, u: np.ndarray) -> np.ndarray:
    """mIoU per (..., seed) from summed counts (..., seed, class); classes with zero union left out."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(u > 0, i / np.where(u > 0, u, 1), np.nan)
        return np.nanmean(iou, axis=-1)


def _draws(n_seeds: int, n_images: int, n_boot: int, seed: int, resample_seeds: bool):
    """(seed weights (n_boot, n_seeds), image weights (n_boot, n_images)): multinomial counts."""
    rng = np.random.default_rng(seed)
    if resample_seeds:
        v = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot).astype(float)
    else:
        v = np.ones((n_boot, n_seeds))
    w = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_boot).astype(float)
    return v, w


def _weighted(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_n w[b, n] x[s, n, c] for every (b, s, c), as one matrix product."""
    s, n, c = x.shape
    return (w @ x.transpose(1, 0, 2).reshape(n, s * c)).reshape(len(w), s, c)


def _per_seed(i, u, w) -> np.ndarray:
    """Resampled mIoU per (resample, seed): the image-weighted summed counts' mIoU."""
    return _seed_miou(_weighted(w, i), _weighted(w, u))


def _seed_mean(v: np.ndarray, per_seed: np.ndarray) -> np.ndarray:
    """Seed-weighted mean over seeds (weights sum to n_seeds), seeds with an undefined value left out."""
    with np.errstate(invalid="ignore"):
        return np.nansum(v * per_seed, axis=1) / np.sum(v * np.isfinite(per_seed), axis=1)


def _interval(point, reps, n_seeds, n_images, n_boot, level, resample_seeds) -> ImageBoot:
    ok = reps[np.isfinite(reps)]
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2]) if ok.size else (math.nan, math.nan)
    return ImageBoot(float(point), float(lo), float(hi), n_seeds, n_images, n_boot, level, resample_seeds, reps)


def cell_bootstrap(counts: Counts, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                   resample_seeds: bool = True) -> ImageBoot:
    """One cell's mIoU (mean over seeds of each seed's mIoU of summed counts) with a percentile
    interval from resampling images and, when ``resample_seeds``, seeds (see the module
    docstring; Efron & Tibshirani 1993)."""
    i, u = _stack(counts, "cell")
    s, n = i.shape[0], i.shape[1]
    if n == 0:
        return ImageBoot(math.nan, math.nan, math.nan, s, 0, n_boot, level, resample_seeds, np.array([]))
    point = float(np.nanmean(_seed_miou(i.sum(1), u.sum(1))))
    v, w = _draws(s, n, n_boot, seed, resample_seeds)
    return _interval(point, _seed_mean(v, _per_seed(i, u, w)), s, n, n_boot, level, resample_seeds)


def paired_bootstrap_delta(counts_a: Counts, counts_b: Counts, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95, resample_seeds: bool = True) -> ImageBoot:
    """Δ = mIoU_a - mIoU_b (each the mean over seeds of the seeds' mIoU) with a paired percentile
    interval.

    ``counts_a[k]`` and ``counts_b[k]`` must come from the same seed k and the same validation
    images in the same order. Each resample draws one image weight vector (multinomial, n_images
    draws) and, when ``resample_seeds``, one seed weight vector (multinomial, n_seeds draws), and
    applies both to both cells: Δ*_b = Σ_k v_bk (mIoU*_a,k - mIoU*_b,k) / n_seeds with mIoU*_x,k
    the mIoU of w_b @ counts. Interval: the (1∓level)/2 quantiles of Δ* (Efron & Tibshirani 1993).
    """
    ia, ua = _stack(counts_a, "cell a")
    ib, ub = _stack(counts_b, "cell b")
    if ia.shape != ib.shape:
        raise ValueError(f"paired bootstrap needs the same seeds and images in both cells: (seeds, images, classes) "
                         f"{ia.shape} vs {ib.shape}")
    s, n = ia.shape[0], ia.shape[1]
    if n == 0:
        return ImageBoot(math.nan, math.nan, math.nan, s, 0, n_boot, level, resample_seeds, np.array([]))
    point = float(np.nanmean(_seed_miou(ia.sum(1), ua.sum(1)) - _seed_miou(ib.sum(1), ub.sum(1))))
    v, w = _draws(s, n, n_boot, seed, resample_seeds)
    reps = _seed_mean(v, _per_seed(ia, ua, w) - _per_seed(ib, ub, w))
    return _interval(point, reps, s, n, n_boot, level, resample_seeds)
