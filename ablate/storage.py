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

A worker knows a trial's owner is on its own machine when the owner's host name *and* node
(boot id and PID namespace) equal its own; only then is the process table authoritative. Any
other owner is judged by its heartbeat, which assumes the machines' clocks agree to well within
the grace period (NTP). ``ABLATE_HEARTBEAT_S`` and ``ABLATE_HEARTBEAT_GRACE_S`` override the
heartbeat interval and the grace period (tests shorten them).

The journal file (the default storage) is written under an ``flock`` on ``JOURNAL.write-lock``,
which the kernel releases when its holder dies, so a killed writer leaves no stale lock. A write
cut short (a kill or a full disk mid-line) leaves a torn last line: it is cut off, after a
backup copy, when the journal is opened and before every append (:func:`check_journal`). A
broken line *inside* the journal is not guessed at: opening stops with the command that repairs
it (``python -m ablate.storage repair JOURNAL``).

Credentials: a storage URL may carry a password (``postgresql://user:pass@host/db``); only
``redact``-ed forms of it are ever printed or written. libpq also takes the password from
``PGPASSWORD`` or ``~/.pgpass``, which keeps it off command lines altogether.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages.journal._file import BaseJournalFileLock, get_lock_file
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 10.0
GRACE_S = 120.0
ATTR = "ablate:"  # prefix of our system attributes
STORAGE_ENV = "ABLATE_STORAGE"  # storage URL when --storage is not given (keeps it off command lines)
RUN_ENV = "ABLATE_RUN_ID"  # one id per invocation of the runner, shared by its --workers


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
            return optuna.storages.journal.JournalStorage(_JournalBackend(url, lock_obj=JournalFlock(url)))
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


# --------------------------------------------------------------------------------------
# the journal file: a kill-safe lock and torn lines
# --------------------------------------------------------------------------------------

class JournalFlock(BaseJournalFileLock):
    """The journal writers' lock: an ``flock`` on ``JOURNAL.write-lock``. Optuna's own file locks
    are files that a killed holder leaves behind (the next writer waits out a grace period, then
    breaks them); the kernel drops an flock with its process. One open file per acquisition, so
    threads of one process exclude each other as processes do."""

    def __init__(self, journal: str):
        self.path = journal + ".write-lock"
        self._held = threading.local()

    def acquire(self) -> bool:
        fh = open(self.path, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except BaseException:
            fh.close()
            raise
        self._held.fh = fh
        return True

    def release(self) -> None:
        fh, self._held.fh = getattr(self._held, "fh", None), None
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


class _JournalBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, but every append first cuts a torn last line (left by a writer that
    died mid-write) so the new records start on a line of their own."""

    def append_logs(self, logs: list[dict]) -> None:
        with get_lock_file(self._lock):
            _cut_torn_tail(self._file_path, quick=True)
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def _first_bad_line(data: bytes) -> tuple[int, int, bool] | None:
    """(1-based line number, byte offset, is-last) of the first line that is not a complete
    JSON record, or None."""
    offset, lines = 0, data.split(b"\n")
    complete = lines[:-1]  # the last piece is b"" when the file ends with a newline
    for i, line in enumerate(complete):
        try:
            json.loads(line)
        except ValueError:
            return i + 1, offset, i == len(complete) - 1 and lines[-1] == b""
        offset += len(line) + 1
    return (len(lines), offset, True) if lines[-1] else None


def _cut_torn_tail(path: str, quick: bool = False, cut: bool = True) -> None:
    """With the writers' lock held: back up and cut a torn last line; a broken line before the
    last is a StudyError. ``quick`` only looks at the last byte (a torn line has no newline);
    without ``cut`` (no lock: the journal cannot be written here) a torn last line is only
    reported, and Optuna's reader skips it."""
    from .errors import StudyError

    size = os.path.getsize(path)
    if size == 0:
        return
    with open(path, "rb") as f:
        if quick:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
        data = f.read()
    if data.startswith(b"SQLite format 3\0"):
        raise StudyError(path, "", f"this is a SQLite database, not a journal: give --storage sqlite:///{path}.")
    bad = _first_bad_line(data)
    if bad is None:
        return
    line, offset, last = bad
    if line == 1 and not last and not _salvage(data.split(b"\n", 1)[0]):
        raise StudyError(path, "", "this is not an Optuna journal: its first line is not a journal record. Give "
                         "--storage a journal file (or a new path ending in .journal), or a database URL.")
    if not last:
        raise StudyError(path, "", f"line {line} of the journal is broken (not a complete record) and records "
                         f"follow it, so the study cannot be read. `python -m ablate.storage repair {path}` keeps a "
                         f"backup copy, then drops the broken part of that line and keeps every complete record.")
    if not cut:
        print(f"ablate: {path}: line {line} was cut short (a write interrupted by a kill or a full disk); it is "
              "skipped, and left in place because this journal cannot be written here", file=sys.stderr, flush=True)
        return
    torn = data[offset:]
    keep = _salvage(torn[:-1]) if torn.endswith(b"\n") else b""  # a record appended onto the torn piece
    try:
        backup = _backup(path, "torn")
    except OSError as e:
        raise StudyError(path, "", f"line {line} of the journal was cut short (a write interrupted by a kill or a "
                         f"full disk) and no backup copy could be written before cutting it ({e.strerror}); free "
                         f"some space, or run `python -m ablate.storage repair {path}`.") from None
    with open(path, "rb+") as f:
        f.truncate(offset)
        if keep:
            f.seek(offset)
            f.write(keep + b"\n")
        f.flush()
        os.fsync(f.fileno())
    what = "its torn start (kept the complete record after it)" if keep else "that partial line"
    print(f"ablate: {path}: line {line} was cut short (a write interrupted by a kill or a full disk); removed "
          f"{what} and kept every complete record before it; the file as it was is in {backup}",
          file=sys.stderr, flush=True)


def _backup(path: str, tag: str) -> str:
    """A copy of ``path`` under a name no earlier backup has, synced to disk; returns the name."""
    import shutil

    stem = f"{path}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = stem, 0
    while os.path.exists(name):
        n += 1
        name = f"{stem}-{n}"
    shutil.copyfile(path, name)
    with open(name, "rb+") as f:
        os.fsync(f.fileno())
    return name


def check_journal(path: str) -> None:
    """Check a journal file before Optuna reads it: a torn last line is cut off after a backup
    copy (and said on stderr); a broken line before the last stops with the repair command."""
    if not os.path.exists(path):
        return
    lock = JournalFlock(path)
    try:
        lock.acquire()
    except OSError:  # a journal in a folder this process cannot write (an archive): read it as it is
        _cut_torn_tail(path, cut=False)
        return
    try:
        _cut_torn_tail(path)
    finally:
        lock.release()


def repair_journal(path: str, out=None) -> int:
    """Keep a backup, then rewrite the journal without its broken pieces: a line that holds a torn
    fragment followed by a complete record (a writer died mid-line, the next one appended to it)
    keeps the record; a line with no complete record is dropped. Returns the lines changed."""
    out = out or sys.stdout
    lock = JournalFlock(path)
    lock.acquire()
    try:
        kept, changed = [], 0
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        for n, line in enumerate(lines, 1):
            if not line:
                continue
            fixed = _salvage(line)
            if fixed != line:
                changed += 1
                print(f"line {n}: " + ("kept its complete record after a torn fragment" if fixed
                                       else "dropped (no complete record)"), file=out)
            if fixed:
                kept.append(fixed)
        if not changed:
            print(f"{path}: nothing to repair", file=out)
            return 0
        backup = _backup(path, "before-repair")
        tmp = path + ".repair-tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        print(f"{path}: repaired {changed} line(s); the file as it was is in {backup}", file=out)
        return changed
    finally:
        lock.release()


def _salvage(line: bytes) -> bytes:
    """The line itself if it is a record; else its longest tail that is one (b"" if none)."""
    try:
        json.loads(line)
        return line
    except ValueError:
        pass
    start = line.find(b'{"op_code"', 1)
    while start > 0:
        try:
            json.loads(line[start:])
            return line[start:]
        except ValueError:
            start = line.find(b'{"op_code"', start + 1)
    return b""


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
            ATTR + "start": _proc_start(pid), ATTR + "heartbeat": time.time(),
            ATTR + "run": os.environ.get(RUN_ENV, "")}


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


def trial_status(t: FrozenTrial, run: str | None = None) -> str:
    """'done' (complete/pruned/final failure), 'running', 'free' (lost, interrupted, or a harness
    failure of an earlier invocation), 'failed here' (a harness failure of invocation ``run``:
    not retried by it) or 'other'."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "done"
    if t.state == TrialState.FAIL:
        kind = t.system_attrs.get(ATTR + "fail_kind")
        if kind == "error":
            return "done"
        if kind == "harness" and run and t.system_attrs.get(ATTR + "run") == run:
            return "failed here"
        return "free"
    if t.state == TrialState.RUNNING:
        return "running"
    return "other"


TAKEN = ("done", "running", "failed here")  # statuses whose (cell, seed) an invocation does not claim


def reap_lost(storage, trials: list[FrozenTrial], grace: float | None = None) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL(lost), and RUNNING trials with no owner at
    all (a claim that failed before it was complete). Call with the study lock held: every claim
    names its owner before the lock is released."""
    grace = grace_s() if grace is None else grace
    now = time.time()
    n = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        attrs = t.system_attrs
        if ATTR + "pid" not in attrs:
            mark_failed(storage, t._trial_id, "lost", "a RUNNING trial with no owner (its claim failed half-way); "
                        "its cell x seed is free again")
        elif not _alive(attrs, now, grace):
            mark_failed(storage, t._trial_id, "lost",
                        f"worker {attrs.get(ATTR + 'host')}:{attrs.get(ATTR + 'pid')}"
                        " stopped mid-trial (killed or lost); the trial is run again")
        else:
            continue
        n += 1
    return n


def mark_failed(storage, trial_id: int, kind: str, reason: str) -> None:
    """FAIL a trial with its kind: 'error' is final; 'harness' is retried by the next invocation;
    'lost' and 'interrupted' free its cell x seed at once."""
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
