"""A point search's *points study*: one Optuna trial per sampled point, beside the study's own
trials (one per cell x seed, as for a grid).

The study's trials stay what storage claims, reaps and resumes (:mod:`ablate.storage.records`):
each seed of a point is a (cell, seed) trial, so a point's seeds may run on different workers,
each exactly once. The points study, named :func:`points_name`, is what Optuna's sampler, pruner
and importances see: a point is asked from the sampler there (it stays RUNNING while its seeds
run) and told, under the study lock, the mean over its seeds of each objective once its last seed
has finished (:func:`tell_point`). A point's user attributes hold its cell (``cell_key``,
``cell``), and ``same_as`` when the sampler drew a point already sampled (it is not run again and
is told the first one's values), ``stopped`` when a pruner stopped it.
"""
from __future__ import annotations

import json
import math

import optuna
from optuna.trial import FrozenTrial, TrialState

POINTS_SUFFIX = "::points"
CONFIRM_ATTR = "search_confirm"  # study user attribute: the confirmation plan of a point search, once taken


def points_name(study_name: str) -> str:
    """The points study of study ``study_name``."""
    return study_name + POINTS_SUFFIX


def directions(objectives: list[str]) -> list[str]:
    """The metric is maximised, every cost minimised."""
    return ["maximize"] + ["minimize"] * (len(objectives) - 1)


def open_points(storage, study_name: str, objectives: list[str], sampler=None, pruner=None) -> optuna.Study:
    """The points study of ``study_name`` in ``storage`` (created if missing: call with the study
    lock held the first time), with ``sampler`` and ``pruner``."""
    return optuna.create_study(study_name=points_name(study_name), storage=storage, sampler=sampler, pruner=pruner,
                               directions=directions(objectives), load_if_exists=True)


def find_points(storage, study_name: str) -> optuna.Study | None:
    """The points study of ``study_name``, or None when the search has not sampled yet."""
    try:
        return optuna.load_study(study_name=points_name(study_name), storage=storage)
    except KeyError:
        return None


def point_cell(t: FrozenTrial) -> dict:
    """The factors of a point as its user attributes keep them."""
    return json.loads(t.user_attrs.get("cell", "{}"))


def mark(storage, trial_id: int, key: str, value) -> None:
    storage.set_trial_user_attr(trial_id, key, value)


def tell_point(points: optuna.Study, t: FrozenTrial, values: list[float] | None, state: TrialState) -> None:
    """Finish point ``t``: COMPLETE with ``values`` (one per objective), PRUNED (its last
    intermediate value, as Optuna's own tell) or FAIL. A point finished already is left alone."""
    if points._storage.get_trial(t._trial_id).state.is_finished():
        return
    if state == TrialState.COMPLETE and values is not None and all(math.isfinite(v) for v in values):
        points.tell(t.number, values)
    elif state == TrialState.PRUNED:
        points.tell(t.number, state=TrialState.PRUNED)
    else:
        points.tell(t.number, state=TrialState.FAIL)


def set_curve(storage, trial_id: int, step: int, value: float) -> None:
    """A running point's intermediate value at ``step`` (its mean curve, or a seed's value)."""
    storage.set_trial_intermediate_value(trial_id, step, float(value))


def read_points(storage, study_name: str, study_attrs: dict) -> dict:
    """What a report needs of a point search: its points (FrozenTrials, in order; none before the
    first sample) and the confirmation plan (None until taken)."""
    points = find_points(storage, study_name)
    return {"trials": points.get_trials(deepcopy=True) if points is not None else [],
            "plan": study_attrs.get(CONFIRM_ATTR),
            "directions": [d.name.lower() for d in points.directions] if points is not None else []}


def pending_trials(study, info: dict, settled: set, running: int) -> int:
    """Trials of a point search still to run: the free seeds of its open points, every seed of the
    points not sampled yet, and the confirmation's pairs not finished (its planned count before the
    plan is taken); less those running now."""
    from ..study.search import planned_trials

    k, trials = study.search["seeds_per_point"], info["trials"]
    left = (study.search["n_trials"] - len(trials)) * k
    for t in trials:
        if t.state == TrialState.RUNNING and "same_as" not in t.user_attrs and "stopped" not in t.user_attrs:
            left += sum((t.user_attrs.get("cell_key"), s) not in settled for s in study.search_seeds())
    plan = info["plan"]
    if plan:
        keys = [plan["baseline"]] + [key for key, _ in plan["cells"]]
        pairs = [(key, s) for s in plan["seeds"] for key in keys] + [(plan["baseline"], s) for s in plan["search_seeds"]]
        left += sum(p not in settled for p in pairs)
    elif study.search.get("confirm"):
        left += planned_trials(study.search)[1]
    return max(0, left - running)
