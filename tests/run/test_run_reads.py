"""A run walks its inputs once: the study file is read once per process (with overrides, in smoke
mode, for --dry-run), and the finish phase reads the study's trials from storage once for the run
record, the report and the failure lines."""
from __future__ import annotations

import collections

import optuna
import pytest

import ablate.config.text as text
import ablate.run.command as command
import ablate.study.load as load

from support import tiny_study


pytestmark = pytest.mark.usefixtures("own_environment")  # tests/run/conftest.py


@pytest.fixture
def reads(monkeypatch):
    """Counts: ``yaml`` (study files parsed) and ``trials`` (whole-study reads of storage)."""
    counts = collections.Counter()
    original_read, original_trials = text.read_study, optuna.Study.get_trials

    def read_study(*a, **k):
        counts["yaml"] += 1
        return original_read(*a, **k)

    def get_trials(self, *a, **k):
        counts["trials"] += 1
        return original_trials(self, *a, **k)

    monkeypatch.setattr(text, "read_study", read_study)
    monkeypatch.setattr(load, "read_study", read_study)
    monkeypatch.setattr(optuna.Study, "get_trials", get_trials)
    return counts


def test_a_run_with_overrides_reads_its_file_once_and_storage_once_at_the_finish(tmp_path, reads):
    path = tiny_study(tmp_path, train={"epochs": 1}, seeds=[0])
    argv = [str(path), "data.val_images=16", "--run-dir", str(tmp_path / "run"), "--reports-dir",
            str(tmp_path / "reports"), "--no-wandb", "--allow-undecidable"]
    assert command.main(argv) == 0
    assert list((tmp_path / "reports").glob("*.md"))
    assert reads == {"yaml": 1, "trials": 1}


def test_a_smoke_run_reads_its_file_once_and_does_not_re_enter_the_runner(tmp_path, reads, monkeypatch):
    entered = []
    real_main = command._main
    monkeypatch.setattr(command, "_main", lambda argv=None: entered.append(argv) or real_main(argv))
    path = tiny_study(tmp_path)
    assert command.main([str(path), "--smoke", "--run-dir", str(tmp_path / "smoke"), "--no-wandb"]) == 0
    assert len(entered) == 1
    assert reads == {"yaml": 1, "trials": 1}  # the finish's failure lines; smoke mode writes no report


def test_a_dry_run_with_overrides_reads_its_file_once(tmp_path, reads, capsys):
    path = tiny_study(tmp_path)
    assert command.main([str(path), "--dry-run", "train.epochs=1"]) == 0
    assert "# effective study" in capsys.readouterr().out
    assert reads == {"yaml": 1}
