"""Storage outages and full disks mid-run (issue 25): storage calls are retried through a
transient outage for $ABLATE_STORAGE_RETRY_S seconds, then the runner stops with one paragraph
and exit 3, the trial in flight left to resume from its checkpoint; a journal on a full disk stops
it at once. No traceback, no password."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy

from ablate.storage import retry as storage_retry
from ablate.config.errors import RetryableError
from ablate.storage.journal import JournalBackend

from support import REPO, tiny_study


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_a_transient_failure_is_retried_and_a_lasting_one_is_one_paragraph(monkeypatch):
    """Failures of the connection are retried with backoff (0.5, 1, 2 s ...) until the call
    works or $ABLATE_STORAGE_RETRY_S has passed; other errors are the caller's at once."""
    sleeps = []
    monkeypatch.setattr(storage_retry.time, "sleep", sleeps.append)
    monkeypatch.setenv(storage_retry.RETRY_ENV, "10")
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 4:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "ok"

    assert storage_retry.call(flaky, "postgresql://u:***@h/db") == "ok" and sleeps == [0.5, 1.0, 2.0]
    monkeypatch.setattr(storage_retry.time, "monotonic", lambda: 100.0 + 3 * len(sleeps))  # time moves 3 s a wait

    def down():
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused, password=s3cret"))

    with pytest.raises(RetryableError) as e:
        storage_retry.call(down, "postgresql://u:***@h/db")
    para = e.value.paragraph()
    assert "the storage postgresql://u:***@h/db" in para and "has not answered for 10 s" in para
    assert "s3cret" not in para and "ABLATE_STORAGE_RETRY_S" in para
    with pytest.raises(KeyError):  # not a storage outage: the caller's own error, not retried
        storage_retry.call(lambda: {}["x"], "journal")


def test_a_full_disk_under_the_journal_stops_the_run_with_one_paragraph(tmp_path, in_process, monkeypatch,  # noqa: F811
                                                                         capsys):
    """The disk fills while a trial runs: its next journal write fails with ENOSPC. Before: 3
    tracebacks and exit 1. Now: one paragraph naming the journal, exit 3."""
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 2})
    full = {"on": False}
    real_append, real_report = JournalBackend.append_logs, optuna.trial.Trial.report

    def append(self, logs):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, logs)

    def report(self, value, step):
        full["on"] = True  # from the first epoch's value on, the disk is full
        return real_report(self, value, step)

    monkeypatch.setattr(JournalBackend, "append_logs", append)
    monkeypatch.setattr(optuna.trial.Trial, "report", report)
    assert in_process(path, "--run-dir", "runs/tiny", "--no-wandb") == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    flat = _flat(err)
    assert "error: runs/tiny/optuna.journal: could not write it: the disk is full" in flat
    assert not (tmp_path / "reports").exists(), "no report is attempted on a full disk"


def test_a_postgresql_server_stopped_mid_run_is_retried_then_exit_3(pg_server, tmp_path):  # noqa: F811
    """``pg_ctl -m immediate stop`` while two trials train. Before: 325 lines, 7 tracebacks,
    exit 1. Now: one notice that it retries, then after $ABLATE_STORAGE_RETRY_S one paragraph,
    exit 3, no password anywhere; the trial's checkpoint stays for the next run."""
    url = pg_server.new_database()
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 40})
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", storage_retry.RETRY_ENV: "4"}
    proc = subprocess.Popen([sys.executable, "-m", "ablate.run", str(path), "--storage", url, "--run-dir", "runs/tiny",
                             "--no-wandb", "--no-doctor"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    while not any("epoch 10/40" in ln for ln in lines):  # a checkpoint of the trial is on disk by then
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the run ended early: {''.join(lines)} {proc.stderr.read()[-2000:]}")
        lines.append(line)
    stopped = pg_server._pg("pg_ctl", "-D", str(pg_server.data), "-m", "immediate", "-w", "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    assert time.monotonic() - t0 < 120
    assert "Traceback" not in err and pg_server.password not in "".join(lines) + out + err
    flat = _flat(err)
    assert "retrying for up to 4 s" in flat and "has not answered for 4 s (OperationalError: " in flat
    assert flat.count("error: ") == 1
    assert list((tmp_path / "runs/tiny/checkpoints").rglob("step-*.ckpt")), "the trial can resume from its checkpoint"
