"""Sequential seeding with alpha spending: the looks a pair can have, the level each look tests
at, the verdicts of a look, the seeds each cell runs next, and the replay of a finished study.

A study with ``seeds: {start, max, step}`` runs ``start`` seeds a cell, then gives the pairs
(cell, baseline) still undecided ``step`` more at each look, up to ``max``. Look k is at
n_k = :func:`look_counts` seeds, information fraction t_k = n_k / max. A pair is tested at look k
against the nominal level of the Lan-DeMets boundaries (:mod:`ablate.stats.spending`) for the
level currently allotted to it; across the pairs of a family the allotment is Holm's, as a
graphical procedure for group-sequential designs (Maurer & Bretz 2013): with j hypotheses of the
family not yet rejected each holds α/j, and a rejection passes its level on to the rest, which
are re-tested at the same look. A pair also stops, without a rejection, when TOST puts Δ inside
±margin at the look's equivalence level, or (``precision``) when its interval is narrower than
the margin. Stops without a rejection never raise the chance of a wrong better/worse call: they
only remove chances to reject and never pass a level on.

Every look is recomputed from the stored per-seed values (in seed order) alone: look k sees the
first n_k seeds of the order, so the runner (:func:`sequential_look`, one call per look) and the
report (:func:`replay`) reach the same decisions. Everything here is re-exported by
:mod:`ablate.stats`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, NamedTuple, Sequence

import numpy as np

from .spending import KINDS, nominal_levels, spent, t_levels
from .ttests import compare, tost

PValue = Callable[[dict, dict], float]
OPEN, REJECTED, STOPPED, NO_TEST, WAITING = 0, 1, 2, 3, 4  # states of a pair in :func:`spend_looks`


def look_counts(start: int, max_seeds: int, step: int = 1) -> list[int]:
    """The seeds a pair can have when it is looked at: start, start + step, ... and max_seeds.

    :func:`next_seeds` grows a pair by ``step`` or aligns it to its partner's count, so every
    count stays on this grid (a failed trial counts as done: its look stays on the grid with one
    value fewer)."""
    if not 1 <= start <= max_seeds or step < 1:
        raise ValueError(f"need 1 <= start <= max_seeds and step >= 1; got start={start}, max_seeds={max_seeds}, "
                         f"step={step}")
    return sorted(set(range(start, max_seeds, step)) | {max_seeds})


def look_fractions(start: int, max_seeds: int, step: int = 1) -> tuple:
    """Information fractions t_k = n_k / max_seeds of the :func:`look_counts`."""
    return tuple(n / max_seeds for n in look_counts(start, max_seeds, step))


def look_alpha(alpha: float, start: int, max_seeds: int, step: int = 1) -> float:
    """The former rule, kept for comparison: alpha / K at every one of the K possible looks
    (Bonferroni over looks). It keeps the error but wastes power; :func:`look_levels` spends it."""
    return alpha / len(look_counts(start, max_seeds, step))


def look_levels(alpha: float, start: int, max_seeds: int, step: int = 1, kind: str = "obf") -> tuple:
    """Nominal two-sided level of each look for one hypothesis at level ``alpha``: the
    :func:`ablate.stats.spending.nominal_levels` of :func:`look_fractions` (cached)."""
    return nominal_levels(look_fractions(start, max_seeds, step), alpha, kind)


def verdict_alpha(alpha: float, sequential: Mapping | None = None) -> float:
    """``alpha`` for a fixed set of seeds; for sequential seeds (``{"start", "max", "step"}``, and
    optionally ``"spending"``: obf | pocock) the t-calibrated level of the last look for one
    comparison (:func:`ablate.stats.spending.t_levels`). A sequential study's verdicts are those of :func:`replay`, whose levels depend
    on the look and on the family's rejections; this single number is only what the last look
    tests a lone comparison at."""
    if not sequential:
        return alpha
    counts = look_counts(sequential["start"], sequential["max"], sequential.get("step", 1))
    return t_levels(counts, alpha, sequential.get("spending", "obf"))[-1]


def spend_looks(n_looks: int, m: int, level: Callable[[int], np.ndarray], p_at: Callable, stop_at: Callable | None = None,
                avail_at: Callable | None = None, reps: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The group-sequential Holm procedure over one family of m hypotheses, vectorised over ``reps``.

    ``level(j)``: the nominal level of each look (array of n_looks) for a hypothesis holding its
    share when j of the family are not rejected (Holm: the levels of α/j). ``p_at(k, need)``:
    the (reps, m) p-values of look k (only where ``need``; nan = no test). ``stop_at(k, need)``:
    (reps, m) bool, stop without rejection (equivalence, precision). ``avail_at(k)``: (reps, m)
    bool, the pair has its look-k seeds (default all). At each look, while the smallest p of the
    open hypotheses is ≤ the level for the current j, it is rejected and j drops by one
    (Maurer & Bretz 2013: the freed level is re-tested at the same look); then the other stops.
    A hypothesis with no test at a look it reached is given up; one missing its seeds waits.
    Returns (state, look, nominal): each hypothesis's state (OPEN, REJECTED, STOPPED, NO_TEST,
    WAITING), the look it left at (-1 if none) and the level its p was last compared with.
    """
    state = np.full((reps, m), OPEN, dtype=np.int8)
    look = np.full((reps, m), -1, dtype=int)
    nominal = np.full((reps, m), np.nan)
    table, filled = np.full((m + 1, n_looks), -1.0), set()  # row j: the levels for a share of α/j; row 0 tests nothing
    rows = np.arange(reps)
    for k in range(n_looks):
        is_open = state == OPEN
        if avail_at is not None:
            state[is_open & ~avail_at(k)] = WAITING
            is_open = state == OPEN
        if not is_open.any():
            break
        p = np.where(is_open, p_at(k, is_open), np.inf)
        gone = is_open & np.isnan(p)
        state[gone], look[gone] = NO_TEST, k
        p[gone] = np.inf
        while True:
            j = m - (state == REJECTED).sum(1)
            for v in set(np.unique(j[j > 0]).tolist()) - filled:
                table[v] = level(v)
                filled.add(v)
            thr = table[j, k]
            i = p.argmin(1)
            hit = p[rows, i] <= thr
            if not hit.any():
                break
            state[rows[hit], i[hit]], look[rows[hit], i[hit]] = REJECTED, k
            nominal[rows[hit], i[hit]] = thr[hit]
            p[rows[hit], i[hit]] = np.inf
        tested = is_open & (state == OPEN)
        nominal[tested] = np.broadcast_to(thr[:, None], tested.shape)[tested]
        if stop_at is not None:
            still = state == OPEN
            if still.any():
                s = still & stop_at(k, still)
                state[s], look[s] = STOPPED, k
    return state, look, nominal


