"""The summary of a study in storage, read once: finished values and records per cell, curves,
failures (final and to retry), pruned, running and pending trials, timing, owners, fingerprints
and the CSV rows (:func:`collect`); the run's totals (:func:`run_totals`). The report renders this;
the runner's finish reads it once for the run record, the report and its failure lines."""
from __future__ import annotations

import json
import time

from . import records as st
from . import states


def collect(study, url: str) -> dict:
    """Finished values per cell key, failed trials (final, and to retry), running and pending
    trials, timing and owners, from the Optuna storage."""
    import optuna

    from .points import pending_trials, read_points

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = st.open_storage(url)
    try:
        ostudy = optuna.load_study(study_name=study.name, storage=store)
    except KeyError:
        return {"values": {}, "records": {}, "failed": [], "retry": [], "pruned": [], "running": 0, "running_here": 0,
                "pending": len(study.trials()) if not study.search else study.search["n_trials"],
                "epochs": {"run": 0, "planned": 0}, "finished": [], "run": {}, "curves": {}, "trials": []}
    trials = ostudy.get_trials(deepcopy=False)
    values: dict[str, dict[int, float]] = {}
    records: dict[str, list[dict]] = {}
    curves: dict[str, list[list[float]]] = {}  # per-epoch val curves of the complete trials
    pruned = []
    epochs = {"run": 0, "planned": 0}  # over complete and pruned trials
    finished = []  # complete and pruned trials: completion time, compute s, owner
    fps: dict[str, list] = {}  # per cell, the finished trials' fingerprints (None: recorded before them)
    rows = []  # every trial, any state, for the CSV export
    for t in trials:
        key, seed = t.user_attrs.get("cell_key"), t.user_attrs.get("seed")
        rows.append(_trial_row(t))
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        curve = t.user_attrs.get("curve") or [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
        config = t.user_attrs.get("config")
        planned = json.loads(config)["train"]["epochs"] if isinstance(config, str) else len(curve)
        epochs["run"] += len(curve)
        epochs["planned"] += planned
        if t.datetime_complete is not None:
            finished.append(_finished_record(t))
        fps.setdefault(key, []).append(t.user_attrs.get("fingerprint"))
        if t.state == optuna.trial.TrialState.COMPLETE:
            values.setdefault(key, {})[seed] = t.value
            records.setdefault(key, []).append(t.user_attrs)
            curves.setdefault(key, []).append(list(curve))
        else:
            pruned.append({"key": key, "seed": seed, "epochs": len(curve), "planned": planned,
                           "last": curve[-1] if curve else float("nan"), "config": t.user_attrs.get("config"),
                           "compute_s": t.user_attrs.get("compute_s", 0.0)})
    final, retry = _failures(study, trials)
    running, here, pending = _progress(study, trials)
    points = read_points(store, study.name, ostudy.user_attrs) if study.point_search() else None
    if points is not None:  # a point search: its open points' seeds and the confirmation's pairs
        settled = {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) for t in trials
                   if st.trial_status(t) == "done"}
        pending = pending_trials(study, points, settled, running)
    return {"values": values, "records": records, "failed": final, "retry": retry, "pruned": pruned,
            "running": running, "running_here": here, "pending": pending, "epochs": epochs, "finished": finished,
            "run": ostudy.user_attrs.get("last_run", {}), "curves": curves, "fingerprints": fps, "trials": rows,
            "points": points, "evaluations": _evaluations(study, url)}


def _evaluations(study, url: str) -> dict | None:
    """A study's evaluations of its trainings under evaluation-time factors (None: it has none)."""
    if not getattr(study, "evals", ()):
        return None
    from .evaluations import read_evaluations

    return read_evaluations(study, url)


