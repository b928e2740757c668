"""The runner's promises: determinism, exactly-once trials under kills and concurrent workers,
W&B offline tracking, and a report that reads storage alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from ablate.storage import records as st
from ablate.study.load import load_study
from ablate.trainer.trial import run_trial

from support import run_cli, tiny_study


def _trials(run_dir: Path, name: str):
    store = st.open_storage(str(run_dir / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


def _complete_pairs(trials):
    return Counter((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in trials
                   if t.state == optuna.trial.TrialState.COMPLETE)


def test_same_seed_same_miou(tmp_path):
    study = load_study(tiny_study(tmp_path))
    cell, seed = study.trials()[0]
    config = study.trial_config(cell, seed)
    a = run_trial(config, threads=1)
    b = run_trial(config, threads=1)
    assert a["curve"] == b["curve"]
    assert a["value"] == b["value"]
    other = run_trial(study.trial_config(cell, seed + 7), threads=1)
    assert other["curve"] != a["curve"], "a different seed should change training"


def test_run_writes_report_and_every_trial_once(tmp_path):
    path = tiny_study(tmp_path, references=[{"mechanism": "none"}])
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    study = load_study(path)
    trials = _trials(tmp_path / "runs/tiny", "tiny")
    pairs = _complete_pairs(trials)
    assert sorted(pairs) == sorted((c.key, s) for c, s in study.trials())
    assert set(pairs.values()) == {1}
    report = (tmp_path / "reports" / "tiny.md").read_text()
    for cell in study.cells():
        assert f"| {cell.title()}" in report
    assert "## Verdict" in report and "2/2" in report
    # each trial records its costs and the attention block's size
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs["compute_s"] <= t.user_attrs["wall_s"] for t in done)
    none_params = {t.user_attrs["attention_params"] for t in done if t.params.get("mechanism") == "none"}
    assert none_params == {0}
    # rerunning a finished study runs nothing and keeps the same results
    before = {t.number: t.value for t in done}
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and "started" not in res.stdout
    after = {t.number: t.value for t in _trials(tmp_path / "runs/tiny", "tiny")
             if t.state == optuna.trial.TrialState.COMPLETE}
    assert after == before


def test_wandb_offline_run_per_trial_with_factors(tmp_path):
    path = tiny_study(tmp_path, seeds=[0], factors={"gcn": [True]}, train={"epochs": 1})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    runs = list((tmp_path / "runs/tiny/wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # wandb 0.31 keeps offline runs in a protobuf log with no Python reader; its records hold
    # the config keys, the group and the logged metric names as plain bytes
    deadline = time.time() + 30  # wandb-core writes the .wandb file from its own process: allow it to land
    while not list(runs[0].glob("*.wandb")) and time.time() < deadline:
        time.sleep(0.5)
    blob = next(runs[0].glob("*.wandb")).read_bytes()
    for needle in (b"cell_key", b"gcn", b"val_miou", b"final_val_miou", b"tiny"):
        assert needle in blob, needle


@pytest.mark.slow
def test_kill_9_then_rerun_runs_each_trial_exactly_once(tmp_path):
    path = tiny_study(tmp_path, train={"epochs": 4}, data={"train_images": 192}, seeds=[0, 1, 2])
    run_dir = tmp_path / "runs/tiny"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "ablate.run", str(path), "--run-dir", str(run_dir), "--no-wandb"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait until at least one trial finished and another is running, then kill -9
    deadline = time.time() + 300
    killed_running = None
    while time.time() < deadline:
        time.sleep(0.3)
        if not (run_dir / "optuna.journal").exists():
            continue
        try:
            trials = _trials(run_dir, "tiny")
        except KeyError:
            continue
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if done and running:
            killed_running = running[0]
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert killed_running is not None, "the study never had a finished and a running trial at once"
    finished_before = {t.number: (t.user_attrs["cell_key"], t.user_attrs["seed"], t.value)
                       for t in _trials(run_dir, "tiny") if t.state == optuna.trial.TrialState.COMPLETE}

    res = run_cli(["ablate.run", str(path), "--run-dir", str(run_dir), "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    trials = _trials(run_dir, "tiny")
    pairs = _complete_pairs(trials)
    study = load_study(path)
    assert sorted(pairs) == sorted((c.key, s) for c, s in study.trials())
    assert set(pairs.values()) == {1}, f"some cell x seed ran twice: {pairs}"
    # finished trials were kept, not rerun
    for number, record in finished_before.items():
        t = trials[number]
        assert (t.user_attrs["cell_key"], t.user_attrs["seed"], t.value) == record
    # the killed trial is recorded as lost and its cell x seed was run again
    lost = trials[killed_running.number]
    assert lost.state == optuna.trial.TrialState.FAIL
    assert lost.system_attrs[st.ATTR + "fail_kind"] == "lost"
    key = (killed_running.user_attrs["cell_key"], killed_running.user_attrs["seed"])
    assert pairs[key] == 1
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert "3/3" in report and "Failed trials" not in report


@pytest.mark.slow
def test_two_workers_never_run_the_same_trial(tmp_path):
    path = tiny_study(tmp_path, seeds=[0, 1, 2, 3], train={"epochs": 1})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--workers", "2", "--no-wandb"],
                  cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    trials = _trials(tmp_path / "runs/tiny", "tiny")
    pairs = _complete_pairs(trials)
    assert len(pairs) == 8 and set(pairs.values()) == {1}
    assert len(trials) == 8, "no trial was created twice"
    pids = {t.system_attrs[st.ATTR + "pid"] for t in trials}
    assert len(pids) == 2, "both workers took trials"


@pytest.mark.slow
def test_independent_processes_share_one_study(tmp_path):
    """Two separate `ablate.run` commands on one storage (as on two machines) split the plan."""
    path = tiny_study(tmp_path, seeds=[0, 1, 2], train={"epochs": 1})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb", "--threads", "1"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trials = _trials(tmp_path / "runs/tiny", "tiny")
    pairs = _complete_pairs(trials)
    assert len(pairs) == 6 and set(pairs.values()) == {1} and len(trials) == 6


def test_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path):
    """A diverging cell (absurd learning rate: NaN loss) fails alone; its report row says so."""
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 1},
                      factors={"gcn": [True]}, references=[{"mechanism": "none"}, {"train.lr": 1.0e30}])
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 1, res.stderr  # a failed trial: exit 1 (documented in --help)
    assert "Traceback" not in res.stderr and "1 trial(s) failed for a reason of their own" in res.stderr
    trials = _trials(tmp_path / "runs/tiny", "tiny")
    states = Counter(t.state for t in trials)
    assert states[optuna.trial.TrialState.COMPLETE] == 2 and states[optuna.trial.TrialState.FAIL] == 1
    failed = next(t for t in trials if t.state == optuna.trial.TrialState.FAIL)
    assert failed.system_attrs[st.ATTR + "fail_kind"] == "error"
    assert "non-finite" in failed.system_attrs[st.ATTR + "fail_reason"]
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert "## Failed trials" in report and "non-finite" in report
    # a failure of the trial's own making is final: a rerun does not retry it, and still says so
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 1 and "started" not in res.stdout


def test_report_command_reads_storage_alone(tmp_path):
    path = tiny_study(tmp_path, seeds=[0, 1], train={"epochs": 1})
    assert run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb", "--no-report"],
                   cwd=tmp_path, timeout=600).returncode == 0
    assert not (tmp_path / "reports").exists()
    res = run_cli(["ablate.report", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "reports" / "tiny.md").read_text()
    study = load_study(path)
    values = {}
    for t in _trials(tmp_path / "runs/tiny", "tiny"):
        values.setdefault(t.user_attrs["cell_key"], []).append(t.value)
    for cell in study.cells():
        v = values[cell.key]
        mean = 100 * sum(v) / len(v)
        assert f"| {cell.title()} | glore | {mean:.1f} ± " in text
    # no storage yet: a clear error, exit 2
    res = run_cli(["ablate.report", str(path), "--run-dir", "runs/none"], cwd=tmp_path, timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "does not exist" in res.stderr


@pytest.mark.slow
def test_ctrl_c_marks_the_trial_interrupted_and_a_rerun_resumes(tmp_path):
    # long enough that the first trial cannot finish between its first epoch line and the signal,
    # however fast the machine (6 epochs took under a second on CI's)
    path = tiny_study(tmp_path, train={"epochs": 30}, data={"train_images": 256}, seeds=[0])
    run_dir = tmp_path / "runs/tiny"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    # a shell without job control starts background jobs with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: give the child the default disposition, as a terminal would
    proc = subprocess.Popen([sys.executable, "-m", "ablate.run", str(path), "--run-dir", str(run_dir), "--no-wandb"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if "trial 1/2" in line and " epoch " in line:  # its first progress line, a quarter of the way
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again" in err
    trials = _trials(run_dir, "tiny")
    assert [t.system_attrs.get(st.ATTR + "fail_kind") for t in trials] == ["interrupted"]
    res = run_cli(["ablate.run", str(path), "--run-dir", str(run_dir), "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0
    assert set(_complete_pairs(_trials(run_dir, "tiny")).values()) == {1}
    assert len(_complete_pairs(_trials(run_dir, "tiny"))) == 2


def test_search_study_runs_its_budget_once(tmp_path):
    path = tiny_study(tmp_path, train={"epochs": 1}, seeds=[0], baseline={},
                      factors={"K": {"low": 2, "high": 16, "log": True}, "gcn": [True, False]},
                      search={"n_trials": 3, "sampler": "random"})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    trials = _trials(tmp_path / "runs/tiny", "tiny")
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    points = {(t.params["K"], t.params["gcn"]) for t in trials}
    assert len(points) > 1, "the sampler must not replay one point"
    for t in trials:
        config = json.loads(t.user_attrs["config"])
        assert config["args"]["K"] == t.params["K"] and 2 <= t.params["K"] <= 16
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert "Search: 3 trials" in text
    # the budget is spent: a rerun samples nothing more
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and len(_trials(tmp_path / "runs/tiny", "tiny")) == 3
