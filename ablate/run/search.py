"""What a worker claims next in a *point search* (``ablate/study/search.py``): a seed of a sampled
point, a new point, or a trial of the confirmation on fresh seeds.

Every claim runs under the study lock (:func:`ablate.storage.claim_next`) and first *settles* the
points whose seeds have all finished: each is told, in the points study
(:mod:`ablate.storage.points`), the mean over its seeds of every objective (so Optuna's sampler
learns from means, never from one lucky seed), PRUNED when a pruner stopped it, FAIL when none of
its seeds finished. Then, in this order:

1. a free seed of an open point, oldest point first (its seeds are the search seeds, the same for
   every point: a lost or interrupted seed is free again and runs again, a finished one never);
   with ``search.wilcoxon``, the point is first compared seed by seed with the best point so far
   (Optuna's WilcoxonPruner, the seeds as its instances) and not run further when it is worse;
2. a new point from the sampler while fewer than ``n_trials`` were sampled (a point drawn again is
   not run again: it is told the first one's values once they are known);
3. once every point is told, the confirmation (``search.confirm``): the top points (several
   objectives: the Pareto front's), chosen once and recorded in the study
   (:data:`~ablate.storage.points.CONFIRM_ATTR`) before any of its trials, and the baseline, each on
   the fresh seeds; then the baseline on the search seeds.

An epoch pruner (``pruner:``) judges a point, not a seed: after each epoch of a seed the point's
curve (the mean over its seeds that reached that epoch) is written to the points study and the
pruner asked there (:func:`point_prunes`); a stopped point's other seeds stop at their next epoch
and its free seeds are not run.
"""
from __future__ import annotations

import json
import math
import warnings

from optuna.trial import TrialState

from .sampling import make_sampler, suggest, trial_attrs

DONE = "done"


def _points(w, sampler=None):
    from ..storage import points as sp

    return sp.open_points(w.store, w.study.name, w.study.search["objectives"], sampler=sampler,
                          pruner=_pruner(w.study))


def _pruner(study):
    import optuna

    if study.search.get("wilcoxon"):
        with warnings.catch_warnings():  # experimental in Optuna 5.0: its interface is pinned with Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(**study.search["wilcoxon"])
    return study.make_pruner()


def _cell(w, key: str, label: dict):
    """The cell of a point (cached by key: resolving one builds nothing, but checks every factor)."""
    cells = w.__dict__.setdefault("point_cells", {})
    if key not in cells:
        cells[key] = w.study.search_cell(label) if label is not None else w.study.baseline_point()
    return cells[key]


def claim_points(w, index):
    """The next claim of a point search (study lock held), or None: nothing to run now."""
    points = _points(w)
    trials = points.get_trials(deepcopy=False)
    if settle(w, index, points, trials):
        trials = points.get_trials(deepcopy=False)
    claim = next_seed(w, index, points, trials)
    if claim is None and len(trials) < w.study.search["n_trials"]:
        claim = sample(w, index, trials)
        if claim is None:  # the budget ran out on points drawn again: tell those that can be told
            trials = points.get_trials(deepcopy=False)
            if settle(w, index, points, trials):
                trials = points.get_trials(deepcopy=False)
    if claim is None and w.study.search.get("confirm") and trials and all(t.state.is_finished() for t in trials) \
            and len(trials) >= w.study.search["n_trials"]:
        claim = next_confirm(w, index, points, trials)
    return claim


def _claim(w, index, cell, seed: int, extra: dict):
    from ..storage import records as st

    config = w.study.trial(cell, seed)
    attrs = {**trial_attrs(cell, seed, config), **extra}
    return st.Claim(cell, seed, config, 1 + index.taken_pairs(), {}, {}, attrs,
                    checkpoint_dir=w.checkpoint_dir(cell, seed, config))


def _done_trials(index, key: str, seeds) -> dict:
    """seed -> the finished (COMPLETE or PRUNED) trial of (key, seed), where there is one."""
    out = {}
    for s in seeds:
        for t in index.attempts(key, s):
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                out[s] = t
    return out


