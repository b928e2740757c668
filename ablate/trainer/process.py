"""A trial in a process of its own (DDP, or any strategy but auto): the worker side
(:func:`run_isolated`) and the trial process side (:func:`trial_process`, every rank).

Lightning's DDP launcher starts the other ranks by re-running the current command, so the trial
runs as ``python -m ablate.trainer JOB.json``. Rank 0 sends each epoch's val mIoU to the worker
over a pipe and waits for its answer (continue or prune), then sends the result; the worker
alone writes the trial's record in storage.

Under SLURM, SLURM's tasks are ablate's *workers* (an ``ablate submit`` array task, or one task
of a hand-written ``srun python -m ablate.run``), never a trial's ranks. So the trial process
is started without SLURM's task layout (``SLURM_NTASKS``, ``SLURM_PROCID``, ...): Lightning's
SLURM environment would otherwise take the workers' tasks for the trial's ranks (a ``devices: 2``
trial in a one-task job fails on ``--ntasks-per-node=1``; in a job of two workers on a node, two
different trials would be the two ranks of one), and Lightning starts the ranks on this node itself. With ``ABLATE_TRIAL_LAUNCH=srun``
inside a SLURM job (``ablate submit`` sets it in its array tasks), the ranks are instead the tasks
of an ``srun`` step of the worker's allocation (``--overlap --nodes=1 --ntasks=N`` on the worker's
node, the job's CPUs split between them, its memory and GPUs shared): Lightning's
``SLURMEnvironment`` takes rank and world size from ``SLURM_PROCID`` / ``SLURM_NTASKS``, and rank 0
talks to the worker over a loopback connection instead of a pipe (srun's tasks are not the
worker's children). Either way the trial process ignores SIGUSR1, SLURM's time-limit signal: the
worker records the trial as interrupted and ends it; Lightning's own SLURM requeue (a handler it
installs only where none is set) would requeue the job a second time.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from .fit import HarnessFailed, TrialFailed, failure_kind, fit, wandb_summary
from ..config.trial import TrialConfig


_RANK_ENV = ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "LOCAL_WORLD_SIZE", "GROUP_RANK", "RANK")
LAUNCH_ENV = "ABLATE_TRIAL_LAUNCH"  # "srun": a DDP trial's ranks are an srun step's tasks (see the docstring)
# SLURM's task layout, and srun's input variables that would size a step as the worker's own task
_SLURM_TASK_ENV = ("SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_PROCID",
                   "SLURM_LOCALID", "SLURM_NODEID", "SLURM_GTIDS", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_TASKS_PER_NODE",
                   "SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_CPU", "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_GPU")
_SRUN_HINT = "The `srun` command is available on your system but is not used"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def srun_launch(config: TrialConfig) -> list[str] | None:
    """The ``srun`` step that starts the trial's ranks as SLURM tasks, or None where the ranks are
    Lightning's (not asked for with ``ABLATE_TRIAL_LAUNCH=srun``, outside a SLURM job, no srun)."""
    if os.environ.get(LAUNCH_ENV) != "srun" or not os.environ.get("SLURM_JOB_ID") or shutil.which("srun") is None:
        return None
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):  # where Lightning ignores SLURM's tasks
        return None
    world = config.trainer.world_size
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or world)
    here = os.environ.get("SLURMD_NODENAME")  # rank 0 on the worker's node: it connects to 127.0.0.1
    return ["srun", "--overlap", "--nodes=1", f"--ntasks={world}", f"--ntasks-per-node={world}",
            f"--cpus-per-task={max(1, cpus // world)}", "--mem=0", "--kill-on-bad-exit=1"] + \
        ([f"--nodelist={here}"] if here else [])


