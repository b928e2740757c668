"""Budget-limited by time to learn (ablate.stats.budget, issue 28 item 6): learn epochs with
censoring, the Kaplan–Meier fraction learned against an independent product-limit / Greenwood /
log(-log) computation and statsmodels, the rule on simulated learning curves (seeded), and the
rule on the committed budget, budget_zoo and zoo journals."""
from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from ablate.stats.budget import budget_limited, km_learned, learn_epochs, learned_by_text

STORAGE = Path(__file__).resolve().parents[2] / "reports" / "storage"


def test_learn_epochs():
    curves = [[0.1, 0.5, 0.9, 0.2], [0.1, float("nan"), 0.3], [0.95], []]
    assert learn_epochs(curves, 0.5) == [(2, 4), (None, 3), (1, 1), (None, 0)]


def _km_by_hand(events, level):
    """Product-limit estimate, Greenwood sum and log(-log) interval, written out."""
    z = sst.norm.ppf((1 + level) / 2)
    times = sorted({e if e is not None else r for e, r in events})
    s, gw, rows = 1.0, 0.0, []
    for t in times:
        at_risk = sum((e if e is not None else r) >= t for e, r in events)
        d = sum(e == t for e, _ in events)
        if d:
            s *= 1 - d / at_risk
            gw += d / (at_risk * (at_risk - d)) if at_risk > d else math.inf
        if 0 < s < 1:
            c = z * math.sqrt(gw) / abs(math.log(s))
            rows.append((t, 1 - s, 1 - s ** math.exp(-c), 1 - s ** math.exp(c)))
        else:
            rows.append((t, 1 - s, None, None))
    return rows


EVENTS = [(3, 10), (5, 10), (5, 10), (7, 10), (None, 5), (None, 10), (None, 10), (2, 8), (None, 8)]


def test_km_learned_against_hand_computation_and_statsmodels():
    from statsmodels.duration.survfunc import SurvfuncRight

    got = km_learned(EVENTS, level=0.9)
    want = _km_by_hand(EVENTS, 0.9)
    assert [r[0] for r in got] == [r[0] for r in want] == [2, 3, 5, 7, 8, 10]
    for g, w in zip(got, want):
        assert g[1] == pytest.approx(w[1], abs=1e-12)
        if w[2] is not None:
            assert (g[2], g[3]) == pytest.approx((w[2], w[3]), abs=1e-12)
    t = np.array([e if e is not None else r for e, r in EVENTS], float)
    sf = SurvfuncRight(t, np.array([e is not None for e, _ in EVENTS], int))
    by_time = {r[0]: r for r in got}
    for time, s, se in zip(sf.surv_times, sf.surv_prob, sf.surv_prob_se):
        assert 1 - by_time[int(time)][1] == pytest.approx(s, abs=1e-12)
        # the interval's half-width on the log(-log) scale is z·se(S)/(S·|log S|) (delta method)
        f, lo, hi = by_time[int(time)][1:]
        c = math.log(math.log(1 - f) / math.log(1 - lo))
        assert c == pytest.approx(sst.norm.ppf(0.95) * se / (s * abs(math.log(s))), rel=1e-9)


def test_km_learned_edges_use_clopper_pearson():
    none_learned = km_learned([(None, 10)] * 4)
    cp = sst.binomtest(0, 4).proportion_ci(0.95)
    assert none_learned == [(10, 0.0, 0.0, pytest.approx(cp.high, abs=1e-12))]
    all_learned = km_learned([(2, 10), (4, 10), (4, 10)])
    assert all_learned[-1][:2] == (4, 1.0)
    assert all_learned[-1][2] == pytest.approx(sst.binomtest(3, 3).proportion_ci(0.95).low, abs=1e-12)
    assert km_learned([]) == []
    with pytest.raises(ValueError):
        km_learned([(11, 10)])


def test_learned_by_text():
    assert learned_by_text([(3, 7), (5, 7), (7, 7), (None, 7), (None, 7)]) == \
        "learned by epoch 7 in 3/5 seeds (median epoch 5)"
    assert learned_by_text([(None, 10), (None, 10)]) == "learned by epoch 10 in 0/2 seeds"
    assert learned_by_text([(4, 30), (12, 30)], budget=10) == "learned by epoch 10 in 1/2 seeds (median epoch 4)"


def _curve(onset, epochs=10, floor=0.42, top=0.9):
    e = np.arange(1, epochs + 1)
    return floor + 0.03 * (1 - np.exp(-e / 3)) + (top - floor) / (1 + np.exp(-(e - onset) / 0.7))


