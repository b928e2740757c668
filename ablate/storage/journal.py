"""The journal file (Optuna's default storage here): a kill-safe writers' lock and torn lines.

The journal is written under an ``flock`` on ``JOURNAL.write-lock``, which the kernel releases
when its holder dies, so a killed writer leaves no stale lock. A write cut short (a kill or a
full disk mid-line) leaves a torn last line: it is cut off, after a backup copy, when the
journal is opened and before every append (:func:`check_journal`). A broken line *inside* the
journal is not guessed at: opening stops with the command that repairs it
(``python -m ablate.storage repair JOURNAL``, :func:`repair_journal`).
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time

import optuna
from optuna.storages.journal._file import BaseJournalFileLock, get_lock_file


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


class JournalBackend(optuna.storages.journal.JournalFileBackend):
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
    from ..config.errors import StudyError

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
        raise broken_line_error(path, 1, data)
    bad = _first_bad_line(data)
    if bad is None:
        return
    line, offset, last = bad
    if not last:
        raise broken_line_error(path, line, data)
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


def broken_line_error(path: str, line: int, data: bytes):
    """The StudyError for a journal whose line ``line`` (1-based, not its last) is not a complete
    record: a SQLite file, a file that is no journal at all, or a broken line with the repair command."""
    from ..config.errors import StudyError

    if data.startswith(b"SQLite format 3\0"):
        return StudyError(path, "", f"this is a SQLite database, not a journal: give --storage sqlite:///{path}.")
    if line == 1 and not _salvage(data.split(b"\n", 1)[0]):
        return StudyError(path, "", "this is not an Optuna journal: its first line is not a journal record. Give "
                          "--storage a journal file (or a new path ending in .journal), or a database URL.")
    return StudyError(path, "", f"line {line} of the journal is broken (not a complete record) and records "
                      f"follow it, so the study cannot be read. `python -m ablate.storage repair {path}` keeps a "
                      f"backup copy, then drops the broken part of that line and keeps every complete record.")


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
