"""How many worker processes and torch threads a run uses when the command line does not say.

The rule (:func:`choose`), printed with its reasons at the start of a run:

* **GPUs.** One worker per group of ``trainer.devices`` visible GPUs; each trial owns its GPUs.
* **CPU.** One worker per core, up to the trials there are to run, each with ``cores // workers``
  threads (at least 1). The trials of a study on this harness's tasks are small models on small
  maps, where one process per core finishes a batch of trials sooner than one process whose
  operations are split over the cores: most of a step is many small kernels and Python, which
  threads do not share out. A study that fixes ``train.threads`` (part of its cell keys) gets
  ``cores // train.threads`` workers.
* **Memory.** Workers are capped so that their estimated peak (:data:`PROCESS_BYTES` for the
  interpreter, torch and Lightning, plus twice the least memory a trial of the study's largest cell
  needs, :func:`ablate.run.estimate.training_bytes`) fits in 80% of the memory available now.

``ablate bench parallel STUDY`` (:mod:`ablate.run.bench_parallel`) times the candidate splits
side by side on this machine; ``--workers``/``--threads`` (or ``ABLATE_WORKERS``) override the rule.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

WORKERS_ENV = "ABLATE_WORKERS"  # a default for --workers (the tests set 1: fakes patched in-process)
PROCESS_BYTES = 600 * 2**20  # a worker's interpreter, torch and Lightning before any trial (RSS measured ~0.5 GB)
MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class Choice:
    workers: int
    threads: int  # 0: the study's train.threads or cores / workers, as threads_for decides
    why: str


def cores() -> int:
    """The cores this process may run on (its affinity), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_bytes() -> int | None:
    """Memory available now to new processes (the kernel's MemAvailable: :func:`ablate.costs.blocks.free_bytes`)."""
    from ..costs.blocks import free_bytes

    try:
        return free_bytes("cpu")
    except (OSError, ValueError):
        return None


def trials_to_run(study) -> int:
    """The trials a run of ``study`` starts with (a search's budget; a sequential study's first look)."""
    if study.search:
        return int(study.search["n_trials"])
    return max(1, len(study.trials()))


def _trial_bytes(study) -> int | None:
    """Twice the least memory the study's largest cell needs to train (None: unknown)."""
    from .estimate import training_bytes

    needs = []
    for cell in study.cells()[:64]:
        need = training_bytes(study.trial_config(cell, study.seeds[0] if study.seeds else 0), 1)
        if need:
            needs.append(sum(v for k, v in need.items() if k in ("backbone", "block", "head", "activations")))
    return 2 * max(needs) if needs else None


def choose(study, n_cores: int | None = None, available: int | None = None, gpus: int | None = None) -> Choice:
    """Workers and threads for ``study`` on this machine (arguments: for tests)."""
    n_cores = n_cores or cores()
    n = trials_to_run(study)
    if study.trainer.accelerator != "cpu":
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus:
            w = max(1, min(n, gpus // max(1, study.trainer.devices)))
            return Choice(w, 0, f"{gpus} GPU(s), {study.trainer.devices} per trial")
    fixed = study.train.threads
    w = max(1, n_cores // fixed) if fixed > 0 else n_cores
    w = max(1, min(w, n))
    reasons = [f"{n_cores} CPU core(s), {n} trial(s) to start"]
    if fixed > 0:
        reasons.append(f"train.threads {fixed}")
    available = available_bytes() if available is None else available
    per = _trial_bytes(study)
    if available and per is not None:
        fits = max(1, int(MEMORY_SHARE * available // (PROCESS_BYTES + per)))
        if fits < w:
            w = fits
            reasons.append(f"memory for {fits} worker(s) of ~{(PROCESS_BYTES + per) / 2**30:.1f} GiB "
                           f"in {available / 2**30:.1f} GiB available")
    threads = 0 if fixed > 0 else max(1, n_cores // w)
    return Choice(w, threads, ", ".join(reasons))


def default_workers() -> int | None:
    """``ABLATE_WORKERS`` as the default --workers (None: choose)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None
