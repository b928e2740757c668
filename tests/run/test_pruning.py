"""Pruning: the study file chooses an Optuna pruner; a trial whose val mIoU after an epoch is poor
next to the finished trials stops there, is recorded as PRUNED, is listed in the report with
the epoch it reached, never enters a mean, and is never run again."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from ablate.storage import records as st
from ablate.config.errors import StudyError
from ablate.study.load import PRUNERS, load_study

from support import run_cli, tiny_study

PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE


def _trials(run_dir: Path, name: str = "tiny"):
    store = st.open_storage(str(run_dir / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------

def test_no_pruner_by_default(tmp_path):
    assert load_study(tiny_study(tmp_path)).pruner == {"name": "none"}


@pytest.mark.parametrize("name", list(PRUNERS))
def test_every_pruner_builds_with_its_defaults(tmp_path, name):
    study = load_study(tiny_study(tmp_path, pruner={"name": name}))
    assert study.pruner["name"] == name and set(study.pruner) == {"name", *PRUNERS[name]}
    assert isinstance(study.make_pruner(), optuna.pruners.BasePruner)


def test_pruner_options_are_resolved(tmp_path):
    study = load_study(tiny_study(tmp_path, pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1}))
    assert study.pruner == {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1, "interval_steps": 1,
                            "n_min_trials": 1}
    # hyperband's max_resource is the study's epochs unless given; a bare name is accepted
    hb = load_study(tiny_study(tmp_path, pruner="hyperband"))
    assert hb.pruner["max_resource"] == hb.train.epochs
    sh = load_study(tiny_study(tmp_path, pruner={"name": "successive_halving", "min_resource": "auto"}))
    assert sh.pruner["min_resource"] == "auto"


def test_pruner_does_not_change_cell_keys(tmp_path):
    """Pruning decides whether a trial finishes, not how it trains."""
    a = [c.key for c in load_study(tiny_study(tmp_path, name="a")).cells()]
    b = [c.key for c in load_study(tiny_study(tmp_path, name="b", pruner={"name": "median"})).cells()]
    assert a == b


BAD = {
    "unknown_name": ({"name": "medain"}, "pruner.name", ["'medain'", *PRUNERS]),
    "missing_name": ({"n_startup_trials": 3}, "pruner.name", ["missing", *PRUNERS]),
    "unknown_option": ({"name": "median", "min_resource": 1}, "pruner.min_resource",
                       ["median", "n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"]),
    "option_of_none": ({"name": "none", "n_startup_trials": 1}, "pruner.n_startup_trials", ["takes no options"]),
    "wrong_type": ({"name": "median", "n_warmup_steps": "two"}, "pruner.n_warmup_steps", ["'two'", "integer"]),
    "negative": ({"name": "median", "n_startup_trials": -1}, "pruner.n_startup_trials", ["out of range", ">= 0"]),
    "factor_too_small": ({"name": "hyperband", "reduction_factor": 1}, "pruner.reduction_factor", [">= 2"]),
    "percentile_too_big": ({"name": "percentile", "percentile": 150}, "pruner.percentile", ["<= 100"]),
    "bad_auto": ({"name": "successive_halving", "min_resource": "soon"}, "pruner.min_resource", ["'soon'"]),
    "not_a_mapping": ([1, 2], "pruner", ["mapping"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_pruner_is_a_study_error(tmp_path, case):
    raw, key, needles = BAD[case]
    path = tiny_study(tmp_path, pruner=raw)
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.key == key, e.value.paragraph()
    for needle in needles:
        assert needle in e.value.paragraph(), (needle, e.value.paragraph())


def test_bad_pruner_through_the_cli_exits_2_with_one_paragraph(tmp_path):
    path = tiny_study(tmp_path, pruner={"name": "asha"})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    flat = " ".join(res.stderr.split())
    assert f"error in {path}, key 'pruner.name': unknown pruner 'asha'; valid: " in flat
    assert "successive_halving" in flat and flat.endswith("Nothing was run.")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------
# a study in which pruning happens for certain
# --------------------------------------------------------------------------------------------

def _pruning_study(tmp_path: Path) -> Path:
    """Two cells on the `local` task (texture only: the backbone learns it in one epoch): lr 0.01
    reaches about 0.4 val mIoU after epoch 1 and 0.7 after epoch 2; lr 1e-7 does not learn (about
    0.1). The median pruner waits for 2 finished trials (the good cell's two seeds, first in plan
    order), then stops any trial below their median at the same epoch: the lr 1e-7 trials after
    epoch 1, far below (0.1 vs 0.4)."""
    path = tiny_study(tmp_path, data={"task": "local", "train_images": 128, "val_images": 32},
                      train={"epochs": 3, "batch_size": 8, "lr": 0.01}, seeds=[0, 1],
                      pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0})
    raw = yaml.safe_load(path.read_text())
    raw["factors"] = {"train.lr": [0.01, 1.0e-7]}  # replaces the tiny study's gcn factor
    raw.pop("baseline")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_poor_cell_is_pruned_listed_not_averaged_and_not_rerun(tmp_path):
    path = _pruning_study(tmp_path)
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "pruned after epoch 1/3" in res.stdout
    study = load_study(path)
    good, bad = study.cells()
    trials = _trials(tmp_path / "runs/tiny")
    states = {(t.user_attrs["cell_key"], t.user_attrs["seed"]): t for t in trials}
    assert len(trials) == 4
    assert [states[(good.key, s)].state for s in (0, 1)] == [COMPLETE, COMPLETE]
    assert [states[(bad.key, s)].state for s in (0, 1)] == [PRUNED, PRUNED]
    for t in trials:
        curve = t.user_attrs["curve"]
        # the storage holds every epoch's val mIoU at its own epoch index (step = 0-based epoch)
        assert t.intermediate_values == {i: v for i, v in enumerate(curve)}
        assert len(curve) == (3 if t.state == COMPLETE else 1)
        if t.state == PRUNED:
            assert t.user_attrs["pruned_epoch"] == 0 and t.value == curve[-1]

    report = (tmp_path / "reports" / "tiny.md").read_text()
    # the good cell's mean is over its two complete trials only; the pruned cell has no mean
    vals = [states[(good.key, s)].value for s in (0, 1)]
    assert f"| {good.title()} | glore | {100 * sum(vals) / 2:.1f} ± " in report
    row = next(line for line in report.splitlines() if line.startswith(f"| {bad.title()} | glore |"))
    assert "| — |" in row and "0/2 (2 pruned)" in row
    assert "## Pruned trials (not counted in any mean)" in report
    for s in (0, 1):
        assert f"| {bad.title()} | {s} | 1/3 | {100 * states[(bad.key, s)].value:.1f} |" in report
    assert "Epochs trained: 8 of the 12 that the same trials would take without pruning (33.3% saved)" in report

    # pruned trials are final: a rerun starts nothing
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and "started" not in res.stdout, res.stdout
    assert Counter(t.state for t in _trials(tmp_path / "runs/tiny")) == {COMPLETE: 2, PRUNED: 2}


@pytest.mark.slow
def test_the_same_grid_without_a_pruner_runs_every_epoch(tmp_path):
    """The control: the pruner, not the cell, stops the lr 1e-7 trials."""
    path = _pruning_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw.pop("pruner")
    raw["seeds"] = [0]
    path.write_text(yaml.safe_dump(raw))
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    trials = _trials(tmp_path / "runs/tiny")
    assert [t.state for t in trials] == [COMPLETE, COMPLETE]
    assert all(len(t.intermediate_values) == 3 for t in trials)
    assert "Pruned trials" not in (tmp_path / "reports" / "tiny.md").read_text()
