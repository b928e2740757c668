"""The SLURM side of ``ablate submit`` (:mod:`.submit`): what runs inside the jobs, and what the
submitting machine can learn about the cluster.

Inside the jobs (submitit pickles these functions by reference and calls them on the node):
:func:`slurm_worker` is one array task, the worker of ``ablate run`` (:mod:`.worker`) against
the study's storage; :func:`slurm_report` is the dependent job that writes the run record and
the report. A worker that gets :data:`PREEMPT_SIGNAL` (SLURM sends it :data:`SIGNAL_DELAY_S`
seconds before the time limit, and at a preemption with ``send_user_signal``) stops its trial as
Ctrl-C does (recorded as interrupted, its newest checkpoint kept), then requeues its own task
(``scontrol requeue``); the next claim of that cell x seed, by the requeued task or any other
worker, resumes it from the checkpoint. A DDP trial's ranks are the tasks of an ``srun`` step of
the worker's allocation, through Lightning's SLURM environment (``ABLATE_TRIAL_LAUNCH=srun``:
:mod:`ablate.trainer.process`).

On the submitting machine: :func:`filesystem_of` (from ``/proc/self/mountinfo``) and
:func:`partition_nodes` (``sinfo``) tell whether a path is shared by the nodes.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PREEMPT_SIGNAL = "USR1"  # SLURM's warning before a time limit (and a preemption with send_user_signal)
SIGNAL_DELAY_S = 120  # how long before the end it comes: time to record the trial and requeue
SUBMISSIONS_ATTR = "slurm_submissions"  # study user attribute: the jobs of each ``ablate submit``
REQUEUES_ATTR = "slurm_requeued:"  # study user attribute prefix, one per array task: when it requeued
# file systems every node of a cluster mounts alike (a local disk, tmpfs or overlay is not)
SHARED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs",
    "cifs", "smb3", "smbfs", "panfs", "wekafs", "fuse.weka", "fuse.juicefs", "pvfs2", "orangefs", "afs",
})


# ------------------------------------------------------------------------------------------------
# the cluster as the submitting machine sees it
# ------------------------------------------------------------------------------------------------

def filesystem_of(path: Path) -> tuple[str, str]:
    """(type, mount point) of the file system holding ``path`` (or its nearest existing folder),
    from ``/proc/self/mountinfo``; ('', '') where that cannot be read."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    p = p.resolve()
    best = ("", "")
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or not kind:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040 is a space
        inside = str(p) == mount or str(p).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[1]):
            best = (kind[0], mount)
    return best


def shared_filesystem(kind: str) -> bool:
    return kind in SHARED_FILESYSTEMS or kind.startswith("nfs")


def partition_nodes(partition: str | None) -> list[str] | None:
    """The node names of ``partition`` (the default partition when None), from ``sinfo``; None
    when sinfo is missing or does not answer."""
    if shutil.which("sinfo") is None:
        return None
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %P"] + (["-p", partition] if partition else []),
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split() for line in res.stdout.splitlines() if len(line.split()) >= 2]
    if res.returncode or not rows:
        return None
    if not partition:  # every partition's nodes are listed; the default partition's name ends in *
        rows = [r for r in rows if r[1].endswith("*")] or rows
    return sorted({r[0] for r in rows})


def only_this_machine(nodes: list[str] | None) -> bool:
    """Whether the partition's only node is this machine (its local disks are then shared)."""
    here = socket.gethostname().split(".")[0]
    return bool(nodes) and all(n.split(".")[0] == here for n in nodes)


