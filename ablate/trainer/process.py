"""A trial in a process of its own (DDP, or any strategy but auto): the worker side
(:func:`run_isolated`) and the trial process side (:func:`trial_process`, every rank).

Lightning's DDP launcher starts the other ranks by re-running the current command, so the trial
runs as ``python -m ablate.trainer JOB.json``. Rank 0 sends each epoch's val mIoU to the worker
over a pipe and waits for its answer (continue or prune), then sends the result; the worker
alone writes the trial's record in storage.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from .fit import HarnessFailed, TrialFailed, failure_kind, fit, wandb_summary
from ..config.trial import TrialConfig


_RANK_ENV = ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "LOCAL_WORLD_SIZE", "GROUP_RANK", "RANK")


def run_isolated(config: TrialConfig, on_epoch, threads: int | None, wandb: dict | None,
                 checkpoint_dir: str | None = None, on_resume=None) -> dict:
    """Run the trial in ``python -m ablate.trainer``; answer its epoch messages with ``on_epoch``
    (and pass a resume message to ``on_resume``). Every rank loads the trial's checkpoint."""
    evt_r, evt_w = os.pipe()
    ans_r, ans_w = os.pipe()
    tmp = Path(tempfile.mkdtemp(prefix="ablate-trial-"))
    job = tmp / "job.json"
    job.write_text(json.dumps({"config": config.as_dict(), "threads": threads, "wandb": wandb,
                               "events_fd": evt_w, "answers_fd": ans_r, "checkpoint_dir": checkpoint_dir}))
    env = {k: v for k, v in os.environ.items() if k not in _RANK_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "ablate.trainer", str(job)], pass_fds=(evt_w, ans_r), env=env)
    os.close(evt_w)
    os.close(ans_r)
    result, failed = None, None
    try:
        with os.fdopen(evt_r, "r") as events, os.fdopen(ans_w, "w") as answers:
            for line in events:
                kind, _, payload = line.rstrip("\n").partition(" ")
                msg = json.loads(payload) if payload else {}
                if kind == "epoch":
                    prune = bool(on_epoch(msg["epoch"], msg["val_miou"]))
                    answers.write("prune\n" if prune else "go\n")
                    answers.flush()
                elif kind == "resumed" and on_resume is not None:
                    on_resume(msg["info"], msg["curve"])
                elif kind == "result":
                    result = msg
                elif kind == "failed":
                    failed = msg
        code = proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    finally:
        job.unlink(missing_ok=True)
        tmp.rmdir()
    if code in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    if failed is not None:
        raise (TrialFailed if failed.get("kind", "error") == "error" else HarnessFailed)(failed["reason"])
    if result is None or code != 0:  # killed, or crashed below Python: not known to be the trial's own
        raise HarnessFailed(f"the trial process (python -m ablate.trainer, {config.as_dict()['trainer']}) exited "
                            f"with code {code} without a result; its output is above")
    return result


def trial_process(job_path: str) -> int:
    """Entry point of ``python -m ablate.trainer JOB.json``: every rank runs this; rank 0 talks to
    the worker (epoch messages, the result) and owns the W&B run."""
    job = json.loads(Path(job_path).read_text())
    config = TrialConfig.from_json(job["config"])
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    threads = job.get("threads")
    if threads:
        threads = max(1, threads // config.trainer.devices)  # the worker's share of cores, split over its ranks
    if not rank0:
        return _rank_n(config, threads, job.get("checkpoint_dir"))
    events = os.fdopen(job["events_fd"], "w")
    answers = os.fdopen(job["answers_fd"], "r")

    def send(kind: str, msg: dict) -> None:
        events.write(f"{kind} {json.dumps(msg)}\n")
        events.flush()

    def on_epoch(epoch: int, miou: float) -> bool:
        send("epoch", {"epoch": epoch, "val_miou": miou})
        return answers.readline().strip() == "prune"

    logger = None
    code = 0
    try:
        if job.get("wandb"):
            from .tracking import make_logger

            w = job["wandb"]
            logger = make_logger(config.as_dict(), Path(w["run_dir"]), w["project"], w.get("entity"), w["name"])
        result = fit(config, on_epoch, logger, threads, job.get("checkpoint_dir"),
                     lambda info, curve: send("resumed", {"info": info, "curve": curve}))
        if logger is not None:
            logger.experiment.summary.update(wandb_summary(result))
        send("result", result)
    except TrialFailed as e:
        send("failed", {"reason": str(e), "kind": "error"})
        code = 1
    except Exception as e:  # noqa: BLE001 - the worker records it; the traceback goes to the log
        traceback.print_exc()
        send("failed", {"reason": f"{type(e).__name__}: {e}"[:500], "kind": failure_kind(e)})
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        if logger is not None:
            try:
                logger.experiment.finish(exit_code=code)
            except Exception:  # noqa: BLE001 - tracking must never break a study
                pass
    return code


def _rank_n(config: TrialConfig, threads: int | None, checkpoint_dir: str | None = None) -> int:
    try:
        fit(config, lambda e, m: False, None, threads, checkpoint_dir)
    except KeyboardInterrupt:
        return 130
    except TrialFailed:
        return 1
    return 0

