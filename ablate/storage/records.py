"""Optuna storage as the single source of truth for a study's trials.

A trial is one (cell, seed). Its record in Optuna carries the cell key, the seed and the
resolved configuration as user attributes, and the worker's identity and heartbeat as system
attributes. Workers never coordinate directly: they *claim* the next trial while holding a
study-wide lock (an ``flock`` on a file beside a file-based storage, a PostgreSQL advisory lock
for a server), so the "which (cell, seed) is free" decision is serialised:

* a (cell, seed) with a COMPLETE or PRUNED trial, or a FAIL whose kind is ``error`` (the trial's
  own failure: NaN loss, out of memory, an exception in the model's forward or backward; final,
  listed in the report), is done and never run again;
* a FAIL whose kind is ``harness`` (tracking, storage, files: the harness or its environment
  failed, not the trial) frees its (cell, seed) for the *next* invocation: the invocation that
  recorded it (its run id, shared by its ``--workers``) does not retry it, so a persistent
  problem cannot loop;
* a RUNNING trial whose worker is alive is left alone;
* a RUNNING trial whose worker is gone (same host and the process is dead, or its heartbeat is
  older than the grace period), or that has no owner at all (a claim that failed half-way), is
  marked FAIL with kind ``lost`` and its (cell, seed) is free again; so is one interrupted with
  Ctrl-C (kind ``interrupted``);
* the first free (cell, seed) in plan order is created directly in state RUNNING. With
  sequential seeds (``seeds: {start, max}``) the plan is the start seeds plus the seeds each look
  added; a look is taken under the same lock, only when every planned trial is finished, and is
  recorded in the study's user attributes (``sequential_looks``) before any of its trials is
  claimed, so two workers never take the same look or the same seed, and a rerun resumes it.

Hence every cell x seed finishes exactly once, whatever the number of workers and restarts. An
attempt records the folder of its mid-trial checkpoints (``ablate:checkpoint_dir``); the next
attempt of the same (cell, seed) takes that folder, on whatever host, and resumes from its
newest checkpoint (``ablate:resumed_from``, :mod:`ablate.trainer.checkpoints`).

This module owns the trial records the runner uses:
:func:`claim_next` (bring the worker's :class:`~ablate.storage.index.TrialIndex` up to date by
reading only the trials created or still running since its last claim, reap the lost, create the
chosen (cell, seed) RUNNING and owned),
:func:`record_result` / :func:`record_failure`, :func:`read_trials` (typed
:class:`TrialRecord`) and the study's run record (:func:`save_run_record`), and re-exports the
rest: opening and locking in :mod:`ablate.storage.opening`, owners, liveness and statuses in
:mod:`ablate.storage.states`, the journal file's kill-safe lock and torn lines in
:mod:`ablate.storage.journal`.

Credentials: a storage URL may carry a password (``postgresql://user:pass@host/db``); only
``redact``-ed forms of it are ever printed or written. libpq also takes the password from
``PGPASSWORD`` or ``~/.pgpass``, which keeps it off command lines altogether.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from .index import TrialIndex  # noqa: F401 - the claim's view of the study
from .journal import JournalBackend, JournalFlock, check_journal, repair_journal  # noqa: F401
from .states import (
    ATTR,
    GRACE_S,
    HEARTBEAT_S,
    RUN_ENV,
    TAKEN,
    Heartbeat,
    alive,
    create_running_trial,
    grace_s,
    heartbeat_s,
    mark_failed,
    owner_attrs,
    proc_start,
    reap_lost,
    same_machine,
    trial_status,
)
from .opening import (
    STORAGE_ENV,
    STORAGE_FORMS,
    advisory_key,
    check_storage,
    default_run_dir,
    engine_url,
    load_or_create,
    lock_engines,
    open_storage,
    open_study,
    redact,
    storage_error,
    storage_url,
    study_lock,
)


# --------------------------------------------------------------------------------------
# trial records: claim, record, read (the runner's only way to touch trials)
# --------------------------------------------------------------------------------------

CHECKPOINT_ATTR = ATTR + "checkpoint_dir"  # system attribute: the folder of a trial's mid-trial checkpoints
RESUMED_ATTR = ATTR + "resumed_from"  # system attribute: {"step", "epoch", "file"} of the checkpoint it resumed


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the runner reads it: its (cell key, seed), state, value, status for
    invocation ``run`` (:func:`ablate.storage.states.trial_status`), wall time and user attributes."""

    trial_id: int
    number: int
    state: TrialState
    cell_key: str | None
    seed: int | None
    value: float | None
    status: str
    wall_s: float | None
    attrs: dict
    owned: bool  # it names an owner process (a claim that completed)

    @property
    def pair(self) -> tuple:
        return self.cell_key, self.seed

    @property
    def finished(self) -> bool:
        """COMPLETE or PRUNED."""
        return self.state in (TrialState.COMPLETE, TrialState.PRUNED)

    @classmethod
    def of(cls, t: FrozenTrial, run: str | None = None) -> "TrialRecord":
        attrs = t.user_attrs
        if isinstance(attrs.get("wall_s"), (int, float)):
            wall = float(attrs["wall_s"])
        elif t.datetime_start and t.datetime_complete:
            wall = (t.datetime_complete - t.datetime_start).total_seconds()
        else:
            wall = None
        return cls(t._trial_id, t.number, t.state, attrs.get("cell_key"), attrs.get("seed"), t.value,
                   trial_status(t, run), wall, attrs, ATTR + "pid" in t.system_attrs)


