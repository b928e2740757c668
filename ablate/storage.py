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

A worker knows a trial's owner is on its own machine when the owner's host name *and* node
(boot id and PID namespace) equal its own; only then is the process table authoritative. Any
other owner is judged by its heartbeat, which assumes the machines' clocks agree to well within
the grace period (NTP). ``ABLATE_HEARTBEAT_S`` and ``ABLATE_HEARTBEAT_GRACE_S`` override the
heartbeat interval and the grace period (tests shorten them).

Credentials: a storage URL may carry a password (``postgresql://user:pass@host/db``); only
``redact``-ed forms of it are ever printed or written. libpq also takes the password from
``PGPASSWORD`` or ``~/.pgpass``, which keeps it off command lines altogether.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import re
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
STORAGE_ENV = "ABLATE_STORAGE"  # storage URL when --storage is not given (keeps it off command lines)


def heartbeat_s() -> float:
    return float(os.environ.get("ABLATE_HEARTBEAT_S", HEARTBEAT_S))


def grace_s() -> float:
    return float(os.environ.get("ABLATE_HEARTBEAT_GRACE_S", GRACE_S))


def default_run_dir(study_name: str) -> Path:
    return Path("runs") / study_name


def storage_url(run_dir: Path, storage: str | None) -> str:
    """The storage URL: ``storage`` if given, else ``$ABLATE_STORAGE``, else the embedded journal
    file in ``run_dir``."""
    return storage or os.environ.get(STORAGE_ENV) or str(run_dir / "optuna.journal")


# scheme://user:password@host (the password may hold '@' and ':'; it ends at the token's last
# '@') and ?password=... / &password=... query parameters
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^\s]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a URL, or a command line holding URLs) with every password replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


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


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("postgres"):
        # Optuna creates its tables and types on first use, check-then-create; workers starting
        # together on an empty database would race in PostgreSQL's catalog (the losers die of a
        # duplicate key), so they open the storage one at a time
        with _pg_lock(url, _SCHEMA_KEY):
            return optuna.storages.RDBStorage(engine_url(url), engine_kwargs={"pool_pre_ping": True})
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(url, lock_obj=optuna.storages.journal.JournalFileOpenLock(url))
    return optuna.storages.journal.JournalStorage(backend)


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
        _engines[url] = sqlalchemy.create_engine(engine_url(url), pool_size=1, max_overflow=2, pool_pre_ping=True)
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


# --------------------------------------------------------------------------------------
# worker identity and liveness
# --------------------------------------------------------------------------------------

def _proc_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _node() -> str:
    """This machine's boot and PID namespace: two containers may share a host name, but only
    processes with the same node see each other's process table."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{boot}/{pidns}"


def owner_attrs() -> dict:
    """System attributes naming this process as a trial's owner, with a fresh heartbeat."""
    pid = os.getpid()
    return {ATTR + "host": socket.gethostname(), ATTR + "node": _node(), ATTR + "pid": pid,
            ATTR + "start": _proc_start(pid), ATTR + "heartbeat": time.time()}


def _same_machine(attrs: dict) -> bool:
    if attrs.get(ATTR + "host") != socket.gethostname():
        return False
    node = attrs.get(ATTR + "node")
    return node is None or node == _node()  # records from before the node attribute: host name alone


def _alive(attrs: dict, now: float, grace: float) -> bool:
    pid, start = attrs.get(ATTR + "pid"), attrs.get(ATTR + "start")
    if _same_machine(attrs) and isinstance(pid, int):
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


def reap_lost(storage, trials: list[FrozenTrial], grace: float | None = None) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL(lost). Call with the study lock held."""
    grace = grace_s() if grace is None else grace
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
    """Background thread stamping the trial's heartbeat every ``heartbeat_s()`` seconds."""

    def __init__(self, storage, trial_id: int, every: float | None = None):
        self.storage, self.trial_id, self.every = storage, trial_id, heartbeat_s() if every is None else every
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
