"""Sequential seeding: the looks a pair can have, the per-look level that keeps the chance of any
wrong call at or below alpha, the verdicts of one look and the seeds each cell runs next.

The runner calls :func:`sequential_look` after each finished trial and :func:`verdict_alpha` /
:func:`look_counts` when it plans a study; the report judges at the same :func:`verdict_alpha`.
Everything here is re-exported by :mod:`ablate.stats`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

from .ttests import compare
from .verdicts import decided, judge_family


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