def read_trials(trials: list[FrozenTrial], run: str | None = None) -> list[TrialRecord]:
    """Typed records of Optuna trials (``ostudy.get_trials(deepcopy=False)``)."""
    return [TrialRecord.of(t, run) for t in trials]


@dataclasses.dataclass
class Claim:
    """A (cell, seed) the runner wants run: what :func:`claim_next` creates RUNNING and owned.
    ``trial_id`` is set once the trial exists; ``checkpoint_dir`` is where its mid-trial
    checkpoints go (an earlier attempt's recorded folder wins, so a worker on another host
    resumes from the same place)."""

    cell: object
    seed: int
    config: object
    index: int
    params: dict = dataclasses.field(default_factory=dict)
    choices: dict = dataclasses.field(default_factory=dict)
    attrs: dict = dataclasses.field(default_factory=dict)
    trial_id: int | None = None
    checkpoint_dir: str | None = None


def claim_next(url: str, ostudy: optuna.Study, choose: Callable[[TrialIndex], Claim | None],
               index: TrialIndex | None = None) -> tuple[Claim | None, TrialIndex]:
    """Bring ``index`` (a new one when None: it reads the whole study once) up to date with the
    trials created or changed since its last refresh, outside the study lock; under it, bring it up
    to date again (what changed while this worker waited for the lock), mark the lost trials
    (:func:`reap_lost`, over the open ones only), ask ``choose(index)`` for the next (cell, seed),
    and create it RUNNING, owned by this process (``choose`` may have created it already: a
    sampled trial of a search). Returns the claim (None: nothing to run) and the index. A claim
    reads O(workers) trials, not O(trials) (:mod:`ablate.storage.index`)."""
    store = ostudy._storage
    if index is None:
        index = TrialIndex.open_on(store, ostudy._study_id, os.environ.get(RUN_ENV, ""))
    index.refresh()  # what changed since this worker's last claim, read while others hold the lock
    with study_lock(url, ostudy.study_name):
        index.refresh()  # what changed while this worker waited for the lock: a few trials at most
        if reap_lost(store, index.open_trials()):
            index.refresh()
        claim = choose(index)
        if claim is None or claim.trial_id is not None:
            return claim, index
        earlier = checkpoint_dir_of(index.attempts(claim.cell.key, claim.seed), claim.cell.key, claim.seed)
        claim.checkpoint_dir = earlier or claim.checkpoint_dir
        system = {CHECKPOINT_ATTR: claim.checkpoint_dir} if claim.checkpoint_dir else {}
        claim.trial_id = create_running_trial(ostudy, claim.params, claim.choices, claim.attrs, system)
    return claim, index


