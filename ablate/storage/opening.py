"""Opening a study's storage and locking it: URLs and credentials, drivers, the study lock.

A storage is a journal file (the default, ``<run folder>/optuna.journal``) or a database URL
(SQLite, PostgreSQL, MySQL). The study lock serialises claims: an ``flock`` on a file beside a
file-based storage, a transaction-level PostgreSQL advisory lock for a server (released by the
transaction's end or a dropped connection). Only ``redact``-ed forms of a URL are ever printed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Iterator

import optuna

from ..config.atomic import locked
from .journal import JournalBackend, JournalFlock, check_journal
from .retry import redact  # noqa: F401 - re-exported: the storage API's redaction


STORAGE_ENV = "ABLATE_STORAGE"  # storage URL when --storage is not given (keeps it off command lines)


def default_run_dir(study_name: str) -> Path:
    return Path("runs") / study_name


def storage_url(run_dir: Path, storage: str | None) -> str:
    """The storage URL: ``storage`` if given, else ``$ABLATE_STORAGE``, else the embedded journal
    file in ``run_dir``."""
    return storage or os.environ.get(STORAGE_ENV) or str(run_dir / "optuna.journal")


def located(study_name: str, storage: str | None, run_dir: str | None) -> tuple[Path, str]:
    """The run folder and storage URL a read-only command (report, status) uses: ``--storage``,
    else ``$ABLATE_STORAGE`` (each checked: :func:`check_storage`), else ``run_dir``'s journal
    (default ``runs/<study>``). A bad value raises StudyError naming where it came from."""
    if storage:
        check_storage(storage, "--storage")
    elif os.environ.get(STORAGE_ENV):
        check_storage(os.environ[STORAGE_ENV], "$" + STORAGE_ENV)
    folder = Path(run_dir) if run_dir else default_run_dir(study_name)
    return folder, storage_url(folder, storage)


# the SQLAlchemy dialects Optuna's RDBStorage is known to work with, optionally +driver
_SCHEMES = re.compile(r"(sqlite|postgres|postgresql|mysql|mariadb)(\+[a-z0-9_]+)?")
STORAGE_FORMS = ("sqlite:///PATH.db, postgresql[+driver]://USER@HOST[:PORT]/DB, mysql[+driver]://USER@HOST/DB, "
                 "or a journal file (an existing one, or a path ending in .journal in an existing folder)")


def check_storage(value: str, key: str = "--storage") -> None:
    """Refuse a storage that is neither a known URL nor a journal path (StudyError, password
    redacted): a mistyped URL must not become a journal folder named after the password."""
    from ..config.errors import StudyError

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
    """The Optuna storage of ``url``, every later call retried through outages
    (:class:`ablate.storage.retry.RetryingStorage`). A server that cannot be reached or refuses the
    login now, a missing driver, or a journal broken in the middle is a StudyError (one paragraph)."""
    from .retry import RetryingStorage

    if "://" not in url:
        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            check_journal(url)
            return RetryingStorage(optuna.storages.journal.JournalStorage(JournalBackend(url, lock_obj=JournalFlock(url))),
                                   url)
        except OSError as e:
            raise storage_error(url, e) from None
    import sqlalchemy
    from optuna.storages._cached_storage import _CachedStorage

    try:
        if url.startswith("postgres"):
            # Optuna creates its tables and types on first use, check-then-create; workers starting
            # together on an empty database would race in PostgreSQL's catalog (the losers die of a
            # duplicate key), so they open the storage one at a time
            with _pg_lock(url, _SCHEMA_KEY, retry=False):
                rdb = optuna.storages.RDBStorage(engine_url(url), engine_kwargs={"pool_pre_ping": True,
                                                                                 **_connect_args(url)})
        else:
            rdb = optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError) as e:
        raise storage_error(url, e) from None
    return RetryingStorage(_CachedStorage(rdb), redact(url))  # Optuna's own cache, as load_study would add


def storage_error(url: str, e: BaseException):
    """A StudyError for a storage that cannot be used: its redacted URL and the driver's first line."""
    from ..config.errors import StudyError

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


lock_engines: dict[str, object] = {}  # per URL, this process's engine for the study lock
_engines_pid = os.getpid()


def _lock_engine(url: str):
    """One SQLAlchemy engine per URL per process for the study lock. A forked child never uses
    its parent's engine (their pooled connections would share one socket): the cache is dropped,
    without closing the parent's connections, when the process id changes."""
    global _engines_pid
    import sqlalchemy

    if _engines_pid != os.getpid():
        for engine in lock_engines.values():
            engine.dispose(close=False)
        lock_engines.clear()
        _engines_pid = os.getpid()
    if url not in lock_engines:
        lock_engines[url] = sqlalchemy.create_engine(engine_url(url), pool_size=1, max_overflow=2, pool_pre_ping=True,
                                                 **_connect_args(url))
    return lock_engines[url]


@contextlib.contextmanager
def _pg_lock(url: str, key: int, retry: bool = True) -> Iterator[None]:
    """A transaction-level PostgreSQL advisory lock: the transaction's end (or a dropped
    connection) releases it, so no failure path can leave it held. Taking it is retried through
    an outage (:mod:`ablate.storage.retry`) unless ``retry`` is False (opening: exit 2 at once)."""
    import sqlalchemy

    from .retry import call

    def take():
        conn = _lock_engine(url).connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        except BaseException:
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                conn.close()
            raise
        return conn

    conn = call(take, redact(url)) if retry else take()
    try:
        yield
    finally:
        with contextlib.suppress(sqlalchemy.exc.DBAPIError):
            conn.rollback()  # releases the lock (a lost connection released it already)
        with contextlib.suppress(sqlalchemy.exc.DBAPIError):
            conn.close()


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
    with locked(lock_path):
        yield


def load_or_create(storage, study_name: str) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)



def open_study(url: str, study_name: str, pruner=None) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    """The storage of ``url`` and its study ``study_name``, created under the study lock if new."""
    store = open_storage(url)
    with study_lock(url, study_name):
        load_or_create(store, study_name)
    return store, optuna.load_study(study_name=study_name, storage=store, pruner=pruner)