class Decision(NamedTuple):
    """What sequential seeding decided for one pair, at which look, on what evidence."""
    look: int | None  # index into look_counts of the look that decided it; None while undecided
    n: int  # seeds a cell at that look (the last look it was judged at when undecided; 0 if none)
    label: str  # better / worse / equivalent / undecided
    p: float  # the difference p-value at that look (nan: no test)
    nominal: float  # the nominal level it was compared with there
    stop: str = ""  # rejected, equivalent, precise, no test, max; "" while it still takes seeds
    delta: float = math.nan  # Δ = mean(cell) - mean(baseline) at that look


@dataclass(frozen=True)
class Look:
    """One look of sequential seeding: each pair's decision, whether it takes no more seeds, and the
    seeds each cell runs next ({} when the study is finished)."""
    alpha: float  # nominal level the pairs still open were tested at in this look
    decisions: dict  # (cell, baseline) -> Decision
    decided: dict  # (cell, baseline) -> bool: takes no more seeds
    new: dict  # cell -> seeds to run next
    index: int = -1  # look index reached (into look_counts); -1 before the first
    n: int = 0  # seeds a cell at that look
    spent: float = 0.0  # α(t) of the family level spent by that look


def _pair_data(values, done, pair, seeds) -> tuple[dict, dict] | None:
    """The pair's {seed: value} over ``seeds``, or None when a cell has not finished them all."""
    a, b = pair
    if not (set(seeds) <= set(done.get(a, ())) and set(seeds) <= set(done.get(b, ()))):
        return None
    va, vb = values.get(a, {}), values.get(b, {})
    return {s: va[s] for s in seeds if s in va}, {s: vb[s] for s in seeds if s in vb}


def _default_p(a: dict, b: dict) -> float:
    """Paired t over the shared seeds (Welch when fewer than 2 are shared): ``compare(a, b, shared=True).p``."""
    return compare(a, b, shared=True).p if len(a) >= 2 and len(b) >= 2 else math.nan