def ask_trial(sampler_study: optuna.Study, setup: Callable[[optuna.Trial], Claim]) -> Claim:
    """A search's claim (study lock held): the sampler's next trial, which names its owner first,
    then ``setup(trial)`` suggests its point and returns the claim, whose attributes are written.
    A setup that fails marks the trial failed (harness), never leaves it RUNNING without an owner."""
    store = sampler_study._storage
    trial = sampler_study.ask()
    tid = trial._trial_id
    for k, v in owner_attrs().items():
        store.set_trial_system_attr(tid, k, v)
    try:
        claim = setup(trial)
        for k, v in claim.attrs.items():  # a search's sample has no mid-trial checkpoints (run_claims)
            store.set_trial_user_attr(tid, k, v)
    except BaseException as e:
        record_failure(store, tid, "harness", f"the sampled point could not be set up: {type(e).__name__}: {e}")
        raise
    claim.trial_id = tid
    return claim


def checkpoint_dir_of(trials: list[FrozenTrial], cell_key: str, seed: int) -> str | None:
    """The checkpoint folder the newest earlier attempt of (cell, seed) recorded, or None."""
    for t in sorted(trials, key=lambda t: t.number, reverse=True):
        if t.user_attrs.get("cell_key") == cell_key and t.user_attrs.get("seed") == seed:
            if t.system_attrs.get(CHECKPOINT_ATTR):
                return t.system_attrs[CHECKPOINT_ATTR]
    return None


def record_result(storage, trial_id: int, result: dict) -> str:
    """Write a finished trial's result and final state (a database: in one transaction,
    :func:`ablate.storage.create.finish_trial`); returns 'complete' or 'pruned'."""
    from .create import finish_trial

    if result.get("pruned_epoch") is not None:
        # final, like a failure of its own: storage counts PRUNED as done; the value is the
        # last reported one, as Optuna's own tell() records it
        state, values, outcome = TrialState.PRUNED, [result["curve"][-1]], "pruned"
    else:
        state, values, outcome = TrialState.COMPLETE, [result["value"]], "complete"
    if not finish_trial(storage, trial_id, result, state, values):
        for k, v in result.items():
            storage.set_trial_user_attr(trial_id, k, v)
        storage.set_trial_state_values(trial_id, state, values)
    return outcome


def record_failure(storage, trial_id: int, kind: str, reason: str) -> bool:
    """:func:`mark_failed`, never raising: a storage that cannot be written leaves the trial
    RUNNING, and the next claim reaps it as lost. Returns whether it was recorded."""
    try:
        mark_failed(storage, trial_id, kind, reason)
    except Exception:  # noqa: BLE001 - the caller goes on; the trial is reaped later
        return False
    return True


def record_resumed(storage, trial_id: int, info: dict, history: list[float]) -> None:
    """A trial resumed from a mid-trial checkpoint: where from (:data:`RESUMED_ATTR`), and the
    restored epochs' val values as its intermediate values (the pruner compares them)."""
    storage.set_trial_system_attr(trial_id, RESUMED_ATTR, json.loads(json.dumps(info)))
    for epoch, value in enumerate(history):
        storage.set_trial_intermediate_value(trial_id, epoch, float(value))


def save_run_record(url: str, study_name: str, info: dict) -> None:
    """The study's record of its last run (``last_run``: wall time, workers, command, compute),
    written by the runner at its end and read by the report."""
    try:
        ostudy = optuna.load_study(study_name=study_name, storage=open_storage(url))
    except KeyError:
        return
    ostudy.set_user_attr("last_run", json.loads(json.dumps(info)))


def main(argv=None) -> int:
    """``python -m ablate.storage repair JOURNAL``: repair a journal with a broken line."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ablate.storage", description=main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("repair", help="keep a backup, drop the broken parts of a journal's lines").add_argument("journal")
    args = p.parse_args(argv)
    if not os.path.isfile(args.journal):
        print(f"error: {args.journal} is not a file.", file=sys.stderr)
        return 2
    repair_journal(args.journal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
