"""``ablate bench parallel STUDY.yaml``: the same first trials of a study run under each split of
this machine's cores into workers x threads, side by side, with the split the runner would choose
by itself (:func:`ablate.run.parallel.choose`) marked. Each split runs in a fresh temporary folder
(``python -m ablate.run STUDY --workers W --threads T --max-trials ...``, no report, no W&B, no
doctor), so the wall times include what a real run pays: process start, imports, data, training.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

from ..config.errors import StudyError, exit_with

USAGE = "ablate bench parallel STUDY.yaml [KEY=VALUE ...] [--trials N] [--splits 1x2,2x1]"


def splits_for(n_cores: int) -> list[tuple[int, int]]:
    """Every workers x threads that uses the cores: (1, n), ..., (n, 1) over the divisors of n."""
    return [(w, n_cores // w) for w in range(1, n_cores + 1) if n_cores % w == 0]


def _parse_splits(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        w, _, t = part.strip().partition("x")
        if not (w.isdigit() and t.isdigit() and int(w) >= 1 and int(t) >= 1):
            raise StudyError("command line", "--splits", f"{part!r}: give WORKERSxTHREADS pairs separated by commas, "
                             "e.g. 1x2,2x1.")
        out.append((int(w), int(t)))
    return out


def time_split(study_path: str, overrides: list[str], workers: int, threads: int, trials: int) -> tuple[float, int]:
    """Wall seconds of ``trials`` trials (at least; each worker runs ceil(trials / workers)) under one
    split, and the exit status of the run."""
    with tempfile.TemporaryDirectory(prefix="ablate-bench-parallel-") as folder:
        cmd = [sys.executable, "-m", "ablate.run", study_path, *overrides, "--run-dir", folder, "--workers",
               str(workers), "--threads", str(threads), "--max-trials", str(math.ceil(trials / workers)),
               "--no-report", "--no-wandb", "--no-doctor", "--allow-undecidable"]
        t0 = time.perf_counter()
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        return time.perf_counter() - t0, code


def table(rows: list[tuple[int, int, float, int, int]], chosen: tuple[int, int]) -> str:
    """The printed table: split, trials, wall, seconds a trial, ratio to the fastest."""
    done = [wall for _w, _t, wall, _n, code in rows if code == 0]
    best = min(done) if done else float("nan")
    lines = ["| workers x threads | trials | wall s | s / trial | vs fastest |", "|---|---|---|---|---|"]
    for w, t, wall, n, code in rows:
        mark = " (chosen)" if (w, t) == chosen else ""
        ratio = f"{wall / best:.2f}" if code == 0 and best == best else f"failed (exit {code})"
        lines.append(f"| {w} x {t}{mark} | {n} | {wall:.1f} | {wall / n:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ablate bench parallel", usage=USAGE, description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--trials", type=int, default=0, help="trials per split (default: 2 x the cores)")
    p.add_argument("--splits", default="", help="WORKERSxTHREADS pairs (default: every split of the cores)")
    args = p.parse_intermixed_args(argv)
    from ..study.overrides import load_with_overrides
    from .parallel import choose, cores

    try:
        study = load_with_overrides(args.study, args.overrides)
        splits = _parse_splits(args.splits) if args.splits else splits_for(cores())
        if args.trials < 0:
            raise StudyError("command line", "--trials", f"{args.trials}: give a positive number of trials.")
    except StudyError as e:
        exit_with(e)
    choice = choose(study)
    chosen = (choice.workers, choice.threads or max(1, cores() // choice.workers))
    if chosen not in splits:
        splits.append(chosen)
    n = args.trials or 2 * cores()
    print(f"ablate bench parallel: {study.name}, {n} trials per split on {cores()} core(s); the runner's own "
          f"choice: {chosen[0]} x {chosen[1]} ({choice.why})", flush=True)
    rows = []
    for w, t in splits:
        wall, code = time_split(args.study, args.overrides, w, t, n)
        rows.append((w, t, wall, math.ceil(n / w) * w, code))
        print(f"  {w} x {t}: {wall:.1f} s", flush=True)
    print(table(rows, chosen))
    return 0 if all(r[4] == 0 for r in rows) else 1