def settle(w, index, points, trials) -> bool:
    """Tell every open point whose seeds are all finished (see the module docstring); True when
    some point was told."""
    from ..storage import points as sp

    seeds, told = w.study.search_seeds(), False
    by_number = {t.number: t for t in trials}
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        attrs = t.user_attrs
        if "cell_key" not in attrs:  # a sample whose claim failed half-way (the lock was held: nobody is on it)
            sp.tell_point(points, t, None, TrialState.FAIL)
            told = True
            continue
        if "same_as" in attrs:
            first = by_number.get(attrs["same_as"])
            if first is not None and first.state.is_finished():
                sp.tell_point(points, t, first.values, first.state)
                told = True
            continue
        status = [index.status.get((attrs["cell_key"], s)) for s in seeds]
        if "running" in status or ("stopped" not in attrs and any(x != DONE for x in status)):
            continue
        _tell(w, points, t, _done_trials(index, attrs["cell_key"], seeds))
        told = True
    return told


def _tell(w, points, t, done: dict) -> None:
    """Tell point ``t`` from its finished seeds: the mean curve (or, with the Wilcoxon pruner, each
    seed's value at its seed's index) as its intermediate values, then the means of the objectives."""
    from ..storage import points as sp

    seeds, store = w.study.search_seeds(), points._storage
    complete = {s: r for s, r in done.items() if r.state == TrialState.COMPLETE}
    if w.study.search.get("wilcoxon"):
        for i, s in enumerate(seeds):
            if s in complete:
                sp.set_curve(store, t._trial_id, i, complete[s].value)
    else:
        curves = [_curve(r) for r in complete.values()]
        for e in range(min((len(c) for c in curves), default=0)):
            sp.set_curve(store, t._trial_id, e, sum(c[e] for c in curves) / len(curves))
    if "stopped" in t.user_attrs or any(r.state == TrialState.PRUNED for r in done.values()):
        sp.tell_point(points, t, None, TrialState.PRUNED)
    elif not complete:
        sp.tell_point(points, t, None, TrialState.FAIL)
    else:
        values = [sum(r.value for r in complete.values()) / len(complete)]
        values += [objective_cost(w, t, name, list(complete.values())) for name in w.study.search["objectives"][1:]]
        sp.tell_point(points, t, values, TrialState.COMPLETE)


def _curve(t) -> list[float]:
    return list(t.user_attrs.get("curve") or [t.intermediate_values[k] for k in sorted(t.intermediate_values)])


def objective_cost(w, point, name: str, seeds: list) -> float:
    """A cost objective of a point: the trials' own record (FLOPs, parameters), else the block's
    latency or peak memory measured once per block and input (cached, :func:`ablate.costs.blocks.cell_costs`)."""
    from ..study.search import COSTS

    attr = COSTS[name][0]
    if attr is not None:
        vals = [float(r.user_attrs[attr]) for r in seeds if r.user_attrs.get(attr) is not None]
        return sum(vals) / len(vals) if vals else math.nan
    from ..costs.blocks import cell_costs
    from ..report.rows import COST_REPEATS, COST_WARMUP, block_shape

    cell = _cell(w, point.user_attrs["cell_key"], json.loads(point.user_attrs["cell"]))
    costs = cell_costs([(cell.key, cell.mechanism, cell.args, block_shape(cell, w.study.trainer.world_size,
                                                                           w.study.head))],
                       None, repeats=COST_REPEATS, warmup=COST_WARMUP)
    if cell.key not in costs:
        return math.nan
    cost, extra = costs[cell.key]
    return float(cost.latency_ms) if name == "attn_latency_ms" else float(extra) / 2 ** 20


def next_seed(w, index, points, trials):
    """A free seed of the oldest open point (see the module docstring), or None."""
    from ..storage import points as sp
    from ..storage.states import TAKEN

    for t in trials:
        attrs = t.user_attrs
        if t.state != TrialState.RUNNING or "cell_key" not in attrs or "same_as" in attrs or "stopped" in attrs:
            continue
        free = [s for s in w.study.search_seeds() if index.status.get((attrs["cell_key"], s)) not in TAKEN]
        if not free:
            continue
        if w.study.search.get("wilcoxon") and _wilcoxon_stops(w, index, points, t):
            sp.mark(points._storage, t._trial_id, "stopped", "wilcoxon")
            continue
        cell = _cell(w, attrs["cell_key"], json.loads(attrs["cell"]))
        return _claim(w, index, cell, free[0], {"phase": "search", "point": t.number, "point_id": t._trial_id})
    return None


