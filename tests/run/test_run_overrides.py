"""The runner's hooks for command-line overrides and smoke mode (ablate/study/overrides.py and
ablate/run/smoke.py are H5's): load_study(raw=...), Study.overrides in trial configs, KEY=VALUE
arguments anywhere on the command line, --dry-run showing the effective study, --smoke handing
over to smoke mode, and --workers children loading the same overridden study."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from ablate.run import command as R
from ablate.run.spawn import spawn_workers
from ablate.config.errors import StudyError
from ablate.study.load import load_study

from support import tiny_study


def test_load_study_validates_a_mapping_as_the_file(tmp_path):
    path = tiny_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    assert load_study(path, raw=raw).trials() == load_study(path).trials()
    raw["train"]["epochs"] = 0
    with pytest.raises(StudyError) as e:
        load_study(path, raw=raw)  # the file itself is valid: the mapping is what is checked
    assert e.value.where == str(path) and e.value.key == "train.epochs"
    assert load_study(path, raw={**raw, "train": {**raw["train"], "epochs": 3}}).train.epochs == 3


def test_trial_config_names_the_overrides_only_when_there_are_some(tmp_path):
    import dataclasses

    study = load_study(tiny_study(tmp_path))
    cell, seed = study.trials()[0]
    assert "overrides" not in study.trial_config(cell, seed)
    changed = dataclasses.replace(study, overrides=("train.epochs=3",))
    assert changed.trial_config(cell, seed)["overrides"] == ["train.epochs=3"]


def test_overrides_anywhere_on_the_command_line(tmp_path, capsys):
    path = tiny_study(tmp_path)
    args = R.parse_args([str(path), "--dry-run", "seeds=3", "--workers", "2", "train.epochs=5"])
    assert args.overrides == ["seeds=3", "train.epochs=5"] and args.dry_run and args.workers == 2
    assert R.main([str(path), "seeds=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cells x 3 seeds = 6 trials" in out and "seeds: 0, 1, 2" in out
    assert "seeds: 3" in out.split("study ")[0]  # the effective study is printed before the plan
    assert R.main([str(path), "--dry-run"]) == 0
    assert "2 cells x 2 seeds = 4 trials" in capsys.readouterr().out


def test_a_bad_override_exits_2_naming_it(tmp_path, capsys):
    path = tiny_study(tmp_path)
    with pytest.raises(SystemExit) as e:
        R.main([str(path), "train.epochs=0", "--dry-run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "Traceback" not in err


def test_smoke_dry_run_hands_over_to_smoke_mode(tmp_path, capsys):
    path = tiny_study(tmp_path)
    assert R.main([str(path), "--smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-smoke" in out and "x 1 seeds" in out


def test_workers_get_the_overrides(tmp_path, monkeypatch):
    seen = []

    class FakePopen:
        def __init__(self, cmd, env=None):
            seen.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    args = R.parse_args(["s.yaml", "train.epochs=3", "--workers", "2", "seeds=2"])
    assert spawn_workers(args, "x.journal", Path("runs/x")) == [0, 0]
    assert len(seen) == 2
    for cmd in seen:
        i = cmd.index("s.yaml")
        assert cmd[i + 1:i + 3] == ["train.epochs=3", "seeds=2"] and "--worker" in cmd
