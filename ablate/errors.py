"""User-facing errors: one paragraph, exit code 2, never a traceback."""
from __future__ import annotations

import sys
import textwrap


class StudyError(Exception):
    """A mistake in a study file or on the command line.

    ``where`` is the file, ``key`` the dotted key at fault (may be empty), ``message`` what is
    wrong and what would be valid.
    """

    def __init__(self, where: str, key: str, message: str):
        self.where, self.key, self.message = where, key, message
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        at = f"{self.where}, key '{self.key}'" if self.key else self.where
        return f"error in {at}: {self.message} Nothing was run."


def exit_with(err: StudyError) -> "NoReturn":  # noqa: F821
    print(textwrap.fill(err.paragraph(), width=100, break_on_hyphens=False, break_long_words=False), file=sys.stderr)
    raise SystemExit(2)
