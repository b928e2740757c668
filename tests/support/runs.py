"""Running ``python -m ablate.run`` inside the test process (the ``in_process`` fixture), read-only
folders, and hand-made finished trials with owner records."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from ablate.storage import records as st


COMPLETE = TrialState.COMPLETE


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """``python -m ablate.run ARGS`` in this process, from ``tmp_path``; returns its exit status."""
    from ablate.run.command import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ablate.run"])
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv(st.RUN_ENV, "")  # main sets a fresh id per invocation; restored afterwards
    monkeypatch.delenv(st.STORAGE_ENV, raising=False)

    def run(*args: str) -> int:
        try:
            return main([str(a) for a in args])
        except SystemExit as e:
            return e.code
    return run


@contextlib.contextmanager
def read_only(*folders: Path):
    """Folders nobody may write to, root included: mode 555 for a user, the immutable attribute
    (chattr +i) for root, whom permissions do not stop."""
    root = os.geteuid() == 0
    if root and shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: a read-only folder cannot be made")
    done = []
    try:
        for d in folders:
            if root:
                r = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
                if r.returncode:
                    pytest.skip(f"chattr +i is not supported here: {r.stderr.strip()}")
            else:
                d.chmod(0o555)
            done.append(d)
        yield
    finally:
        for d in done:
            if root:
                subprocess.run(["chattr", "-i", str(d)], check=True)
            else:
                d.chmod(0o755)


def owned_trial(store, ostudy, study, cell, seed, start: float, seconds: float, pid: int, run: str, compute: float):
    attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
             "class_iou": [0.9, 0.5, 0.5, 0.5, 0.5], "wall_s": seconds, "compute_s": compute, "curve": [0.6],
             "attention_params": 7, "attention_flops": 1000}
    owner = {st.ATTR + "host": "node-a", st.ATTR + "pid": pid, st.ATTR + "start": "1", st.ATTR + "run": run}
    t0 = dt.datetime.fromtimestamp(start)
    store.create_new_trial(ostudy._study_id, template_trial=FrozenTrial(
        number=-1, state=COMPLETE, value=0.6, datetime_start=t0, datetime_complete=t0 + dt.timedelta(seconds=seconds),
        params={}, distributions={}, user_attrs=attrs, system_attrs=owner, intermediate_values={}, trial_id=-1))
