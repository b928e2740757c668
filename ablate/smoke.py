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

The run goes through the normal runner into a throwaway folder (a new temporary folder, removed
when every trial passed; kept, and named, when one failed; or ``--run-dir``, which must be new or
empty, and is kept) with no report and no W&B logging; the study is named ``<name>-smoke`` and
the effective study file is written into the folder as ``<name>-smoke.yaml``. Everything else (trainer, precision, devices, pruner,
data_root, pretrained weights) is the study's own, so the smoke run checks them too.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .errors import StudyError, exit_with

TRAIN_BATCHES = 2  # training batches per smoke trial
ROUND_KEYS = {"epochs": 1, "iterations": 2}  # train key -> its smoke value (the smallest of a factor's)


def _seq(values, first: int, step: int = 1) -> list:
    """Small distinct replacements of ``values``, in the order of the originals."""
    order = sorted(set(values), key=lambda v: v if isinstance(v, (int, float)) else 0)  # validated: numbers
    rank = {v: i for i, v in enumerate(order)}
    return [first + step * rank[v] for v in values]


def _capped(values, cap: int) -> list:
    """``values`` (positive integers; 0 means all) capped at ``cap`` and kept apart: in increasing
    order each becomes ``min(value, cap)``, or one more than the one below it where that is larger."""
    order = sorted(set(values), key=lambda v: v if v > 0 else float("inf"))
    new, last = {}, 0
    for v in order:
        last = new[v] = max(min(v, cap) if v > 0 else cap, last + 1)
    return [new[v] for v in values]


def _batch_size(raw: dict) -> int:
    """The largest global batch the study trains with (its train.batch_size and any factor's)."""
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    sizes = [train.get("batch_size", 32)]
    factors = raw.get("factors") if isinstance(raw.get("factors"), dict) else {}
    spec = factors.get("train.batch_size")
    if isinstance(spec, dict):  # a search: its choices, or the high end of its range
        spec = spec.get("choices", [spec.get("high", 0)])
    sizes += spec if isinstance(spec, list) else []
    sizes += [r.get("train.batch_size", 0) for r in raw.get("references") or [] if isinstance(r, dict)]
    return max([s for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0] or [32])


def _data_caps(raw: dict) -> dict:
    """data key -> smoke value: 2 training batches, 1 validation batch (real data: 1 image per device)."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    batch = _batch_size(raw)
    trainer = raw.get("trainer") if isinstance(raw.get("trainer"), dict) else {}
    devices = trainer.get("devices", 1) if isinstance(trainer.get("devices", 1), int) else 1
    if data.get("name", "synthetic") == "synthetic":
        return {"train_images": TRAIN_BATCHES * batch, "val_images": batch}
    return {"train_images": TRAIN_BATCHES * batch, "val_images": max(1, devices)}


def smoke_overrides(raw: dict, source: str = "study") -> list[str]:
    """The overrides (``KEY=VALUE``) that make ``raw``, the mapping of the study file ``source``, a
    smoke run."""
    if not isinstance(raw, dict):
        return []
    factors = raw.get("factors") if isinstance(raw.get("factors"), dict) else {}
    refs = [r if isinstance(r, dict) else {} for r in raw.get("references") or []]
    if "train.val_interval" in factors or any("train.val_interval" in r for r in refs):
        raise StudyError(source, "factors.train.val_interval", "smoke mode cannot shrink a study that varies "
                         "train.val_interval (its values must divide train.iterations); smoke-test a copy of "
                         "the study without that factor.")
    seeds = raw.get("seeds", 3)
    out = [f"seeds=[{seeds[0] if isinstance(seeds, list) and seeds else 0}]"]
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    rounds = "iterations" if train.get("iterations") else "epochs"
    small = {f"train.{rounds}": ROUND_KEYS[rounds], **{f"data.{k}": v for k, v in _data_caps(raw).items()}}
    for key, value in small.items():
        new = _smaller(raw, key, value)
        section, _, name = key.partition(".")
        base = _base(raw, section, name)
        out.append(f"{key}={new.get(base, value)}")
        if key in factors:
            out.append(f"factors.{key}={json.dumps(_shrunk(factors[key], new, value))}")
        out += [f"references[{i}].{key}={new[r[key]]}" for i, r in enumerate(refs) if key in r]
    if train.get("val_interval"):
        out.append("train.val_interval=0")
    if isinstance(raw.get("search"), dict):
        out.append("search.n_trials=1")
    return out


def _base(raw: dict, section: str, name: str):
    """The study's own value of ``section.name`` (the default where the file leaves it out)."""
    given = raw.get(section) if isinstance(raw.get(section), dict) else {}
    if name in given:
        return given[name]
    if section == "train":
        return {"epochs": 10, "iterations": 0}[name]  # as ablate.study.TrainSpec
    return {"train_images": 1536, "val_images": 384}[name] if given.get("name", "synthetic") == "synthetic" else 0


