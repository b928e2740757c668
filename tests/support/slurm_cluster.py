"""A throwaway one-node SLURM cluster for the tests (and by hand: ``python tests/support/slurm_cluster.py
up DIR`` / ``down DIR``).

:func:`write_config` writes a ``slurm.conf`` into a folder of its own (state, spool, logs and
pid files beside it): this machine as the controller and the only node, with its CPUs and its
memory less a margin, one partition, linuxproc process tracking (no cgroups needed, so it runs
in a container), cons_tres selection by core and memory, and no accounting database. Short
timers keep the tests quick: the scheduler runs every second, a requeued job may start again
at once, an ended job's processes get 5 s between SIGTERM and SIGKILL.

:class:`Cluster` starts ``munged`` (unless one already answers), ``slurmctld`` and ``slurmd`` as
root on free ports, waits until the node is idle, and stops what it started; the daemons read
the config through ``SLURM_CONF``, which :meth:`Cluster.env` gives the clients (sbatch,
squeue, scontrol and the jobs, which inherit it).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")
MEMORY_MARGIN_MB = 1024  # left to the machine (the controller, the node daemon, the test itself)


def missing() -> str | None:
    """Why a cluster cannot start here (None: it can): a program not installed, or not root."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} not found; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        return "the test SLURM cluster's daemons (slurmctld, slurmd, munged) must start as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def write_config(folder: Path, cpus: int | None = None, partition: str = "debug") -> Path:
    """Write ``folder/slurm.conf`` (and the folders it names) for a one-node cluster on this
    machine; returns the config's path."""
    folder = Path(folder).absolute()
    for sub in ("state", "spool", "log", "run"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    cpus = cpus or os.cpu_count() or 1
    memory = max(256, _memory_mb() - MEMORY_MARGIN_MB)
    lines = [
        "ClusterName=ablate-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        "AuthInfo=cred_expire=10",  # also how long a requeued job waits before it may start again (default 120 s)
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "PreemptType=preempt/none",
        "ReturnToService=2",
        "JobRequeue=1",
        "KillWait=5",
        "MinJobAge=600",
        "InactiveLimit=0",
        "MailProg=/bin/true",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # a job that asks for no memory gets its CPUs' share, not the whole node (the default)
        f"DefMemPerCPU={memory // cpus}",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
        f"PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _munge_answers() -> bool:
    try:
        return subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Cluster:
    """A started one-node cluster (see the module's docstring); ``stop()`` ends what it started."""

    def __init__(self, folder: Path, cpus: int | None = None, partition: str = "debug"):
        self.folder = Path(folder).absolute()
        self.partition = partition
        self.conf = write_config(self.folder, cpus, partition)
        self.node = socket.gethostname()
        self.pids: dict[str, int] = {}

    def env(self) -> dict:
        """The environment for SLURM's clients (and the jobs they submit) to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout, check=check)

    def start(self, timeout: float = 60.0) -> "Cluster":
        if not _munge_answers():
            run = Path("/run/munge")
            run.mkdir(parents=True, exist_ok=True)
            shutil.chown(run, "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True, timeout=30)
            self.pids["munged"] = int(Path("/run/munge/munged.pid").read_text().strip()) \
                if Path("/run/munge/munged.pid").exists() else 0
            deadline = time.monotonic() + 20
            while not _munge_answers():
                if time.monotonic() > deadline:
                    raise RuntimeError("munged started but does not answer (munge -n)")
                time.sleep(0.2)
        # -i: ignore the state of an earlier cluster in this folder; both fork into the background
        self.run("slurmctld", "-f", str(self.conf), "-i")
        self.run("slurmd", "-f", str(self.conf))
        run = self.folder / "run"
        self.pids["slurmctld"] = self._pid(run / "slurmctld.pid")
        self.pids["slurmd"] = self._pid(run / "slurmd.pid")
        deadline = time.monotonic() + timeout
        while True:
            res = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = res.stdout.strip()
            if res.returncode == 0 and state and state.rstrip("*~#") in ("idle", "mixed", "allocated"):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test SLURM node did not come up in {timeout:.0f}s (state {state!r}, "
                                   f"{res.stderr.strip()}); logs in {self.folder / 'log'}")
            if state.startswith("down") or state.startswith("drain"):
                self.run("scontrol", "update", f"NodeName={self.node}", "State=RESUME", check=False)
            time.sleep(0.3)

    @staticmethod
    def _pid(path: Path, wait: float = 10.0) -> int:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text().strip())
            time.sleep(0.1)
        return 0

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this cluster started (munged only if it started it)."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "--partition", self.partition, check=False, timeout=10)
        pids = [self.pids.pop(name, 0) for name in ("slurmd", "slurmctld", "munged")]
        pids = [p for p in pids if p]
        for pid in pids:  # all at once, then wait for each: the daemons stop in parallel
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in pids:
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # small helpers for the tests
    def squeue(self, *args: str) -> str:
        return self.run("squeue", "-h", *args).stdout

    def job_states(self, job: str) -> dict[str, str]:
        """{job id: state} of a job (an array's tasks each by its own id), from scontrol."""
        res = self.run("scontrol", "-o", "show", "job", job, check=False)
        states = {}
        for line in res.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            jid = fields.get("JobId", "")
            if fields.get("ArrayTaskId"):
                jid = f"{fields.get('ArrayJobId')}_{fields['ArrayTaskId']}"
            states[jid] = fields.get("JobState", "")
        return states


def main(argv: list[str]) -> int:
    """``up DIR`` starts a cluster in DIR and prints ``export SLURM_CONF=...``; ``down DIR`` stops it."""
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python tests/support/slurm_cluster.py up|down DIR", file=sys.stderr)
        return 2
    folder = Path(argv[1]).absolute()
    if argv[0] == "up":
        why = missing()
        if why:
            print(why, file=sys.stderr)
            return 1
        cluster = Cluster(folder).start()
        (folder / "pids").write_text(" ".join(f"{k}={v}" for k, v in cluster.pids.items()))
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    cluster = Cluster.__new__(Cluster)
    cluster.folder, cluster.conf, cluster.partition = folder, folder / "slurm.conf", "debug"
    cluster.pids = dict(kv.split("=") for kv in (folder / "pids").read_text().split())
    cluster.pids = {k: int(v) for k, v in cluster.pids.items()}
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
