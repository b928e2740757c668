"""The runner's progress output: a line per trial start and end, a few epoch lines, and a
study-level line of trials done / total, failures and an ETA.

The study-level numbers come from storage (every worker's finished trials, on every machine),
read when a worker claims its next trial; a worker only formats them. On a terminal the study
line is one bar that updates in place (a carriage return, no escape codes and no dependency);
elsewhere (CI, logs, ``nohup``) it is a plain line after each finished trial, e.g.
``[12/232 done, 0 failed, ETA 1h05m]``. mIoU is printed in points with one decimal, as in the
reports.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
import sys
import time

NO_ETA = "—"


def points(x: float | None) -> str:
    """A fraction in [0, 1] as points with one decimal (0.4163 -> '41.6'), as the reports print it."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def eta_seconds(times: list[float], remaining: int, workers: int) -> float | None:
    """Seconds left: the median finished trial's time x the trials left / the workers running
    them; None until a trial has finished (no time to go by)."""
    if not times:
        return None
    if remaining <= 0:
        return 0.0
    return statistics.median(times) * remaining / max(1, workers)


def duration(seconds: float | None) -> str:
    """A short duration: '45s', '3m20s', '1h05m', '2d03h'; '—' for None."""
    if seconds is None or math.isnan(seconds):
        return NO_ETA
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    m = round(seconds / 60)
    if m < 48 * 60:
        return f"{m // 60}h{m % 60:02d}m"
    h = round(seconds / 3600)
    return f"{h // 24}d{h % 24:02d}h"


@dataclasses.dataclass(frozen=True)
class StudyCounts:
    """Where a study stands: trials finished (failures included) of the total known now; for
    sequential seeds ``most`` is how many it could grow to, and ``total`` grows with each look."""

    done: int
    total: int
    failed: int
    eta: float | None
    most: int | None = None

    def text(self) -> str:
        up_to = f" (up to {self.most})" if self.most and self.most > self.total else ""
        return f"{self.done}/{self.total} done{up_to}, {self.failed} failed, ETA {duration(self.eta)}"


def plain_line(c: StudyCounts) -> str:
    """The study line where output is not a terminal: ``[12/232 done, 0 failed, ETA 1h05m]``."""
    return f"[{c.text()}]"


def bar_line(c: StudyCounts, columns: int = 80, prefix: str = "") -> str:
    """The study line on a terminal: a bar of finished trials, then the counts, fitted to
    ``columns`` (the bar shrinks, down to none)."""
    text = c.text()
    room = columns - 1 - len(prefix) - len(text) - 3
    cells = min(30, room)
    if cells < 5:
        return f"{prefix}{text}"
    fill = cells if c.total <= 0 else min(cells, cells * c.done // c.total)
    return f"{prefix}[{'#' * fill}{'-' * (cells - fill)}] {text}"


class Progress:
    """A worker's progress output on ``out`` (stdout when None, looked up at each write)."""

    def __init__(self, prefix: str, total, out=None):
        self.prefix, self.total, self._out = prefix, total, out
        self.bar = ""  # the study bar now shown at the bottom of the terminal ('' if none)

    @property
    def out(self):
        return self._out if self._out is not None else sys.stdout

    @property
    def tty(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False

    def say(self, msg: str) -> None:
        """One line; on a terminal it overwrites the bar, which is drawn again below it."""
        line = f"{self.prefix}{msg}"
        if self.bar and self.tty:
            self.out.write(f"\r{line.ljust(len(self.bar))}\n{self.bar}")
            self.out.flush()
        else:
            print(line, file=self.out, flush=True)

    def study(self, counts: StudyCounts) -> None:
        """The study-level line: the bar, updated in place, on a terminal; a plain line elsewhere."""
        if not self.tty:
            self.say(plain_line(counts))
            return
        columns = shutil.get_terminal_size((80, 24)).columns
        bar = bar_line(counts, columns, self.prefix)
        self.out.write(f"\r{bar.ljust(len(self.bar))}")
        self.out.flush()
        self.bar = bar

    def close(self) -> None:
        """End the bar's line, so that what is printed next starts on a line of its own."""
        if self.bar and self.tty:
            self.out.write("\n")
            self.out.flush()
        self.bar = ""

    def epoch_printer(self, index: int, title: str, seed: int, epochs: int, t0: float):
        """A trial's epoch hook: a line at about every quarter of its epochs (not the last: the
        trial's end line says it) and at the epoch where it is pruned."""
        every = max(1, epochs // 4)

        def on_epoch(epoch: int, miou: float, pruned: bool = False) -> None:
            e = epoch + 1
            if (e % every == 0 or pruned) and e != epochs:
                took, mark = time.perf_counter() - t0, "  -> pruned" if pruned else ""
                self.say(f"trial {index}/{self.total} {title} seed={seed}  epoch {e}/{epochs}  "
                         f"val mIoU {points(miou)}  ({took:.0f}s){mark}")
        return on_epoch