def _wilcoxon_stops(w, index, points, t) -> bool:
    """Optuna's WilcoxonPruner on point ``t``: its finished seeds' values, at their seeds' indices,
    against the best point's on the same seeds."""
    import optuna

    from ..storage import points as sp

    seeds = w.study.search_seeds()
    done = _done_trials(index, t.user_attrs["cell_key"], seeds)
    if not done:
        return False
    for i, s in enumerate(seeds):
        if s in done and done[s].value is not None:
            sp.set_curve(points._storage, t._trial_id, i, done[s].value)
    try:
        points.best_trial  # noqa: B018 - the pruner needs a finished point to compare with
    except ValueError:
        return False
    return optuna.trial.Trial(points, t._trial_id).should_prune()


def sample(w, index, trials):
    """A new point from the study's sampler (study lock held) and the claim of its first seed; a
    point drawn again is recorded as ``same_as`` the first and another is drawn, until the budget."""
    from ..storage import points as sp

    study, n = w.study, len(trials)
    known = {t.user_attrs["cell_key"]: t.number for t in trials
             if "cell_key" in t.user_attrs and "same_as" not in t.user_attrs}
    while n < study.search["n_trials"]:
        points = _points(w, make_sampler(study, n))
        trial = points.ask()
        n += 1
        try:
            params = suggest_point(study, trial)
            cell = study.search_cell(params)
            attrs = {"cell_key": cell.key, "cell": json.dumps(cell.label_dict)}
            if cell.key in known:
                attrs["same_as"] = known[cell.key]
            for k, v in attrs.items():
                sp.mark(points._storage, trial._trial_id, k, v)
        except BaseException:
            sp.tell_point(points, points._storage.get_trial(trial._trial_id), None, TrialState.FAIL)
            raise
        if "same_as" in attrs:
            continue
        _cell(w, cell.key, cell.label_dict)
        return _claim(w, index, cell, study.search_seeds()[0],
                      {"phase": "search", "point": trial.number, "point_id": trial._trial_id})
    return None


def suggest_point(study, trial) -> dict:
    """A point's factors, define-by-run: the mechanism first (when it is a factor), then the factors
    that mechanism has (:func:`ablate.study.search.applies`) and every train/data/backbone/head one."""
    from ..study.search import applies

    dists = study.distributions()
    params = {"mechanism": suggest(trial, "mechanism", dists["mechanism"])} if "mechanism" in dists else {}
    mech = params.get("mechanism", study.mechanism)
    params.update({k: suggest(trial, k, d) for k, d in dists.items() if k != "mechanism" and applies(k, mech)})
    return params


def top_points(study, points, trials) -> list:
    """The points to confirm: the best ``confirm.top`` by the metric's mean (several objectives:
    the Pareto front's points, best metric first, at most ``top``), one per cell, never the baseline."""
    base = study.baseline_point().key
    done = [t for t in trials if t.state == TrialState.COMPLETE and "same_as" not in t.user_attrs
            and t.user_attrs.get("cell_key") != base]
    if len(study.search["objectives"]) > 1:
        front = {t.number for t in points.best_trials}
        done = [t for t in done if t.number in front]
    return sorted(done, key=lambda t: -t.values[0])[:study.search["confirm"]["top"]]


def confirm_plan(w, points, trials) -> dict:
    """The confirmation plan, taken once (study lock held) and kept in the study's user attributes."""
    from ..storage.points import CONFIRM_ATTR

    plan = w.ostudy.user_attrs.get(CONFIRM_ATTR)
    if plan is None:
        study, base = w.study, w.study.baseline_point()
        tops = top_points(study, points, trials)
        plan = {"points": [t.number for t in tops], "baseline": base.key, "base_cell": base.label_dict,
                "cells": [[t.user_attrs["cell_key"], json.loads(t.user_attrs["cell"])] for t in tops],
                "seeds": list(study.search["confirm"]["seeds"]), "search_seeds": study.search_seeds()}
        plan = json.loads(json.dumps(plan))
        w.ostudy.set_user_attr(CONFIRM_ATTR, plan)
        w.progress.say(f"confirmation: the {len(tops)} best point(s) ({', '.join(f'#{n}' for n in plan['points'])}) "
                       f"and the baseline on fresh seeds {', '.join(map(str, plan['seeds']))}")
    return plan


