"""The records of evaluation-time factors: each evaluation of a training's final weights is a child
record of that training, in the same storage.

A study with ``eval_factors:`` (:mod:`ablate.study.evaluations`) keeps its trainings in its own
Optuna study, as any study does, and its evaluations in a second Optuna study of the same storage,
``<study>.evaluations`` (:func:`eval_study_name`): one trial per (training cell, seed, setting),
keyed by the evaluation row's key and the seed, with the training trial it evaluates
(``parent``: its number; ``train_key``; the ``weights`` it read). The evaluations are claimed,
reaped when their worker dies, failed and recorded by the same functions as trials
(:func:`ablate.storage.records.claim_next`, :func:`~ablate.storage.records.record_result`,
:func:`~ablate.storage.records.record_failure`) under that study's lock, so resume, several
workers and PostgreSQL behave as for trials; a lost or failed evaluation frees only its own
record, never the training's. :func:`read_evaluations` is what the report reads.
"""
from __future__ import annotations

import json

from . import records as st

SUFFIX = ".evaluations"


def eval_study_name(study_name: str) -> str:
    """The Optuna study that holds ``study_name``'s evaluations."""
    return study_name + SUFFIX


def open_evaluations(url: str, study_name: str):
    """(storage, Optuna study) of the evaluations, created if new."""
    return st.open_study(url, eval_study_name(study_name))


def parent_weights(attempts: list) -> tuple[int, str] | None:
    """(number, final weights path) of the COMPLETE training trial among one (cell, seed)'s
    attempts, or None when none has finished with weights (not yet trained, failed, pruned)."""
    import optuna

    for t in attempts:
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("final_weights"):
            return t.number, t.user_attrs["final_weights"]
    return None


def read_evaluations(study, url: str) -> dict:
    """The evaluations in storage: ``values`` (row key -> {seed: val mIoU}), ``records`` (row key ->
    {seed: user attributes}), ``failed`` (final failures), ``retry`` (to run again), ``running``,
    ``trainings`` (the training trials' numbers and creation order, to show that each ran once)."""
    import optuna

    out = {"values": {}, "records": {}, "failed": [], "retry": [], "running": 0}
    store = st.open_storage(url)
    try:
        ostudy = optuna.load_study(study_name=eval_study_name(study.name), storage=store)
    except KeyError:
        return out
    trials = ostudy.get_trials(deepcopy=False)
    for t, r in zip(trials, st.read_trials(trials)):
        if r.state == optuna.trial.TrialState.COMPLETE:
            out["values"].setdefault(r.cell_key, {})[r.seed] = r.value
            out["records"].setdefault(r.cell_key, {})[r.seed] = r.attrs
        elif r.state == optuna.trial.TrialState.RUNNING:
            out["running"] += 1
        elif r.status == "done":  # a final failure of the evaluation's own
            out["failed"].append(_failure(t, r))
        elif r.status in ("free", "failed here"):
            out["retry"].append(_failure(t, r))
    done = {(k, s) for k, v in out["values"].items() for s in v} | {(f["key"], f["seed"]) for f in out["failed"]}
    out["retry"] = [f for f in out["retry"] if (f["key"], f["seed"]) not in done]
    return out


def _failure(t, r) -> dict:
    return {"key": r.cell_key, "seed": r.seed, "kind": t.system_attrs.get(st.ATTR + "fail_kind"),
            "reason": t.system_attrs.get(st.ATTR + "fail_reason", ""), "setting": json.loads(r.attrs.get("eval", "{}"))}


__all__ = ["SUFFIX", "eval_study_name", "open_evaluations", "parent_weights", "read_evaluations"]