def run_isolated(config: TrialConfig, on_epoch, threads: int | None, wandb: dict | None,
                 checkpoint_dir: str | None = None, on_resume=None) -> dict:
    """Run the trial in ``python -m ablate.trainer`` (its ranks Lightning's, or an srun step's:
    :func:`srun_launch`); answer its epoch messages with ``on_epoch`` (and pass a resume message to
    ``on_resume``). Every rank loads the trial's checkpoint."""
    tmp = Path(tempfile.mkdtemp(prefix="ablate-trial-"))
    job = tmp / "job.json"
    spec = {"config": config.as_dict(), "threads": threads, "wandb": wandb, "checkpoint_dir": checkpoint_dir}
    env = {k: v for k, v in os.environ.items() if k not in _RANK_ENV + _SLURM_TASK_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    srun = srun_launch(config)
    proc = None
    try:
        proc, channel = _start_srun(srun, spec, job, env) if srun else _start_local(spec, job, env)
        result, failed = _converse(channel, on_epoch, on_resume)
        code = proc.wait()
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.terminate()  # srun passes it on to the step's tasks
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
        how = "python -m ablate.trainer" + (" as an srun step" if srun else "")
        raise HarnessFailed(f"the trial process ({how}, {config.as_dict()['trainer']}) exited "
                            f"with code {code} without a result; its output is above")
    return result


def _start_local(spec: dict, job: Path, env: dict):
    """The trial process as the worker's child, rank 0 on a pair of pipes; Lightning starts the other ranks."""
    evt_r, evt_w = os.pipe()
    ans_r, ans_w = os.pipe()
    job.write_text(json.dumps({**spec, "events_fd": evt_w, "answers_fd": ans_r}))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ablate.trainer", str(job)], pass_fds=(evt_w, ans_r), env=env)
    except BaseException:
        os.close(evt_r)
        os.close(ans_w)
        raise
    finally:
        os.close(evt_w)
        os.close(ans_r)
    return proc, (os.fdopen(evt_r, "r"), os.fdopen(ans_w, "w"))


def _start_srun(srun: list[str], spec: dict, job: Path, env: dict):
    """The trial's ranks as the tasks of an srun step; rank 0 connects back to this worker over
    loopback and proves itself with the job file's token. No channel if the step ends first."""
    token = secrets.token_hex(16)
    with socket.create_server(("127.0.0.1", 0)) as server:
        job.write_text(json.dumps({**spec, "launch": "srun", "token": token,
                                   "connect": ["127.0.0.1", server.getsockname()[1]]}))
        env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}  # the ranks' rendezvous
        proc = subprocess.Popen(srun + [sys.executable, "-m", "ablate.trainer", str(job)], env=env,
                                stdin=subprocess.DEVNULL)
        server.settimeout(1.0)
        while proc.poll() is None:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conn.settimeout(120)
            events = conn.makefile("r")
            try:
                hello = events.readline().strip()
            except OSError:
                hello = ""
            if hello == f"hello {token}":
                conn.settimeout(None)
                return proc, (events, conn.makefile("w"))
            events.close()
            conn.close()
    return proc, None


def _converse(channel, on_epoch, on_resume) -> tuple[dict | None, dict | None]:
    """Rank 0's messages answered until it closes the channel: (result, failure), each None if not sent."""
    result, failed = None, None
    if channel is None:
        return result, failed
    with channel[0] as events, channel[1] as answers:
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
    return result, failed


def trial_process(job_path: str) -> int:
    """Entry point of ``python -m ablate.trainer JOB.json``: every rank runs this; rank 0 talks to
    the worker (epoch messages, the result) and owns the W&B run."""
    job = json.loads(Path(job_path).read_text())
    config = TrialConfig.from_json(job["config"])
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # SLURM's time-limit signal is the worker's (module docstring)
    if job.get("launch") == "srun":  # Lightning's SLURMEnvironment: the ranks are the step's tasks
        rank0 = os.environ.get("SLURM_PROCID", "0") == "0"
        print(f"ablate: trial rank {os.environ.get('SLURM_PROCID')} of {os.environ.get('SLURM_NTASKS')}: SLURM task "
              f"of step {os.environ.get('SLURM_JOB_ID')}.{os.environ.get('SLURM_STEP_ID')}", flush=True)
    else:  # Lightning starts the ranks here, on purpose, even inside a SLURM job
        warnings.filterwarnings("ignore", message=_SRUN_HINT)
        rank0 = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    threads = job.get("threads")
    if threads:
        threads = max(1, threads // config.trainer.devices)  # the worker's share of cores, split over its ranks
    if not rank0:
        return _rank_n(config, threads, job.get("checkpoint_dir"))
    events, answers = _channel(job)

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


def _channel(job: dict):
    """Rank 0's (events, answers) files: the inherited pipes, or the worker's loopback socket."""
    if not job.get("connect"):
        return os.fdopen(job["events_fd"], "w"), os.fdopen(job["answers_fd"], "r")
    sock = socket.create_connection(tuple(job["connect"]), timeout=120)
    sock.settimeout(None)
    events, answers = sock.makefile("w"), sock.makefile("r")
    events.write(f"hello {job['token']}\n")
    events.flush()
    return events, answers
