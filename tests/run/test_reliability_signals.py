"""The runner owns its workers (issue 25): SIGINT or SIGTERM to ``ablate run --workers 2`` stops
every worker (exit 130 or 143, "interrupted (SIGTERM)"), and a runner killed with SIGKILL is
noticed by its workers, which stop within seconds; either way their trials are recorded as
interrupted, free to resume from their checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from ablate.storage import records as st

from support import REPO, tiny_study


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """``ablate run`` with two workers on a study whose trials take a while; returns once both
    workers have started a trial, with the workers' process ids."""
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 2000})  # minutes a trial: both are mid-trial at the signal
    proc = subprocess.Popen([sys.executable, "-m", "ablate.run", str(path), "--workers", "2", "--run-dir", "runs/tiny",
                             "--no-wandb", "--no-report", "--no-doctor"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    started, deadline = 0, time.monotonic() + 240
    while started < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        started += ": started" in line
    if started < 2:
        proc.kill()
        pytest.fail(f"the workers did not start: {proc.stderr.read()[-2000:]}")
    workers = _children(proc.pid)
    assert len(workers) == 2
    return proc, workers


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def _kinds(tmp_path: Path) -> list[tuple[str, str]]:
    store = st.open_storage(str(tmp_path / "runs/tiny/optuna.journal"))
    trials = optuna.load_study(study_name="tiny", storage=store).get_trials(deepcopy=False)
    return sorted((t.state.name, t.system_attrs.get(st.ATTR + "fail_reason", "")) for t in trials)


def test_a_signal_to_the_runner_stops_every_worker(tmp_path):
    """SIGTERM (SIGINT takes the same path, with 130 and its own name; not run here to keep CI short)."""
    signum = signal.SIGTERM
    proc, workers = _start(tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert f"ablate: interrupted ({name}); run the same command again to resume" in err
    assert "Traceback" not in err
    assert _gone_within(workers, 10), "no worker may outlive its runner"
    assert _kinds(tmp_path) == [("FAIL", f"interrupted ({name}); run again to resume")] * 2


def test_workers_stop_when_their_runner_is_killed(tmp_path):
    proc, workers = _start(tmp_path)
    proc.kill()  # SIGKILL: the runner cannot tell its workers
    proc.wait(timeout=30)
    assert _gone_within(workers, 10), "the workers outlived their runner by 10 s"
    # each trial is recorded as interrupted, or (a worker stopped before it could write) left RUNNING
    # with a dead owner, which the next run reaps and resumes: never finished, never lost
    kinds = _kinds(tmp_path)
    assert len(kinds) == 2 and all(k in (("FAIL", "interrupted (SIGTERM); run again to resume"), ("RUNNING", ""))
                                   for k in kinds), kinds
