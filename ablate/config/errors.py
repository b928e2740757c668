"""User-facing errors: one paragraph, never a traceback. A mistake in a study file or on the
command line is a :class:`StudyError` (exit 2, nothing was run); a fault of the machine or its
services (a full disk, a read-only folder, a storage server that stays away) is a
:class:`RetryableError` (exit 3: the same command again goes on where it stopped).

Every message that quotes what the user wrote quotes it through :func:`brief`, so a huge value
(a long string, a list of millions of items, an alias-expanded tree) is summarised, never
echoed; :class:`StudyError` cuts whatever still comes out too long.
"""
from __future__ import annotations

import datetime
import errno
import sys
import textwrap

BRIEF_CHARS = 60  # the longest quotation of a user value in a message
MAX_MESSAGE_CHARS = 2000  # a message longer than this is cut in the middle (a last guard)
MAX_KEY_CHARS = 120  # a dotted key longer than this (a user's giant key) is cut


def brief(value, limit: int = BRIEF_CHARS) -> str:
    """``repr(value)`` when that is short; otherwise a summary ("a list of 10,000,000 items",
    a string's start with its length). Never builds the full repr of a large value."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit - 20]!r}... (a string of {len(value):,} characters)"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() <= 3 * limit:  # at most ~limit digits; repr is cheap and short
            text = repr(value)
            if len(text) <= limit:
                return text
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, (bytes, bytearray)):
        return f"binary data of {len(value):,} bytes"
    out: list = []
    if _bounded_repr(value, out, limit):
        return "".join(out)
    if isinstance(value, dict):
        return f"a mapping of {_count(len(value), 'key')}"
    if isinstance(value, (list, tuple, set, frozenset)):
        what = "a list" if isinstance(value, list) else f"a {type(value).__name__}"
        return f"{what} of {_count(len(value), 'item')}"
    return f"a value of type {type(value).__name__}"


def _bounded_repr(value, out: list, limit: int) -> bool:
    """Append the repr of ``value`` to ``out`` piece by piece; False as soon as it passes ``limit``
    characters, so the cost is bounded by ``limit`` however large ``value`` is."""
    if sum(map(len, out)) > limit:
        return False
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = brief(value, limit)
        out.append(text)
        return text == repr(value) and sum(map(len, out)) <= limit
    if isinstance(value, (datetime.date, datetime.time)):  # YAML timestamps
        out.append(repr(value))
        return sum(map(len, out)) <= limit
    if isinstance(value, dict):
        out.append("{")
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append(", ")
            if not _bounded_repr(k, out, limit):
                return False
            out.append(": ")
            if not _bounded_repr(v, out, limit):
                return False
        out.append("}")
        return sum(map(len, out)) <= limit
    if isinstance(value, (list, tuple, set, frozenset)):
        opening, closing = {list: "[]", tuple: "()"}.get(type(value), "{}")
        if not value and not isinstance(value, (list, tuple)):
            out.append(f"{type(value).__name__}()")
            return True
        out.append(opening)
        for i, v in enumerate(value):
            if i:
                out.append(", ")
            if not _bounded_repr(v, out, limit):
                return False
        out.append("," + closing if isinstance(value, tuple) and len(value) == 1 else closing)
        return sum(map(len, out)) <= limit
    return False


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half:,} characters cut ...] {text[-half:]}"


class StudyError(Exception):
    """A mistake in a study file or on the command line.

    ``where`` is the file, ``key`` the dotted key at fault (may be empty), ``message`` what is
    wrong and what would be valid. A key or message that is too long is cut in the middle.
    """

    def __init__(self, where: str, key: str, message: str):
        key = _cut(str(key), MAX_KEY_CHARS)
        self.where, self.key, self.message = where, key, _cut(message, MAX_MESSAGE_CHARS)
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        at = f"{self.where}, key '{self.key}'" if self.key else self.where
        return f"error in {at}: {self.message} Nothing was run."


def exit_with(err: StudyError) -> "NoReturn":  # noqa: F821
    print(textwrap.fill(err.paragraph(), width=100, break_on_hyphens=False, break_long_words=False), file=sys.stderr)
    raise SystemExit(2)


EXIT_RETRY = 3  # the exit status of a RetryableError (see ``python -m ablate.run --help``)
# errors of a disk or folder that no retry within seconds can fix: said at once, with the path
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_DISK_WORDS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EFBIG: "the file size limit was reached (ulimit -f, or the file system's own)",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "the operation is not permitted"}


class RetryableError(Exception):
    """A fault of the environment, not of the study: ``what`` is the file, folder or storage
    concerned, ``message`` what happened and what to do. One paragraph, exit 3."""

    def __init__(self, what: str, message: str):
        self.what, self.message = _cut(str(what), MAX_KEY_CHARS * 2), _cut(message, MAX_MESSAGE_CHARS)
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        return (f"error: {self.what}: {self.message} Finished trials are kept: run the same command again once it "
                "is fixed.")


def disk_reason(e: OSError) -> str:
    """What an OSError of a disk or folder means, in words ('the disk is full (No space ...)')."""
    words = _DISK_WORDS.get(e.errno)
    detail = e.strerror or type(e).__name__
    return f"{words} ({detail})" if words else detail


def disk_error(path, e: OSError, doing: str = "write") -> RetryableError:
    """A RetryableError for a file or folder that could not be written (or read, made...)."""
    return RetryableError(str(path), f"could not {doing} it: {disk_reason(e)}. Free some space or fix the "
                          "folder's permissions; the previous file, if any, is left as it was.")


def disk_fault(e: BaseException) -> OSError | None:
    """The OSError of a full disk or a forbidden or read-only folder in ``e`` or its causes
    (an exception raised while handling one included), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def exit_retry(err: RetryableError) -> "NoReturn":  # noqa: F821
    print(textwrap.fill(err.paragraph(), width=100, break_on_hyphens=False, break_long_words=False), file=sys.stderr)
    raise SystemExit(EXIT_RETRY)
