"""Every file the harness writes is written whole or not at all.

:func:`write_text`, :func:`write_bytes` and :func:`replacing` write into a temporary file in the
target's own folder (``.<name>.<random>.tmp``), flush and ``fsync`` it, then ``os.replace`` it
over the target and ``fsync`` the folder. A kill, a full disk (ENOSPC), an exhausted quota
(EDQUOT), a file size limit (EFBIG, ``ulimit -f``) or a folder that turned read-only or
forbidden (EROFS, EACCES) therefore leaves the previous file exactly as it was: the temporary
file is removed and a :class:`ablate.config.errors.RetryableError` names the path and the reason (one
paragraph, exit 3 for the commands). A new file gets the mode a plain ``open`` would give it
(0666 less the umask); a replaced file keeps its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import RetryableError, disk_error


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse a folder's fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: str | Path, doing: str = "write") -> Iterator[IO[bytes]]:
    """A binary file to write ``path``'s new content into; when the block ends without an
    exception it becomes ``path`` (fsync, rename, fsync of the folder). Any failure removes the
    temporary file and leaves ``path`` as it was; an OSError becomes a RetryableError naming
    ``path``. The folder must exist."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise disk_error(path, e, doing) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _mode_for(path))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise disk_error(path, e, doing) from None
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module's docstring); returns the path."""
    with replacing(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module's docstring); returns the path."""
    return write_bytes(path, text.encode(encoding))


def make_folder(folder: str | Path) -> Path:
    """``mkdir -p`` whose failure is a RetryableError naming the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(folder, e, "make") from None
    return folder


__all__ = ["RetryableError", "fsync_dir", "make_folder", "replacing", "write_bytes", "write_text"]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the block's duration; the kernel
    drops it with its holder, so a killed process leaves no stale lock."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