def test_rule_on_hand_made_cells():
    thr = 0.6
    floor = [_curve(np.inf), _curve(np.inf) + 0.004, _curve(np.inf) - 0.003]  # still creeping up
    assert not budget_limited(floor, thr).limited
    late = budget_limited([_curve(9), _curve(np.inf), _curve(3)], thr)
    assert late.limited and (late.learned, late.n, late.late, late.window) == (2, 3, 1, 4)
    assert late.rise == pytest.approx(1 / 3)
    assert late.text() == "learned by epoch 10 in 2/3 seeds (median epoch 6)"
    assert not budget_limited([_curve(2), _curve(3), _curve(np.inf)], thr).limited  # all events early
    assert not budget_limited([_curve(9), _curve(9.5), _curve(8)], thr).limited  # every seed learned
    assert budget_limited([_curve(2), _curve(np.inf)], thr, late=1.0).limited  # any event counts with late=1


def test_rule_on_simulated_learning_curves():
    """Cells of 3 seeds, each seed's onset log-normal around a cell median (never, 5 … 50 epochs),
    sigmoid learning curves over a slowly rising floor with noise; the rule sees 10 epochs, the
    truth is whether more seeds have learned by epoch 30. Floor cells must never be flagged and the
    flags must be right (more seeds learn by 30) at least 85% of the time (measured: 0.92)."""
    rng = np.random.default_rng(0)
    e = np.arange(1, 31)
    flagged = right = floor_flags = 0
    for median in [np.inf, 5, 10, 15, 25, 50]:
        onset = rng.lognormal(np.log(median), 0.6, (300, 3)) if np.isfinite(median) else np.full((300, 3), np.inf)
        curves = (0.42 + 0.03 * (1 - np.exp(-e / 3)) + 0.5 / (1 + np.exp(-(e - onset[..., None]) / 0.7))
                  + rng.normal(0, 0.01, (300, 3, 30)))
        for cell in curves:
            flag = budget_limited(cell[:, :10], 0.55).limited
            gain = (cell >= 0.55).any(1).sum() > (cell[:, :10] >= 0.55).any(1).sum()
            flagged += flag
            right += flag and gain
            floor_flags += flag and not np.isfinite(median)
    assert floor_flags == 0
    assert flagged > 300 and right / flagged >= 0.85


def _journal_cells(name, tmp_path):
    """{(mechanism, task, other settings): [curve per seed]} of a committed journal (read from a copy)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    src = STORAGE / f"{name}.journal"
    if not src.exists():
        pytest.skip(f"{src} not committed")
    shutil.copy(src, tmp_path / src.name)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / src.name)))
    out = defaultdict(list)
    for t in storage.get_all_trials(storage.get_all_studies()[0]._study_id):
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        cell = dict(json.loads(t.user_attrs["config"])["cell"])
        key = (cell.pop("mechanism"), cell.pop("data.task", "global_cue"), json.dumps(cell, sort_keys=True))
        curve = t.user_attrs["curve"]
        out[key].append(json.loads(curve) if isinstance(curve, str) else curve)
    return out


def _thresholds(cells):
    """Learned = more than 10 points above the no-attention cell's mean final mIoU on the task."""
    return {k[1]: float(np.mean([c[-1] for c in v])) + 0.10 for k, v in cells.items() if k[0] == "none"}


def test_committed_journals(tmp_path):
    """Never flags the no-attention floor (at 10, 15, 20 and all epochs of every journal); what it
    flags in the zoo at 10 epochs on global_cue learned in more seeds at 30 epochs (budget)."""
    cells = {name: _journal_cells(name, tmp_path) for name in ("zoo", "budget", "budget_zoo")}
    for name, cs in cells.items():
        thr = _thresholds(cs)
        for key, curves in cs.items():
            if key[0] == "none":
                for b in (10, 15, 20, None):
                    assert not budget_limited([c[:b] for c in curves], thr[key[1]]).limited, (name, key, b)
    zoo, long = cells["zoo"], cells["budget"]
    thr = _thresholds(zoo)["global_cue"]
    for late in (1 / 3, 1.0):
        flagged = [k for k in long if k in zoo and budget_limited(zoo[k], thr, late=late).limited]
        assert flagged, late
        for k in flagged:
            k10 = budget_limited(zoo[k], thr).learned / len(zoo[k])
            k30 = budget_limited(long[k], thr).learned / len(long[k])
            assert k30 > k10, (k, k10, k30)
