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

Hence every cell x seed finishes exactly once, whatever the number of workers and restarts.

This module opens storage, holds the study lock and owns the trial records the runner uses:
:func:`claim_next` (reap the lost, create the chosen (cell, seed) RUNNING and owned),
:func:`record_result` / :func:`record_failure`, :func:`read_trials` (typed
:class:`TrialRecord`) and the study's run record (:func:`save_run_record`). Owners, liveness
and statuses are in :mod:`ablate.storage_trials`; the journal file's kill-safe lock and torn
lines in :mod:`ablate.storage_journal`.

Credentials: a storage URL may carry a password (``postgresql://user:pass@host/db``); only
``redact``-ed forms of it are ever printed or written. libpq also takes the password from
``PGPASSWORD`` or ``~/.pgpass``, which keeps it off command lines altogether.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from .storage_journal import JournalBackend, JournalFlock, check_journal, repair_journal  # noqa: F401
from .storage_trials import (ATTR, GRACE_S, HEARTBEAT_S, RUN_ENV, TAKEN, Heartbeat, alive, create_running_trial,  # noqa: F401
                             grace_s, heartbeat_s, mark_failed, owner_attrs, proc_start, reap_lost, same_machine,
                             trial_status)
from .storage_trials import alive as _alive, proc_start as _proc_start, same_machine as _same_machine  # noqa: F401

STORAGE_ENV = "ABLATE_STORAGE"  # storage URL when --storage is not given (keeps it off command lines)


def default_run_dir(study_name: str) -> Path:
    return Path("runs") / study_name


def storage_url(run_dir: Path, storage: str | None) -> str:
    """The storage URL: ``storage`` if given, else ``$ABLATE_STORAGE``, else the embedded journal
    file in ``run_dir``."""
    return storage or os.environ.get(STORAGE_ENV) or str(run_dir / "optuna.journal")


# user:password@ in any form: after scheme:// or a mistyped scheme:/ or none at all (u:pw@host);
# the password may hold '@' and ':' (it ends at the last '@' before whitespace); and the
# ?password= / &password= query parameter or libpq's password= keyword
_USER = r"[^\s'\"=<>()\[\]/:@]*"
_URL_PASSWORD = re.compile(rf"(?:(?P<url>[A-Za-z][A-Za-z0-9+.-]*:/+{_USER}):|(?P<bare>{_USER}):(?!//))\S*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>(?:^|[?&\s])password=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a URL, or a command line holding URLs) with every password replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['url'] or m['bare']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


# the SQLAlchemy dialects Optuna's RDBStorage is known to work with, optionally +driver
_SCHEMES = re.compile(r"(sqlite|postgres|postgresql|mysql|mariadb)(\+[a-z0-9_]+)?")
STORAGE_FORMS = ("sqlite:///PATH.db, postgresql[+driver]://USER@HOST[:PORT]/DB, mysql[+driver]://USER@HOST/DB, "
                 "or a journal file (an existing one, or a path ending in .journal in an existing folder)")


def check_storage(value: str, key: str = "--storage") -> None:
    """Refuse a storage that is neither a known URL nor a journal path (StudyError, password
    redacted): a mistyped URL must not become a journal folder named after the password."""
    from .errors import StudyError

    shown = redact(value if len(value) <= 200 else value[:200] + "...")

    def bad(why: str) -> StudyError:
        return StudyError("command line", key, f"'{shown}' {why}; give {STORAGE_FORMS}.")

    if "://" in value:
        scheme = value.split("://", 1)[0]
        if not _SCHEMES.fullmatch(scheme.lower()):
            raise bad(f"has an unknown scheme '{redact(scheme)[:40]}'")
        if scheme.lower().startswith("sqlite"):
            path = value.split("://", 1)[1][1:].split("?", 1)[0]
            if not path or path == ":memory:":
                raise bad("is an in-memory database, which no other process (and no report) can read")
            folder = Path(path).parent
            if not folder.is_dir():
                raise bad(f"is a SQLite file in the folder {str(folder)[:200]}, which does not exist")
        return
    p = Path(value)
    if p.is_dir():
        raise bad("is a folder, not a journal file")
    if p.is_file() or (p.name.endswith(".journal") and p.parent.is_dir()):
        return
    if p.name.endswith(".journal"):
        raise bad(f"is a journal file in the folder {str(p.parent)[:200]}, which does not exist")
    raise bad("is neither a storage URL nor a journal file")


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for a storage URL: a bare ``postgresql://`` (or ``postgres://``) gets an
    installed driver, psycopg 3 or psycopg2 (SQLAlchemy 2.1 assumes psycopg 3, 2.0 psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}{sep}{rest}"
    return f"postgresql{sep}{rest}"  # SQLAlchemy names the missing driver


def _connect_args(url: str) -> dict:
    """libpq waits for an unreachable server as long as TCP does (minutes): give up after 15 s."""
    if url.startswith("postgres") and "connect_timeout" not in url:
        return {"connect_args": {"connect_timeout": 15}}
    return {}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``url``. A server that cannot be reached or refuses the login, a
    missing driver, or a journal broken in the middle is a StudyError (one paragraph)."""
    if "://" not in url:
        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            check_journal(url)
            return optuna.storages.journal.JournalStorage(JournalBackend(url, lock_obj=JournalFlock(url)))
        except OSError as e:
            raise storage_error(url, e) from None
    import sqlalchemy

    try:
        if url.startswith("postgres"):
            # Optuna creates its tables and types on first use, check-then-create; workers starting
            # together on an empty database would race in PostgreSQL's catalog (the losers die of a
            # duplicate key), so they open the storage one at a time
            with _pg_lock(url, _SCHEMA_KEY):
                return optuna.storages.RDBStorage(engine_url(url), engine_kwargs={"pool_pre_ping": True,
                                                                                  **_connect_args(url)})
        return optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError) as e:
        raise storage_error(url, e) from None


def storage_error(url: str, e: BaseException):
    """A StudyError for a storage that cannot be used: its redacted URL and the driver's first line."""
    from .errors import StudyError

    first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
    first = redact(first)[:300]
    if "://" in url:
        advice = ("Check that the server runs and is reachable, the database exists, the user and password are "
                  "right (or in PGPASSWORD / ~/.pgpass) and its driver is installed.")
    else:
        advice = "Check that the journal file and its folder can be read and written."
    return StudyError(f"the storage {redact(url)[:200]}", "", f"it cannot be used: {type(e).__name__}: {first}. "
                      + advice)


def _sha1_key(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big", signed=True)


def advisory_key(study_name: str) -> int:
    """The PostgreSQL advisory-lock key of a study: a signed 64-bit integer from SHA-1, the same
    in every process, machine and version (Python's ``hash()`` is salted per process)."""
    return _sha1_key(f"ablate:{study_name}")


_SCHEMA_KEY = _sha1_key("ablate-schema")  # no study key: those all hash "ablate:<name>"


_engines: dict[str, object] = {}
_engines_pid = os.getpid()


def _lock_engine(url: str):
    """One SQLAlchemy engine per URL per process for the study lock. A forked child never uses
    its parent's engine (their pooled connections would share one socket): the cache is dropped,
    without closing the parent's connections, when the process id changes."""
    global _engines_pid
    import sqlalchemy

    if _engines_pid != os.getpid():
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
        _engines_pid = os.getpid()
    if url not in _engines:
        _engines[url] = sqlalchemy.create_engine(engine_url(url), pool_size=1, max_overflow=2, pool_pre_ping=True,
                                                 **_connect_args(url))
    return _engines[url]


@contextlib.contextmanager
def _pg_lock(url: str, key: int) -> Iterator[None]:
    """A transaction-level PostgreSQL advisory lock: the transaction's end (or a dropped
    connection) releases it, so no failure path can leave it held."""
    import sqlalchemy

    with _lock_engine(url).connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                conn.rollback()  # releases the lock (a lost connection released it already)


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of this study (processes and, for PostgreSQL, machines)."""
    if url.startswith("postgres"):
        with _pg_lock(url, advisory_key(study_name)):
            yield
        return
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
    elif "://" in url:
        path = Path("runs") / f"{study_name}.lock-target"  # other servers: lock among local workers
    else:
        path = Path(url)
    lock_path = path.with_name(path.name + ".ablate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_or_create(storage, study_name: str) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)



def open_study(url: str, study_name: str, pruner=None) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    """The storage of ``url`` and its study ``study_name``, created under the study lock if new."""
    store = open_storage(url)
    with study_lock(url, study_name):
        load_or_create(store, study_name)
    return store, optuna.load_study(study_name=study_name, storage=store, pruner=pruner)

# --------------------------------------------------------------------------------------
# trial records: claim, record, read (the runner's only way to touch trials)
# --------------------------------------------------------------------------------------

CHECKPOINT_ATTR = ATTR + "checkpoint_dir"  # system attribute: the folder of a trial's mid-trial checkpoints
RESUMED_ATTR = ATTR + "resumed_from"  # system attribute: {"step", "epoch", "file"} of the checkpoint it resumed


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as the runner reads it: its (cell key, seed), state, value, status for
    invocation ``run`` (:func:`ablate.storage_trials.trial_status`), wall time and user attributes."""

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


def claim_next(url: str, ostudy: optuna.Study,
               choose: Callable[[list[FrozenTrial]], Claim | None]) -> tuple[Claim | None, list[FrozenTrial]]:
    """Under the study lock: mark the lost trials (:func:`reap_lost`), ask ``choose(trials)`` for
    the next (cell, seed), and create it RUNNING, owned by this process (``choose`` may have
    created it already: a sampled trial of a search). Returns the claim (None: nothing to run)
    and the trials seen."""
    store = ostudy._storage
    with study_lock(url, ostudy.study_name):
        trials = ostudy.get_trials(deepcopy=False)
        if reap_lost(store, trials):
            trials = ostudy.get_trials(deepcopy=False)
        claim = choose(trials)
        if claim is None or claim.trial_id is not None:
            return claim, trials
        earlier = checkpoint_dir_of(trials, claim.cell.key, claim.seed)
        claim.checkpoint_dir = earlier or claim.checkpoint_dir
        system = {CHECKPOINT_ATTR: claim.checkpoint_dir} if claim.checkpoint_dir else {}
        claim.trial_id = create_running_trial(ostudy, claim.params, claim.choices, claim.attrs, system)
    return claim, trials


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
        for k, v in claim.attrs.items():
            store.set_trial_user_attr(tid, k, v)
        if claim.checkpoint_dir:
            store.set_trial_system_attr(tid, CHECKPOINT_ATTR, claim.checkpoint_dir)
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
    """Write a finished trial's result and final state; returns 'complete' or 'pruned'."""
    for k, v in result.items():
        storage.set_trial_user_attr(trial_id, k, v)
    if result.get("pruned_epoch") is not None:
        # final, like a failure of its own: storage counts PRUNED as done; the value is the
        # last reported one, as Optuna's own tell() records it
        storage.set_trial_state_values(trial_id, TrialState.PRUNED, [result["curve"][-1]])
        return "pruned"
    storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [result["value"]])
    return "complete"


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
