"""Optuna storage as the single source of truth for a study's trials.

A trial is one (cell, seed). Its record in Optuna carries the cell key, the seed and the
resolved configuration as user attributes, and the worker's identity and heartbeat as system
attributes. Workers never coordinate directly: they *claim* the next trial while holding a
study-wide lock (an ``flock`` on a file beside a file-based storage, a PostgreSQL advisory lock
for a server), so the "which (cell, seed) is free" decision is serialised:

* a (cell, seed) with a COMPLETE or PRUNED trial, or a FAIL whose kind is ``error`` (NaN loss,
  out of memory: terminal, listed in the report), is done and never run again;
* a RUNNING trial whose worker is alive is left alone;
* a RUNNING trial whose worker is gone (same host and the process is dead, or its heartbeat is
  older than the grace period) is marked FAIL with kind ``lost`` and its (cell, seed) is free
  again; so is one interrupted with Ctrl-C (kind ``interrupted``);
* the first free (cell, seed) in plan order is created directly in state RUNNING.

Hence every cell x seed finishes exactly once, whatever the number of workers and restarts.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 10.0
GRACE_S = 120.0
ATTR = "ablate:"  # prefix of our system attributes


def default_run_dir(study_name: str) -> Path:
    return Path("runs") / study_name


def storage_url(run_dir: Path, storage: str | None) -> str:
    """The storage URL: ``storage`` if given, else the embedded journal file in ``run_dir``."""
    return storage or str(run_dir / "optuna.journal")


def redact(url: str) -> str:
    """The URL with any password removed, for logs and reports."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if "://" in url:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if url.startswith("postgres") else {})
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(url, lock_obj=optuna.storages.journal.JournalFileOpenLock(url))
    return optuna.storages.journal.JournalStorage(backend)


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of this study (processes and, for PostgreSQL, machines)."""
    if url.startswith("postgres"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        key = int.from_bytes(hashlib.sha1(f"ablate:{study_name}".encode()).digest()[:8], "big", signed=True)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        engine.dispose()
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


# --------------------------------------------------------------------------------------
# worker identity and liveness
# --------------------------------------------------------------------------------------

def _proc_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_attrs() -> dict:
    """System attributes naming this process as a trial's owner, with a fresh heartbeat."""
    pid = os.getpid()
    return {ATTR + "host": socket.gethostname(), ATTR + "pid": pid, ATTR + "start": _proc_start(pid),
            ATTR + "heartbeat": time.time()}


def _alive(attrs: dict, now: float, grace: float) -> bool:
    host, pid, start = attrs.get(ATTR + "host"), attrs.get(ATTR + "pid"), attrs.get(ATTR + "start")
    if host == socket.gethostname() and isinstance(pid, int):
        # same machine: the process table is authoritative (and catches kill -9 at once)
        return _proc_start(pid) == start and start != ""
    beat = attrs.get(ATTR + "heartbeat", 0.0)
    return now - float(beat) < grace


def trial_status(t: FrozenTrial) -> str:
    """'done' (complete/pruned/terminal failure), 'running', 'free' (lost/interrupted) or 'other'."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "done"
    if t.state == TrialState.FAIL:
        return "done" if t.system_attrs.get(ATTR + "fail_kind") == "error" else "free"
    if t.state == TrialState.RUNNING:
        return "running"
    return "other"


def reap_lost(storage, trials: list[FrozenTrial], grace: float = GRACE_S) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL(lost). Call with the study lock held."""
    now = time.time()
    n = 0
    for t in trials:
        if t.state == TrialState.RUNNING and ATTR + "pid" in t.system_attrs and not _alive(t.system_attrs, now, grace):
            mark_failed(storage, t._trial_id, "lost",
                        f"worker {t.system_attrs.get(ATTR + 'host')}:{t.system_attrs.get(ATTR + 'pid')}"
                        " stopped mid-trial (killed or lost); the trial is run again")
            n += 1
    return n


def mark_failed(storage, trial_id: int, kind: str, reason: str) -> None:
    """FAIL a trial with its kind ('error' is final; 'lost'/'interrupted' free its cell x seed)."""
    storage.set_trial_system_attr(trial_id, ATTR + "fail_kind", kind)
    storage.set_trial_system_attr(trial_id, ATTR + "fail_reason", reason[:500])
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def create_running_trial(study: optuna.Study, params: dict, choices: dict, user_attrs: dict) -> int:
    """Create a trial directly in state RUNNING, owned by this process; returns its trial id."""
    dists = {k: CategoricalDistribution(choices[k]) for k in params}
    template = FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, datetime_start=dt.datetime.now(),
        datetime_complete=None, params=params, distributions=dists, user_attrs=user_attrs,
        system_attrs=owner_attrs(), intermediate_values={}, trial_id=-1)
    return study._storage.create_new_trial(study._study_id, template_trial=template)


class Heartbeat:
    """Background thread stamping the trial's heartbeat every ``HEARTBEAT_S`` seconds."""

    def __init__(self, storage, trial_id: int, every: float = HEARTBEAT_S):
        self.storage, self.trial_id, self.every = storage, trial_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):
                self.storage.set_trial_system_attr(self.trial_id, ATTR + "heartbeat", time.time())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