def task_id() -> str:
    """This job's SLURM id: ``ARRAY_TASK`` for an array task, else the plain job id ('' outside SLURM)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID", "")


# ------------------------------------------------------------------------------------------------
# inside the jobs
# ------------------------------------------------------------------------------------------------

def _job_environment(spec: dict) -> None:
    from ..storage import records as st

    os.chdir(spec["cwd"])
    os.environ[st.STORAGE_ENV] = spec["url"]  # the worker reads it from there, as --workers children do
    os.environ.setdefault("WANDB_DIR", spec["run_dir"])


def slurm_worker(spec: dict, index: int) -> int:
    """One array task: the worker of ``ablate run`` on the study's storage (``spec``: what
    :func:`ablate.run.submit.job_spec` wrote). On :data:`PREEMPT_SIGNAL` its trial is recorded as
    interrupted, its checkpoint kept, and the task requeues itself. Returns the exit status."""
    early: list = []  # the signal while the task starts: acted on once the worker would run
    signal.signal(signal.SIGUSR1, lambda signum, frame: early.append(signum))
    _job_environment(spec)
    from ..storage import records as st

    os.environ[st.RUN_ENV] = f"slurm-{task_id()}"  # its trials' owner names the task (ablate status shows it)
    from ..trainer.process import LAUNCH_ENV

    os.environ.setdefault(LAUNCH_ENV, "srun")  # a DDP trial's ranks: an srun step's tasks (ablate.trainer.process)
    from .command import main
    from .worker import interrupt_signal

    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    print(f"ablate: SLURM task {task_id()} on {socket.gethostname()}"
          + (f" (requeued {restarts}x)" if restarts else ""), flush=True)
    if early:
        return requeue(spec, "before its worker started")
    argv = [spec["study"], *spec["overrides"], "--worker", "--worker-index", str(index), "--run-dir",
            spec["run_dir"], "--threads", str(spec["threads"]), "--no-report"]
    argv += ["--no-wandb"] * spec["no_wandb"] + ["--no-pruning"] * spec["no_pruning"]
    code = main(argv)
    if code == 128 + signal.SIGUSR1 and interrupt_signal() == signal.SIGUSR1:
        return requeue(spec, "its trial was recorded as interrupted, its newest checkpoint kept")
    return code


def requeue(spec: dict, what: str) -> int:
    """Requeue this task (``scontrol requeue``) and note it in the study; returns the exit status."""
    job = task_id()
    wandb = sys.modules.get("wandb")
    if wandb is not None:  # its service process is killed with the task: close it first, not at exit
        with contextlib.suppress(Exception):
            wandb.teardown()
    try:
        res = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        failed = res.stderr.strip() if res.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        failed = f"{type(e).__name__}: {e}"
    if failed:
        print(f"ablate: SIGUSR1 (time limit or preemption): {what}; requeueing task {job} failed ({failed}): "
              "submit the same command again to resume the study.", flush=True)
        return 128 + signal.SIGUSR1
    print(f"ablate: SIGUSR1 (time limit or preemption): {what}; task {job} requeued.", flush=True)
    try:
        _note_requeue(spec, job)
    except Exception as e:  # noqa: BLE001 - the requeue is what matters; the note is for ablate status
        print(f"ablate: the requeue could not be noted in storage ({type(e).__name__}: {e})", flush=True)
    return 0


def _note_requeue(spec: dict, job: str) -> None:
    import optuna

    from ..storage import records as st

    ostudy = optuna.load_study(study_name=spec["name"], storage=st.open_storage(spec["url"]))
    key = REQUEUES_ATTR + job  # one key per task: tasks never write the same attribute
    ostudy.set_user_attr(key, list(ostudy.user_attrs.get(key, [])) + [time.time()])


def load(study_path: str, overrides: list[str], check_files: bool = True):
    """The study of a file with its overrides (StudyError if invalid)."""
    if overrides:
        from ..study.overrides import load_with_overrides

        return load_with_overrides(study_path, overrides, check_files=check_files)
    from ..study.load import load_study

    return load_study(study_path, check_files=check_files)


def slurm_report(spec: dict) -> int:
    """The report job, after every worker task ended: the run record and the report; returns the
    exit status ``ablate run`` would (0, 1 trials failed for their own reason, 3 for the harness's)."""
    _job_environment(spec)
    from ..config.errors import StudyError, exit_with
    from ..report.command import write_report
    from ..storage.summary import failures
    from .command import run_record

    try:
        study = load(spec["study"], spec["overrides"], check_files=False)
    except StudyError as e:
        exit_with(e)
    url = spec["url"]
    info = run_record(study, url, {"wall_s": time.time() - spec["submitted"], "started": spec["submitted"],
                                   "workers": spec["workers"], "run": f"slurm-{task_id()}",
                                   "command": spec["command"]})
    path = write_report(study, url, spec["reports_dir"], run_info=info)
    print(f"ablate: report written to {path}", flush=True)
    final, retry = failures(study, url)
    if final:
        print(f"ablate: {len(final)} trial(s) failed for a reason of their own: final, listed in the report.",
              flush=True)
    if retry:
        print(f"ablate: {len(retry)} trial(s) failed for a reason of the harness or its environment: submit the "
              "same command again to retry them.", flush=True)
    return 3 if retry else 1 if final else 0
