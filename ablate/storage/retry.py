"""Storage I/O through outages: every call retried with bounded backoff, then one paragraph.

A PostgreSQL server that restarts, a dropped connection or a network file system that stalls
should not fail trials: :class:`RetryingStorage` wraps an Optuna storage (a journal file, or a
database behind Optuna's cache) and retries each call that fails transiently (SQLAlchemy's
``OperationalError`` / ``InterfaceError`` or an invalidated connection; ``EIO``, ``EAGAIN``,
``ETIMEDOUT``, ``ECONNREFUSED``, ``ECONNRESET``, ``ESTALE``) after 0.5, 1, 2, 4, 8, 8, ... seconds
for up to ``$ABLATE_STORAGE_RETRY_S`` seconds (:data:`RETRY_S`, 60 by default; 0: no retry).
Then, or at once for a full disk or a folder that cannot be written (ENOSPC, EDQUOT, EFBIG,
EROFS, EACCES), it raises :class:`ablate.config.errors.RetryableError`: one paragraph naming the storage
(password redacted) or the journal file, exit 3 for the runner, the trial in flight left to resume
from its checkpoint. A retried write whose first attempt did reach the server may be applied
twice: a trial created twice is reaped as lost once this worker stops, a state set twice fails as
the harness's on the second attempt.

While a call runs in the main thread a SIGINT or SIGTERM is held back (:func:`hold_signal`) and
raised as a KeyboardInterrupt when the call returns, or before the next wait of a retry, so an
interrupted runner never leaves a record half written.
"""
from __future__ import annotations

import errno
import re
import sys
import threading
import time
from typing import Any, Callable

from optuna.storages import BaseStorage

from ..config.errors import RetryableError, disk_error, disk_fault

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


RETRY_ENV = "ABLATE_STORAGE_RETRY_S"
RETRY_S = 60.0
_TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET,
                               errno.ESTALE, errno.EHOSTUNREACH, errno.ENETUNREACH})
_main = {"depth": 0, "held": False}  # the main thread's storage calls in progress, and a signal held back
_said: set = set()


def retry_s() -> float:
    """Seconds a storage call is retried for (``$ABLATE_STORAGE_RETRY_S``, default :data:`RETRY_S`)."""
    import os

    try:
        return max(0.0, float(os.environ.get(RETRY_ENV, RETRY_S)))
    except ValueError:
        return RETRY_S


def transient(e: BaseException) -> bool:
    """Whether a failed storage call may succeed if tried again shortly (a connection, not the
    request): ``e`` or one of its causes (Optuna wraps a failed commit in StorageInternalError)."""
    import sqlalchemy.exc as sa

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa.OperationalError, sa.InterfaceError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    return False


def hold_signal() -> bool:
    """Called by the runner's signal handler: True when the main thread is inside a storage call
    (the signal is then raised as a KeyboardInterrupt once the call is over)."""
    if _main["depth"] and threading.current_thread() is threading.main_thread():
        _main["held"] = True
        return True
    return False


def _release() -> None:
    if _main["held"] and not _main["depth"]:
        _main["held"] = False
        raise KeyboardInterrupt


def call(fn: Callable, what: str, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)``, retried through transient failures (see the module's docstring);
    ``what`` names the storage in messages (redacted)."""
    main = threading.current_thread() is threading.main_thread()
    deadline, delay = time.monotonic() + retry_s(), 0.5
    while True:
        if main:
            _main["depth"] += 1
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - sorted below: a full disk, an outage, or the caller's
            fault = disk_fault(e)
            if fault is not None:
                raise disk_error(fault.filename or what, fault) from None
            if not transient(e):
                raise
            if time.monotonic() + delay > deadline:
                raise outage(what, e) from None
            if what not in _said:
                _said.add(what)
                print(f"ablate: the storage {what} does not answer ({_first_line(e)}); retrying for up to "
                      f"{retry_s():g} s (${RETRY_ENV})", file=sys.stderr, flush=True)
        finally:
            if main:
                _main["depth"] -= 1
                _release()
        time.sleep(delay)
        delay = min(2 * delay, 8.0)


def outage(what: str, e: BaseException) -> RetryableError:
    return RetryableError(f"the storage {what}", f"it has not answered for {retry_s():g} s ({_first_line(e)}). The "
                          "trial in flight is left to resume from its checkpoint. Check the server, the connection "
                          f"or the disk the journal is on, or give it longer with ${RETRY_ENV}.")


def _first_line(e: BaseException) -> str:
    """The failure in one line: of the driver's or the system's error behind ``e`` when there is
    one (Optuna's wrapper only says the commit failed), its password redacted."""
    import sqlalchemy.exc as sa

    seen, cause = set(), e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (sa.DBAPIError, OSError)):
            e = cause
            break
        cause = cause.__cause__ or cause.__context__
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return f"{type(e).__name__}: {redact(text[0])[:200]}" if text else type(e).__name__


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return call(getattr(self._inner, name), self._what, *args, **kwargs)
    method.__name__ = name
    return method


class RetryingStorage(BaseStorage):
    """An Optuna storage whose every call goes through :func:`call`; anything else is the inner
    storage's."""

    def __init__(self, inner: BaseStorage, what: str):
        self._inner, self._what = inner, what

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)


for _name in [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(RetryingStorage, _name, _delegate(_name))
RetryingStorage.__abstractmethods__ = frozenset()