@dataclass
class _Family:
    """One family's inputs to :func:`spend_looks`, for one study state (reps = 1)."""
    pairs: list
    data: list  # [look][pair] -> (a, b) or None
    alpha: float
    kind: str
    correction: str
    fractions: tuple
    margin: float | None
    precision: bool
    pvalue: PValue
    counts: tuple = ()
    cache: dict = field(default_factory=dict)

    def level(self, j: int) -> tuple:
        """The levels of a hypothesis when j of the family are unrejected: the t-calibrated levels
        (:func:`ablate.stats.spending.t_levels`) for the default t test, else the boundaries' own."""
        m = len(self.pairs)
        share = {"holm": self.alpha / j, "bonferroni": self.alpha / m, "none": self.alpha}[self.correction]
        if self.pvalue is _default_p:
            return t_levels(self.counts, share, self.kind)
        return nominal_levels(self.fractions, share, self.kind)

    def p(self, k: int, i: int) -> float:
        if (k, i) not in self.cache:
            a, b = self.data[k][i]
            self.cache[(k, i)] = float(self.pvalue(a, b))
        return self.cache[(k, i)]

    def p_at(self, k, need):
        return np.array([[self.p(k, i) if need[0, i] else np.nan for i in range(len(self.pairs))]])

    def avail_at(self, k):
        return np.array([[d is not None for d in self.data[k]]])

    def stop_at(self, k, need):
        return np.array([[bool(need[0, i]) and self.stops(k, i) != "" for i in range(len(self.pairs))]])

    def stops(self, k: int, i: int) -> str:
        """equivalent / precise / "" for pair i at look k. Equivalence: TOST p ≤ half the t-calibrated
        two-sided level at 2α/m (:func:`ablate.stats.spending.t_levels`), i.e. each one-sided test
        of TOST spends the pair's Bonferroni share α/m over the looks; precise: the interval at
        1 - the t-calibrated level for α/m is narrower than the margin."""
        if self.margin is None or not self.margin > 0:
            return ""
        a, b = self.data[k][i]
        if len(a) < 2 or len(b) < 2:
            return ""
        d, m = compare(a, b, shared=True), len(self.pairs)
        if tost(d, self.margin).p <= t_levels(self.counts, 2 * self.alpha / m, self.kind)[k] / 2:
            return "equivalent"
        hw = d.half_width_at(1 - t_levels(self.counts, self.alpha / m, self.kind)[k])
        return "precise" if self.precision and math.isfinite(hw) and hw < self.margin else ""


def _families(pairs: Sequence[tuple], families: Mapping | None) -> list[list]:
    groups: dict = {}
    for pair in pairs:
        groups.setdefault(None if families is None else families.get(pair, pair), []).append(pair)
    return list(groups.values())


def _decide_family(fam: _Family, counts: list[int]) -> tuple[dict, int]:
    """Run :func:`spend_looks` on one family; its pairs' :class:`Decision` and the last look any pair reached."""
    state, look, nominal = spend_looks(len(counts), len(fam.pairs), fam.level, fam.p_at, fam.stop_at, fam.avail_at)
    reached = max((k for k in range(len(counts)) if any(d is not None for d in fam.data[k])), default=-1)
    out = {}
    for i, pair in enumerate(fam.pairs):
        s, k = int(state[0, i]), int(look[0, i])
        last = k if k >= 0 else max((j for j in range(len(counts)) if fam.data[j][i] is not None), default=-1)
        if last < 0:
            out[pair] = Decision(None, 0, "undecided", math.nan, math.nan)
            continue
        a, b = fam.data[last][i]
        delta = compare(a, b, shared=True).mean if a and b else math.nan
        p = fam.cache.get((last, i), math.nan)
        if s == REJECTED:
            label, stop = ("better" if delta > 0 else "worse"), "rejected"
        elif s == STOPPED:
            label, stop = ("equivalent", "equivalent") if fam.stops(last, i) == "equivalent" else ("undecided", "precise")
        elif s == NO_TEST:
            label, stop = "undecided", "no test"
        else:
            label, stop = "undecided", ("max" if last == len(counts) - 1 else "")
        decided_at = last if s in (REJECTED, STOPPED) else None
        out[pair] = Decision(decided_at, counts[last], label, p, float(nominal[0, i]), stop, delta)
    return out, reached


def decide(values: Mapping[Hashable, Mapping[int, float]], done: Mapping[Hashable, Sequence[int]],
           pairs: Sequence[tuple], margin: float | None, alpha: float, correction: str, start: int, max_seeds: int,
           step: int = 1, seed_order: Sequence[int] | None = None, pvalue: PValue | None = None, kind: str = "obf",
           precision: bool = True, families: Mapping | None = None) -> tuple[dict, int]:
    """Every pair's :class:`Decision` from the looks its seeds reached (see the module docstring),
    and the last look index any pair reached (-1: none yet). Look k uses the first n_k seeds of
    ``seed_order`` that both cells have finished (``done``, failed ones included); ``pvalue``
    maps the two cells' {seed: value} to the pair's p (default: paired t over the shared seeds,
    ``compare(a, b, shared=True).p``); ``families``: pair -> family key (default one family)."""
    if correction not in ("holm", "bonferroni", "none"):
        raise ValueError(f"sequential seeds support the corrections holm, bonferroni and none; got {correction!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown spending function {kind!r}; valid: {', '.join(KINDS)}")
    counts = look_counts(start, max_seeds, step)
    order = list(range(max_seeds)) if seed_order is None else list(seed_order)
    out, reached = {}, -1
    for group in _families(pairs, families):
        data = [[_pair_data(values, done, pair, order[:n]) for pair in group] for n in counts]
        fam = _Family(group, data, alpha, kind, correction, look_fractions(start, max_seeds, step), margin, precision,
                      pvalue or _default_p, tuple(counts))
        got, last = _decide_family(fam, counts)
        out.update(got)
        reached = max(reached, last)
    return out, reached