def confirm_pairs(w, plan: dict) -> list:
    """(cell, seed) of the confirmation, in claim order: seed by seed, the baseline first, then the
    baseline's search seeds."""
    base = _cell(w, plan["baseline"], None)
    cells = [base] + [_cell(w, k, label) for k, label in plan["cells"]]
    return [(c, s) for s in plan["seeds"] for c in cells] + [(base, s) for s in plan["search_seeds"]]


def next_confirm(w, index, points, trials):
    from ..storage.states import TAKEN

    for cell, seed in confirm_pairs(w, confirm_plan(w, points, trials)):
        if index.status.get((cell.key, seed)) not in TAKEN:
            return _claim(w, index, cell, seed, {"phase": "confirm"})
    return None


def point_prunes(w, claim, epoch: int, value: float) -> bool:
    """A seed's epoch in a point search with an epoch pruner: the point's curve at ``epoch`` (the
    mean over its seeds that reached it) written to the points study and the pruner asked there;
    True (stop this seed) when the pruner or a sibling seed stopped the point."""
    import optuna

    from ..storage import points as sp

    pid = claim.attrs.get("point_id")
    if pid is None:  # a confirmation trial: never pruned (its value is a verdict's)
        return False
    points = w.__dict__.get("points_study") or _points(w)
    w.points_study = points
    store = points._storage
    if "stopped" in store.get_trial(pid).user_attrs:
        return True
    values = [value]
    for s in w.study.search_seeds():
        if s == claim.seed:
            continue
        for tid in w.index.by_pair.get((claim.cell.key, s), []):
            t = w.store.get_trial(tid)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) and epoch in t.intermediate_values:
                values.append(t.intermediate_values[epoch])
                break
    sp.set_curve(store, pid, epoch, sum(values) / len(values))
    if optuna.trial.Trial(points, pid).should_prune():
        sp.mark(store, pid, "stopped", f"epoch {epoch}")
        return True
    return False


def print_point_plan(study, out) -> None:
    """``--dry-run`` of a point search: the points, their seeds, the objectives, the confirmation."""
    from ..study.search import planned_trials

    s = study.search
    n_search, n_confirm = planned_trials(s)
    print(f"study {study.name}: point search of {s['n_trials']} points x {s['seeds_per_point']} seeds = {n_search} "
          f"trials with the {s['sampler']} sampler ({study.train.epochs} epochs each)"
          + (f", then {n_confirm} confirmation trials" if n_confirm else ""), file=out)
    if study.question:
        print(f"question: {' '.join(study.question.split())}", file=out)
    for k, spec in study.factors.items():
        print(f"  factor {k}: {spec}", file=out)
    print(f"  search seeds: {', '.join(map(str, study.search_seeds()))} (every point); objectives: "
          f"{', '.join(s['objectives'])} (the mean over the seeds told to Optuna)", file=out)
    base = study.baseline_point()
    print(f"  baseline: {base.title()} (key {base.key})", file=out)
    if s.get("confirm"):
        what = "the Pareto front's points (best metric first)" if len(s["objectives"]) > 1 else "the best points"
        print(f"  confirmation: {what}, at most {s['confirm']['top']}, and the baseline on fresh seeds "
              f"{', '.join(map(str, s['confirm']['seeds']))}; the baseline also on the search seeds; verdicts from "
              f"the fresh seeds only (margin ±{study.margin:g} points, {study.correction})", file=out)
    if s.get("wilcoxon"):
        print(f"  Wilcoxon pruner between seeds: {s['wilcoxon']}", file=out)
    if study.pruner["name"] != "none":
        opts = ", ".join(f"{k}={v}" for k, v in study.pruner.items() if k != "name")
        print(f"  pruner: {study.pruner['name']} ({opts}) on each point's mean curve", file=out)
