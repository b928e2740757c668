"""The runner's worker processes (``--workers N``): each a ``python -m ablate.run STUDY --worker``
child claiming trials from the same storage, its GPUs chosen here on a machine with several, and
stopped together on Ctrl-C or SIGTERM (the signal first, SIGKILL after :data:`STOP_WAIT_S`)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..config.errors import StudyError
from .worker import PARENT_ENV, interrupt_signal, threads_for

STOP_WAIT_S = 60.0  # how long an interrupted runner waits for its --workers to stop before it kills them


def gpu_assignment(workers: int, visible: list[str], per_worker: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each local worker: worker i gets the i-th group of ``per_worker``
    GPUs (a trial's ``trainer.devices``), cycling when there are more workers than groups."""
    groups = [visible[g * per_worker:(g + 1) * per_worker] for g in range(len(visible) // per_worker)]
    if not groups:
        raise StudyError("command line", "--workers", f"a trial needs {per_worker} GPUs (trainer.devices) but only "
                         f"{len(visible)} are visible ({','.join(visible) or 'none'}).")
    return [",".join(groups[i % len(groups)]) for i in range(workers)]


def worker_gpus(study, workers: int) -> list[str] | None:
    """Per-worker GPU lists on a machine with several GPUs (None: leave CUDA_VISIBLE_DEVICES alone)."""
    if study.trainer.accelerator == "cpu":
        return None
    import torch

    count = torch.cuda.device_count()
    if count <= 1:
        return None
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d.strip() for d in env.split(",") if d.strip()] if env else [str(i) for i in range(count)]
    return gpu_assignment(workers, visible[:count], study.trainer.devices)


def spawn_workers(args, url: str, run_dir: Path, gpus: list[str] | None = None) -> list[int]:
    """Start ``args.workers`` worker processes (``python -m ablate.run STUDY --worker``, the storage URL
    in their environment, never on their command line) and wait for them; their exit statuses."""
    from ..storage import records as st

    procs = []
    threads = threads_for(args)
    for i in range(args.workers):
        cmd = [sys.executable, "-m", "ablate.run", args.study, *args.overrides, "--worker", "--worker-index", str(i),
               "--run-dir", str(run_dir), "--threads", str(threads), "--no-report"]
        if args.no_wandb:
            cmd.append("--no-wandb")
        if args.no_pruning:
            cmd.append("--no-pruning")
        if args.max_trials:
            cmd += ["--max-trials", str(args.max_trials)]
        # the URL goes by environment, not argv: command lines are public (ps) and W&B records them
        env = {**os.environ, "PYTHONUNBUFFERED": "1", st.STORAGE_ENV: url, PARENT_ENV: str(os.getpid())}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        try:
            procs.append(subprocess.Popen(cmd, env=env))
        except BaseException:
            stop_workers(procs, signal.SIGTERM)
            raise
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        stop_workers(procs, interrupt_signal())
        raise
    return codes


def stop_workers(procs: list, signum: int) -> None:
    """Stop every worker still running: ``signum`` (each stops at its next Python instruction,
    records its trial as interrupted and exits), then SIGKILL for any still there after
    :data:`STOP_WAIT_S` seconds (its trial is then reaped as lost; both resume)."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.send_signal(signum)
    deadline = time.monotonic() + STOP_WAIT_S
    for p in procs:
        while True:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                p.kill()
            except KeyboardInterrupt:  # a second Ctrl-C while waiting: no more waiting
                deadline = 0.0
