"""Is a cell budget-limited? Time to learn, censored at the budget (issue 28, item 6).

On the synthetic tasks a seed either learns the cue or stays at the floor, so the question a
longer run answers is whether more seeds would *learn*, not whether a mean curve still creeps up.
Each seed's learn time is the first epoch (1-based) at which its validation curve reaches the
learned threshold; a seed that never reaches it is right-censored at the epochs it ran. The
fraction learned by epoch e is 1 - S(e), with S the Kaplan–Meier estimate over seeds (Kaplan &
Meier 1958), its variance by Greenwood's formula (Greenwood 1926) and the interval on the
log(-log S) scale (Kalbfleisch & Prentice 1980), as :func:`scipy.stats.ecdf` computes them.

A cell is budget-limited when that learn-time curve is still rising at the last epoch: some seed
first crossed in the last stretch of the run *and* some seed has still not crossed. Learning
events near the end with seeds left at risk mean the step function had not levelled off, so more
epochs would likely change "k of n learned". A cell whose seeds all stayed at the floor has no
events to extrapolate from (nothing says it would ever learn), and a cell whose seeds all learned
early, or all learned, has nothing left to change: neither is limited. The average-curve slope
test this replaces flagged gentle drift of floor cells (the no-attention floor included) and
missed cells whose seeds learned one by one.

Pure functions of numbers; values in the curves' unit (mIoU fractions in the report).
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

Event = tuple  # (first epoch at or above the threshold, 1-based, or None; epochs run)


def learn_epochs(curves: Sequence[Sequence[float]], threshold: float) -> list[tuple[int | None, int]]:
    """Per seed: (the first epoch e, 1-based, with curve[e-1] ≥ threshold, or None when the curve
    never reaches it: censored; the number of epochs run, ``len(curve)``). NaN epochs never count
    as reached."""
    out = []
    for curve in curves:
        y = np.asarray(curve, dtype=float)
        hit = np.flatnonzero(np.nan_to_num(y, nan=-np.inf) >= threshold)
        out.append((int(hit[0]) + 1 if hit.size else None, len(y)))
    return out


def _check(events: Sequence[Event]) -> None:
    for e, run in events:
        if run < 0 or (e is not None and not 1 <= e <= run):
            raise ValueError(f"learn event {(e, run)}: need 1 <= epoch <= epochs run, or None")


def km_learned(events: Sequence[Event], level: float = 0.95) -> list[tuple[int, float, float, float]]:
    """Kaplan–Meier fraction learned, one row (epoch, F, lower, upper) per distinct epoch at which
    some seed learned or was censored, ascending.

    S(t) = Π_{t_i ≤ t} (1 - d_i / n_i), d_i seeds learning at t_i, n_i seeds still unlearned and
    followed through t_i (a seed censored at t_i counts as at risk there); F = 1 - S (Kaplan &
    Meier 1958). Interval: Greenwood's variance V = Σ d_i / (n_i (n_i - d_i)) (Greenwood 1926) on
    the log(-log S) scale, S^{exp(±z √V / log S)}, z the normal quantile at (1 + level)/2; computed
    by :func:`scipy.stats.ecdf`. Where that interval is undefined: before any event (F = 0) the
    upper bound is Clopper–Pearson's for 0 learned of the n seeds followed through t,
    1 - ((1 - level)/2)^{1/n}; once every seed at risk has learned (F = 1) the lower bound is
    Clopper–Pearson's for n of n among all seeds, ((1 - level)/2)^{1/n} (Clopper & Pearson 1934).
    Both are exact without censoring and a convention with it.
    """
    _check(events)
    if not events:
        return []
    times = np.array([e if e is not None else run for e, run in events], dtype=float)
    learned = np.array([e is not None for e, _ in events])
    tail = (1 - level) / 2
    if not learned.any():
        grid = np.unique(times)
        return [(int(t), 0.0, 0.0, 1 - tail ** (1 / int((times >= t).sum()))) for t in grid]
    res = _st.ecdf(_st.CensoredData(uncensored=times[learned], right=times[~learned]))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ci = res.sf.confidence_interval(level, method="log-log")
    grid, s = res.sf.quantiles, res.sf.probabilities
    rows = []
    for t, st, s_lo, s_hi in zip(grid, s, ci.low.probabilities, ci.high.probabilities):
        at_risk = int((times >= t).sum())
        if st >= 1:
            lo, hi = 0.0, 1 - tail ** (1 / at_risk)
        elif st <= 0:
            lo, hi = tail ** (1 / len(times)), 1.0
        else:
            lo, hi = 1 - float(s_hi), 1 - float(s_lo)
        rows.append((int(t), float(1 - st), lo, hi))
    return rows


@dataclass(frozen=True)
class Budget:
    limited: bool  # the learn-time curve still rises at the budget (see budget_limited)
    learned: int  # seeds that reached the threshold within their epochs
    n: int  # seeds
    budget: int  # the last epoch (the longest curve)
    window: int  # epochs in the late window
    late: int  # seeds whose first crossing fell in the late window
    rise: float  # KM fraction learned gained over the window, F(budget) - F(budget - window)
    median: float | None  # median learn epoch among the seeds that learned
    events: tuple  # learn_epochs' output

    def text(self) -> str:
        return learned_by_text(self.events, self.budget)


def _f_at(rows, epoch: int) -> float:
    f = 0.0
    for t, ft, _, _ in rows:
        if t <= epoch:
            f = ft
    return f


def budget_limited(curves: Sequence[Sequence[float]], threshold: float, late: float = 1 / 3,
                   min_window: int = 2) -> Budget:
    """Budget-limited cell (the validation curve, one list per seed; ``threshold`` the learned
    level in the curves' unit).

    Rule: E = the longest curve's epochs, window w = max(min_window, ⌈late·E⌉) (capped at E).
    Limited ⇔ at least one seed first reached the threshold in epochs E - w + 1 … E *and* at least
    one seed has not reached it (censored). Equivalently, the Kaplan–Meier fraction learned
    (:func:`km_learned`) rose over the window and is still below 1 at E: the learn-time curve had
    not levelled off, so more epochs would likely change k of n. No events (every seed at the
    floor), or every event early, or every seed learned: not limited.
    """
    if not 0 < late <= 1 or min_window < 1:
        raise ValueError(f"need 0 < late <= 1 and min_window >= 1, got late={late}, min_window={min_window}")
    events = tuple(learn_epochs(curves, threshold))
    events = tuple(ev for ev in events if ev[1] > 0)
    if not events:
        return Budget(False, 0, 0, 0, 0, 0, 0.0, None, ())
    e_max = max(run for _, run in events)
    w = min(e_max, max(min_window, math.ceil(late * e_max)))
    start = e_max - w + 1
    hits = [e for e, _ in events if e is not None]
    n_late = sum(e >= start for e in hits)
    censored = len(events) - len(hits)
    rows = km_learned(events)
    rise = _f_at(rows, e_max) - _f_at(rows, start - 1)
    median = float(statistics.median(hits)) if hits else None
    return Budget(n_late > 0 and censored > 0, len(hits), len(events), e_max, w, n_late, rise, median, events)


def learned_by_text(events: Sequence[Event], budget: int | None = None) -> str:
    """"learned by epoch B in k/n seeds (median epoch m)": k seeds whose first crossing is at or
    before epoch B (the longest run when ``budget`` is None), m the median of their crossing epochs
    (left out when k = 0)."""
    _check(events)
    b = budget if budget is not None else max((run for _, run in events), default=0)
    hits = [e for e, _ in events if e is not None and e <= b]
    text = f"learned by epoch {b} in {len(hits)}/{len(events)} seeds"
    return text + (f" (median epoch {statistics.median(hits):g})" if hits else "")