def sequential_look(values: Mapping[Hashable, Mapping[int, float]], done: Mapping[Hashable, Sequence[int]],
                    pairs: Sequence[tuple], margin: float, alpha: float, correction: str, start: int,
                    max_seeds: int, step: int = 1, seed_order: Sequence[int] | None = None,
                    pvalue: PValue | None = None, kind: str = "obf", precision: bool = True,
                    families: Mapping | None = None) -> Look:
    """Judge every pair (cell, baseline) on the values finished so far and pick the next seeds.

    ``values``: {cell: {seed: value}} of the finished trials; ``done``: each cell's seeds finished
    (failed ones included). The decisions are :func:`decide`'s (every earlier look recomputed
    from the same values, so a decision never changes once taken). A pair takes no more seeds
    once decided (better/worse/equivalent), precise, without a test although its seeds are done
    (failed trials), or at ``max_seeds``; the others grow by ``step`` through :func:`next_seeds`.
    """
    decisions, reached = decide(values, done, pairs, margin, alpha, correction, start, max_seeds, step, seed_order,
                                pvalue, kind, precision, families)
    state = {pair: d.stop != "" for pair, d in decisions.items()}
    order = list(range(max_seeds)) if seed_order is None else list(seed_order)
    new = next_seeds(done, state, start, max_seeds, order, batch=step)
    counts = look_counts(start, max_seeds, step)
    opened = [d.nominal for d in decisions.values() if d.stop == "" and d.n and not math.isnan(d.nominal)]
    level = min(opened) if opened else (look_levels(alpha, start, max_seeds, step, kind)[reached] if reached >= 0
                                        else 0.0)
    t = counts[reached] / max_seeds if reached >= 0 else 0.0
    return Look(level, decisions, state, new, reached, counts[reached] if reached >= 0 else 0,
                float(spent(t, alpha, kind)))


@dataclass(frozen=True)
class Replay:
    """What the runner did, recomputed from the stored values: each pair's decision, the seeds each
    cell ran, the alpha spent by the last look and the trials saved against max seeds everywhere."""
    decisions: dict  # (cell, baseline) -> Decision
    seeds: dict  # cell -> seeds it ran
    looks: list  # seed counts of the looks taken, in order
    spent: float  # α(t) spent by the last look taken
    trials: int
    max_trials: int

    @property
    def saved(self) -> int:
        return self.max_trials - self.trials


def replay(values_by_cell: Mapping[Hashable, Mapping[int, float]], pairs: Sequence[tuple],
           seed_order: Sequence[int] | None, start: int, max_seeds: int, step: int = 1, alpha: float = 0.05,
           kind: str = "obf", pvalue: PValue | None = None, margin: float | None = None, correction: str = "holm",
           done: Mapping[Hashable, Sequence[int]] | None = None, precision: bool = True,
           families: Mapping | None = None) -> Replay:
    """Re-run the runner's looks on stored values: start every cell at ``start`` seeds, take
    :func:`sequential_look` and add the seeds it asks for, until it asks for none (or for seeds
    that never finished: the run stopped there). Deterministic; with the runner's arguments it
    returns the runner's decisions. ``done``: each cell's finished seeds, failed ones included
    (default: the seeds with a value). Given a full grid of values it says what sequential
    seeding would have decided and saved."""
    finished = {c: set(v) for c, v in values_by_cell.items()} if done is None else {c: set(s) for c, s in done.items()}
    cells = list(dict.fromkeys([*values_by_cell, *finished, *(c for pair in pairs for c in pair)]))
    have = {c: [] for c in cells}
    looks = []
    while True:
        vals = {c: {s: values_by_cell.get(c, {})[s] for s in have[c] if s in values_by_cell.get(c, {})} for c in cells}
        look = sequential_look(vals, have, pairs, margin, alpha, correction, start, max_seeds, step, seed_order,
                               pvalue, kind, precision, families)
        if look.index >= 0 and (not looks or looks[-1] != look.n):
            looks.append(look.n)
        grew = False
        for c, seeds in look.new.items():
            ok = [s for s in seeds if s in finished.get(c, set())]
            have[c] = have[c] + ok
            grew = grew or bool(ok)
        if not look.new or not grew:
            break
    trials = sum(len(s) for s in have.values())
    t = looks[-1] / max_seeds if looks else 0.0
    return Replay(look.decisions, {c: len(s) for c, s in have.items()}, looks, float(spent(t, alpha, kind)), trials,
                  len(cells) * max_seeds)


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
