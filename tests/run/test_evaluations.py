"""Evaluation-time factors: each training is evaluated from its final weights under every setting,
once; an evaluation at the training's own setting gives its training-time val mIoU exactly; a
killed evaluation runs again from the same weights without training again."""
from __future__ import annotations

import json

import optuna

import yaml

from support import run_cli

from ablate.storage import records as st
from ablate.storage.evaluations import eval_study_name
from ablate.study import load_study
from ablate.study.evaluations import eval_key

EMA = {"name": "evals", "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "emanet",
                                  "args": {"K": 4, "T": 2, "T_eval": 2}},
       "data": {"task": "global_cue", "train_images": 64, "val_images": 32},
       "train": {"epochs": 1, "batch_size": 16, "threads": 1},
       "factors": {"T": [2]}, "seeds": [0, 1], "screening": True,
       "eval_factors": {"T_eval": [1, 2]}, "tracking": {"wandb": False}}


def ema_study(tmp_path, **changes) -> str:
    """The tiny EMANet study above with ``changes`` (top-level keys replaced), written as YAML."""
    path = tmp_path / f"{changes.get('name', 'evals')}.yaml"
    path.write_text(yaml.safe_dump({**EMA, **changes}, sort_keys=False))
    return path


def _trials(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=st.open_storage(url)).get_trials(deepcopy=False)


def test_killed_evaluation_reruns_without_training_and_own_setting_reproduces(tmp_path):
    path = ema_study(tmp_path)
    study = load_study(path)
    cell = study.cells()[0]
    run = ["ablate.run", str(path), "--run-dir", "runs/evals", "--workers", "1", "--no-doctor"]
    # plan order: training s0, its 2 evaluations, training s1, its evaluation T_eval=1; T_eval=2 of s1 left
    first = run_cli(run + ["--max-trials", "5", "--no-report"], cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    url = str(tmp_path / "runs/evals/optuna.journal")
    left = eval_key(cell.key, study.evals[1])
    ev = optuna.load_study(study_name=eval_study_name(study.name), storage=st.open_storage(url))
    done = sorted((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in ev.get_trials())
    assert done == sorted([(eval_key(cell.key, e), 0) for e in study.evals] + [(eval_key(cell.key, study.evals[0]), 1)])
    # a worker killed during the last evaluation: its record RUNNING, its owner process gone
    st.create_running_trial(ev, {}, {}, {"cell_key": left, "seed": 1}, {st.ATTR + "start": "gone"})
    trained = [(t.number, t.datetime_start) for t in _trials(url, study.name)]
    assert len(trained) == 2
    second = run_cli(run, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "trial " not in second.stdout  # no training line: nothing trained again
    assert [(t.number, t.datetime_start) for t in _trials(url, study.name)] == trained
    evals = _trials(url, eval_study_name(study.name))
    states = [(t.user_attrs["cell_key"], t.user_attrs["seed"], t.state.name) for t in evals]
    assert states.count((left, 1, "FAIL")) == 1 and states.count((left, 1, "COMPLETE")) == 1
    assert sum(s == "COMPLETE" for _, _, s in states) == 4
    # T_eval = T_train = 2, the training's own setting: its training-time val mIoU, exactly
    values = {t.user_attrs["seed"]: t.value for t in _trials(url, study.name)}
    own = {t.user_attrs["seed"]: t.value for t in evals if t.user_attrs["cell_key"] == left and t.value is not None}
    assert own == values and len(own) == 2
    other = {t.user_attrs["seed"]: t.value for t in evals
             if t.user_attrs["cell_key"] == eval_key(cell.key, study.evals[0]) and t.value is not None}
    assert set(other) == {0, 1}
    parents = {t.user_attrs["parent"] for t in evals if t.state.name == "COMPLETE"}
    assert parents == {0, 1}
    report = (tmp_path / "reports" / "evals.md").read_text()
    assert "## Evaluation-time factors: train x eval" in report
    assert "exactly for 2 of 2 checkpoints" in report
    table = json.loads((tmp_path / "reports" / "evals" / "evaluations.json").read_text())
    assert table["reproduction_check"] == {"exact": 2, "compared": 2}
