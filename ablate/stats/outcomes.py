"""What a seed's outcome is: learned the task's cue, or stayed at the floor.

On the synthetic tasks a seed either learns the cue (mIoU near the task's ceiling) or stays near
the no-attention floor; few seeds land between. Such outcomes are two-valued, and the tests that
fit them differ from those for a unimodal spread (:mod:`ablate.stats.decide` chooses). This
module holds the classification only:

- :func:`learn_threshold` — the mIoU at or above which a seed counts as learned: a declared
  ``learned_above:`` value, or half-way from the floor cell's mean to the best seed of the group
  (none when no seed is :data:`MIN_GAP` above the floor: then nothing learned and nothing is
  classified); without a floor cell, the middle of a gap of at least MIN_GAP between the seeds;
- :func:`learned` / :func:`outcome_kind` — per seed and per comparison;
- :func:`clopper_pearson` — the exact binomial interval of "k of n learned" (Clopper & Pearson
  1934, through ``scipy.stats.binomtest``).

Values are fractions (0-1), like the storage's mIoU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from scipy import stats as _st

MIN_GAP = 0.10  # 10 mIoU points: a seed must be at least this far above the floor mean to count as learned

KINDS = ("two_valued", "learned", "floor", "unclassified")


@dataclass(frozen=True)
class Threshold:
    """The learned/floor boundary of a group of cells (one task)."""
    value: float | None  # learned at or above this (fraction); None: no classification
    source: str  # how it was set, in words (for the report)
    floor: float | None = None  # the floor cell's mean, when one set it

    def text(self) -> str:
        return self.source if self.value is None else f"learned ≥ {100 * self.value:.1f} ({self.source})"


def learn_threshold(values: Mapping[str, Mapping[int, float]], floor_key: str | None = None,
                    declared: float | None = None) -> Threshold:
    """The learned threshold for the cells in ``values`` ({cell key: {seed: value}}).

    ``declared`` (a fraction, the study's ``learned_above:``) wins. Otherwise the floor cell
    (``floor_key``: the no-attention reference of the same task) sets it: with f its mean over
    seeds and top the best single seed of the group, threshold = f + (top - f)/2 when
    top ≥ f + MIN_GAP; below that no seed learned anything the floor lacks, and there is no
    classification (a task every cell solves alike, or one nobody learns at this budget).
    Without a floor cell with values, :func:`gap_threshold` looks for two clusters.
    """
    if declared is not None:
        return Threshold(float(declared), "declared learned_above")
    floor = values.get(floor_key) if floor_key is not None else None
    if not floor:
        return gap_threshold(values)
    f = sum(floor.values()) / len(floor)
    top = max((v for cell in values.values() for v in cell.values() if math.isfinite(v)), default=f)
    if top < f + MIN_GAP:  # nobody learned: the task is not a learn-or-not task at this budget
        return Threshold(None, f"no classification (no seed {100 * MIN_GAP:.0f} points above the floor "
                               f"mean {100 * f:.1f})", f)
    gap = (top - f) / 2
    return Threshold(f + gap, f"floor mean {100 * f:.1f} + {100 * gap:.1f}", f)


def gap_threshold(values: Mapping[str, Mapping[int, float]]) -> Threshold:
    """Without a floor cell: the middle of the widest gap between the group's sorted seed values,
    when that gap is at least :data:`MIN_GAP` (the seeds fall in two clusters: some learned, some
    not); otherwise no classification. The rule reads the pooled values only, so swapping seeds
    between two cells of the group never changes it (a permutation test chosen by it keeps its
    level)."""
    vals = sorted(v for cell in values.values() for v in cell.values() if math.isfinite(v))
    if len(vals) < 2:
        return Threshold(None, "no classification (no floor cell and no learned_above)")
    gaps = [(b - a, (a + b) / 2) for a, b in zip(vals, vals[1:])]
    width, mid = max(gaps)
    if width < MIN_GAP:
        return Threshold(None, f"no classification (no floor cell, no learned_above, and no gap of "
                               f"{100 * MIN_GAP:.0f} points between the seeds)")
    return Threshold(mid, f"middle of a {100 * width:.1f}-point gap between the seeds (no floor cell)")


def learned(vals: Iterable[float], threshold: Threshold) -> list[bool] | None:
    """Per value, learned (≥ threshold) or not; None when there is no threshold."""
    if threshold.value is None:
        return None
    return [v >= threshold.value for v in vals]


def count_learned(vals: Sequence[float], threshold: Threshold) -> tuple[int, int] | None:
    """(k learned, n seeds); None when there is no threshold."""
    flags = learned(vals, threshold)
    return None if flags is None else (sum(flags), len(flags))


def outcome_kind(a: Sequence[float], b: Sequence[float], threshold: Threshold) -> str:
    """How the seeds of two cells fall: ``two_valued`` (some seed learned and some did not),
    ``learned`` (every seed of both learned), ``floor`` (none did), ``unclassified`` (no threshold).

    The kind depends only on the pooled values of both cells, not on which cell each came from,
    so a permutation test chosen because of it keeps its level (the selection event is invariant
    under the relabelings the test averages over)."""
    flags = learned(list(a) + list(b), threshold)
    if flags is None:
        return "unclassified"
    if all(flags):
        return "learned"
    if not any(flags):
        return "floor"
    return "two_valued"


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes in n (Clopper & Pearson 1934)."""
    if n == 0:
        return (0.0, 1.0)
    ci = _st.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def k_of_n_text(k: int, n: int, level: float = 0.95) -> str:
    """"3/5 learned [0.15, 0.95]" (Clopper-Pearson interval of the learn rate)."""
    lo, hi = clopper_pearson(k, n, level)
    return f"{k}/{n} learned [{lo:.2f}, {hi:.2f}]"