def _trial_row(t) -> dict:
    """One trial of any state as the CSV export needs it (values as stored)."""

    attrs = t.user_attrs
    curve = attrs.get("curve") or [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
    config = attrs.get("config")
    try:
        cell = json.loads(attrs["cell"]) if isinstance(attrs.get("cell"), str) else dict(attrs.get("cell") or {})
    except ValueError:
        cell = {}
    return {"number": t.number, "key": attrs.get("cell_key"), "seed": attrs.get("seed"), "state": t.state.name.lower(),
            "fail_kind": t.system_attrs.get(st.ATTR + "fail_kind"), "value": t.value, "curve": list(curve), "cell": cell,
            "planned": json.loads(config)["train"]["epochs"] if isinstance(config, str) else None,
            "mechanism": json.loads(config).get("mechanism") if isinstance(config, str) else None,
            **{k: attrs.get(k) for k in ("best_val_miou", "attention_params", "attention_flops", "total_params",
                                         "wall_s", "compute_s")},
            **{k: attrs[k] for k in ("upsample_params", "upsample_flops") if k in attrs},  # a CARAFE head's only
            "fail_reason": t.system_attrs.get(st.ATTR + "fail_reason")}


def _finished_record(t) -> dict:

    attrs = t.system_attrs
    owner = (attrs.get(st.ATTR + "host"), attrs.get(st.ATTR + "pid"), attrs.get(st.ATTR + "start"))
    return {"when": t.datetime_complete.timestamp(), "compute": t.user_attrs.get("compute_s", 0.0),
            "start": t.datetime_start.timestamp() if t.datetime_start else None,
            "owner": owner if owner[1] is not None else None, "run": attrs.get(st.ATTR + "run") or None}


def _failures(study, trials) -> tuple[list, list]:
    """(key, seed, reason) of the trials that failed for a reason of their own (final), and of
    those that failed for the harness's and were not run again since (the next run retries)."""

    pair = lambda t: (t.user_attrs.get("cell_key"), t.user_attrs.get("seed"))  # noqa: E731
    settled = {pair(t) for t in trials if st.trial_status(t) in ("done", "running")}
    final, retry = [], {}
    for t in trials:
        kind = t.system_attrs.get(st.ATTR + "fail_kind")
        reason = t.system_attrs.get(st.ATTR + "fail_reason", "")
        if kind == "error":
            final.append((*pair(t), reason))
        elif kind == "harness" and pair(t) not in settled:
            retry[pair(t)] = (*pair(t), reason)  # the latest attempt's reason
    if study.search and not study.point_search() and len(settled) >= study.search["n_trials"]:
        retry = {}  # a search's failed samples are replaced by new ones; the budget is spent
    return final, list(retry.values())


def _progress(study, trials) -> tuple[int, int, int]:
    """Trials running (their worker alive), of which on this machine, and trials still to run."""

    now, grace = time.time(), st.grace_s()
    live = [t for t in trials if st.trial_status(t) == "running" and st.ATTR + "pid" in t.system_attrs
            and states.alive(t.system_attrs, now, grace)]
    here = sum(states.same_machine(t.system_attrs) for t in live)
    settled = {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) for t in trials
               if st.trial_status(t) == "done"}
    if study.search:  # a point search's is counted from its points (collect)
        pending = max(0, study.search["n_trials"] - len(settled) - len(live))
    else:
        taken = settled | {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) for t in live}  # once, not per pair
        pending = sum((c.key, s) not in taken for c, s in study.trials())
    return len(live), here, pending


def failures(study, url: str) -> tuple[list, list]:
    """The study's final failures and failures to retry, as (cell key, seed, reason)."""
    data = collect(study, url)
    return data["failed"], data["retry"]


def run_totals(run_info: dict, finished: list[dict]) -> dict:
    """The invocation's own trials (by its run id in their owner records; by completion time for
    records without one), their compute, and its overhead over its workers' wall time. A pruned
    trial's epochs were work too."""
    run = run_info.get("run")
    if run and any(f.get("run") for f in finished):
        here = [f["compute"] for f in finished if f.get("run") == run]
    else:
        here = [f["compute"] for f in finished if f["when"] >= run_info.get("started", 0.0)]
    info = {**run_info, "compute_s": sum(here), "trials_here": len(here), "trials_total": len(finished),
            "compute_total_s": sum(f["compute"] for f in finished)}
    busy = info["wall_s"] * info["workers"]
    info["overhead"] = max(0.0, 1 - info["compute_s"] / busy) if busy else 0.0
    return info
