"""Smoke mode, ``ablate run STUDY.yaml --smoke``: every cell of the study once, before it goes to a
cluster, so that a configuration mistake (a factor value a block refuses at build time, a shape
that breaks in a forward pass, a data setting the loader cannot serve) fails in seconds here
rather than hours into a job.

Smoke mode is a set of overrides (:func:`smoke_overrides`, shown by ``--smoke --dry-run``):

- one seed (the study's first);
- one epoch (``train.epochs=1``), or two optimiser steps for a study that trains by
  ``train.iterations`` (validated once, at the end);
- a few batches: the training split cut to 2 batches and validation to 1 (synthetic data:
  ``train_images = 2 x batch_size``, ``val_images = batch_size``; real data: the first
  ``2 x batch_size`` training images and one validation image per device);
- a search study samples 1 trial.

Factors and references that vary these settings keep their cells apart: every value the study
gives such a key is replaced by a small one, distinct values staying distinct and in the same
order (``train.epochs: [10, 30]`` becomes ``[1, 2]``; sizes are capped, ``[512, 1536]`` becoming
``[64, 65]``). A study that varies ``train.val_interval`` is refused (its values must divide the
iterations it runs). The study with the user's overrides and without smoke mode's is validated
first, so a study refused for its real run never passes smoke mode.

The run is the normal run with these settings (the study file read once, the runner not
re-entered) in a throwaway folder (a new temporary folder, removed when every trial passed; kept,
and named, when one failed; or ``--run-dir``, which must be new or empty, and is kept) with no
report and no W&B logging; the study is named ``<name>-smoke`` and the effective study file is
written into the folder as ``<name>-smoke.yaml`` (what ``--workers`` children load). Everything
else (trainer, precision, devices, pruner, data_root, pretrained weights) is the study's own, so
the smoke run checks them too.
"""
from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config.errors import StudyError, exit_with

from ..config.smoke import ROUND_KEYS, TRAIN_BATCHES, smoke_overrides  # noqa: F401 - re-exported


def smoke_transform(raw: dict, source: str = "study") -> dict:
    """``raw`` with :func:`smoke_overrides` applied."""
    from ..study.overrides import smoke_transform as transform

    return transform(raw, source)


@dataclass
class SmokeRun:
    """A smoke run in the making: its study (smoke caps applied), the folder it runs in, the
    effective study file written there (what ``--workers`` children load), and whether the folder
    is the user's (kept) or a temporary one (removed when every trial passed)."""

    study: object
    folder: Path
    effective: Path
    keep: bool
    cells: int
    started: float = field(default_factory=time.perf_counter)


def prepare_smoke(path: str, overrides: list[str], print_plan, run_dir: str | None = None, dry_run: bool = False,
                  out=None) -> SmokeRun | int:
    """Smoke mode as a configuration of the normal run: the study at ``path`` (read once) with
    ``overrides`` and smoke mode's caps, validated (errors exit 2 as usual), its folder made and the
    effective study written there. With ``dry_run`` prints the effective study and the plan and
    returns 0. ``print_plan`` is the runner's (passed in, so this module does not import the
    runner that imports it)."""
    from ..study.overrides import effective_raw, effective_yaml, load_with_overrides, read_raw

    out = out or sys.stdout  # looked up at call time (a caller may have redirected it)
    try:
        raw = read_raw(path)
        study = load_with_overrides(path, overrides, smoke=True, raw=raw)
        effective_text = effective_yaml(path, overrides, smoke=True, raw=raw)
        train_images = effective_raw(path, overrides, smoke=True, raw=raw)["data"]["train_images"]
    except StudyError as e:
        exit_with(e)
    if dry_run:
        if out is sys.stdout:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--smoke --dry-run | head` must not traceback
        print(effective_text, file=out)
        print_plan(study, out)
        return 0
    if run_dir and Path(run_dir).exists() and (not Path(run_dir).is_dir() or any(Path(run_dir).iterdir())):
        exit_with(StudyError("command line", "--run-dir", f"{run_dir} is not an empty folder; smoke mode runs "
                             "every cell afresh (a folder with a journal would resume it and skip what passed "
                             "before), so give a new or empty folder, or leave --run-dir out (a temporary one)."))
    folder = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"ablate-smoke-{study.name[:40]}-"))
    folder.mkdir(parents=True, exist_ok=True)
    effective = folder / f"{study.name}.yaml"  # the study that runs, kept with the run while it is kept
    effective.write_text(effective_text, encoding="utf-8")
    cells = len(study.cells()) or study.search["n_trials"]
    print(f"ablate smoke: {path}: {cells} cells x 1 seed, {_rounds(study)} on {train_images} "
          f"training images, in {folder}; a trial's val mIoU (points, 0-100) is an almost untrained "
          "model's, often near 0: it says the cell runs, not how well", file=out, flush=True)
    study = dataclasses.replace(study, path=str(effective), overrides=())  # as the workers load it
    return SmokeRun(study, folder, effective, bool(run_dir), cells)


def finish_smoke(smoke: SmokeRun, code: int, out=None) -> int:
    """Say how the smoke run went and remove its temporary folder if every trial passed; returns ``code``."""
    out = out or sys.stdout
    wall = time.perf_counter() - smoke.started
    rate = f"{wall / smoke.cells:.1f}s per cell" if smoke.cells else ""
    if code == 0:
        if not smoke.keep:
            shutil.rmtree(smoke.folder, ignore_errors=True)
        print(f"ablate smoke: passed: {smoke.cells} cells in {wall:.0f}s ({rate}).", file=out)
    else:
        print(f"ablate smoke: FAILED (exit {code}) after {wall:.0f}s; the run folder {smoke.folder} is kept "
              "(the lines above and its journal say which trial failed and why).", file=sys.stderr)
    return code


def _rounds(study) -> str:
    t = study.train
    return f"{t.iterations} steps" if t.iterations else f"{t.epochs} epoch{'s' if t.epochs != 1 else ''}"