def _smaller(raw: dict, key: str, small: int) -> dict:
    """Every value the study gives ``key`` (its own, its grid's, its references') -> its smoke
    value: rounds become small, 2 small, ... in their order; sizes are capped at ``small``, kept
    apart where capping would merge two."""
    section, _, name = key.partition(".")
    spec = (raw.get("factors") or {}).get(key) if isinstance(raw.get("factors"), dict) else None
    refs = [r for r in raw.get("references") or [] if isinstance(r, dict)]
    used = spec is None or any(key not in r for r in refs)  # the study's own value is some cell's
    values = [_base(raw, section, name)] if used else []
    values += spec if isinstance(spec, list) else spec.get("choices", []) if isinstance(spec, dict) else []
    values += [r[key] for r in refs if key in r]
    values = [v for v in dict.fromkeys(values) if isinstance(v, int) and not isinstance(v, bool)]  # validated
    new = _capped(values, small) if section == "data" else _seq(values, small, small)
    return dict(zip(values, new))


def _shrunk(spec, new: dict, small: int):
    """A factor's grid list, choices or search range over a round or data-size key, made small."""
    if isinstance(spec, list):
        return [new[v] for v in spec]
    if isinstance(spec, dict) and isinstance(spec.get("choices"), list):
        return {**spec, "choices": [new[v] for v in spec["choices"]]}
    if isinstance(spec, dict):
        return {k: v for k, v in {**spec, "low": small, "high": small * 2, "step": None, "log": None}.items()
                if v is not None}
    return spec


def smoke_transform(raw: dict, source: str = "study") -> dict:
    """``raw`` with :func:`smoke_overrides` applied."""
    from .overrides import apply_overrides

    return apply_overrides(raw, smoke_overrides(raw, source), source)


def run_smoke(path: str, overrides: list[str], workers: int = 1, threads: int = 0, run_dir: str | None = None,
              dry_run: bool = False, out=None) -> int:
    """Run every cell of the study at ``path`` (with ``overrides``) once in smoke mode through the
    normal runner; returns the runner's exit status. Errors in the study exit 2 as usual."""
    from .overrides import effective_raw, effective_yaml, load_with_overrides
    from .run import main as run_main, print_plan

    out = out or sys.stdout  # looked up at call time (a caller may have redirected it)
    try:
        study = load_with_overrides(path, overrides, smoke=True)
        raw = effective_raw(path, overrides, smoke=True)
    except StudyError as e:
        exit_with(e)
    if dry_run:
        if out is sys.stdout:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--smoke --dry-run | head` must not traceback
        print(effective_yaml(path, overrides, smoke=True), file=out)
        print_plan(study, out)
        return 0
    if run_dir and Path(run_dir).exists() and (not Path(run_dir).is_dir() or any(Path(run_dir).iterdir())):
        exit_with(StudyError("command line", "--run-dir", f"{run_dir} is not an empty folder; smoke mode runs "
                             "every cell afresh (a folder with a journal would resume it and skip what passed "
                             "before), so give a new or empty folder, or leave --run-dir out (a temporary one)."))
    folder = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"ablate-smoke-{study.name[:40]}-"))
    folder.mkdir(parents=True, exist_ok=True)
    effective = folder / f"{study.name}.yaml"  # the study that ran, kept with the run while it is kept
    effective.write_text(effective_yaml(path, overrides, smoke=True), encoding="utf-8")
    cells = len(study.cells()) or study.search["n_trials"]
    print(f"ablate smoke: {path}: {cells} cells x 1 seed, {_rounds(study)} on {raw['data']['train_images']} "
          f"training images, in {folder}", file=out, flush=True)
    t0 = time.perf_counter()
    code = run_main([str(effective), "--run-dir", str(folder), "--no-report", "--no-wandb",
                     "--workers", str(workers), "--threads", str(threads)])
    wall = time.perf_counter() - t0
    rate = f"{wall / cells:.1f}s per cell" if cells else ""
    if code == 0:
        if not run_dir:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"ablate smoke: passed: {cells} cells in {wall:.0f}s ({rate}).", file=out)
    else:
        print(f"ablate smoke: FAILED (exit {code}) after {wall:.0f}s; the run folder {folder} is kept "
              "(the lines above and its journal say which trial failed and why).", file=sys.stderr)
    return code


def _rounds(study) -> str:
    t = study.train
    return f"{t.iterations} steps" if t.iterations else f"{t.epochs} epoch{'s' if t.epochs != 1 else ''}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablate.smoke", description=__doc__.split("\n\n")[0],
                                epilog="The same as: ablate run STUDY.yaml [KEY=VALUE ...] --smoke")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied before smoke mode's own")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # implied
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--run-dir", help="run folder to keep (default: a temporary folder, removed if all pass)")
    p.add_argument("--dry-run", action="store_true", help="print the effective study and the plan, run nothing")
    args = p.parse_intermixed_args(argv)
    return run_smoke(args.study, args.overrides, args.workers, args.threads, args.run_dir, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
