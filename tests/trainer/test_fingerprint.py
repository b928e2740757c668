"""Provenance fingerprints: what a trial records, the confound check over cells, and the report."""
from __future__ import annotations

import shutil
import subprocess
import sys

import optuna
import torch

from ablate.trainer import fingerprint as fpmod
from ablate.storage import records as st
from ablate.trainer.fingerprint import confound_line, confounds, exempt_fields, fingerprint, shared

from support import REPO, run_cli, tiny_study


def test_fingerprint_fields_types_and_the_real_torch_version():
    fp = fingerprint("16-mixed")
    assert fp["versions"]["torch"] == torch.__version__
    assert fp["versions"]["python"] == sys.version.split()[0]
    assert fp["versions"]["optuna"] == optuna.__version__
    assert isinstance(fp["device"], str) and fp["device"]
    assert fp["threads"] == torch.get_num_threads() and isinstance(fp["threads"], int)
    assert fp["precision"] == "16-mixed"
    assert fp["deterministic"] == {"algorithms": torch.are_deterministic_algorithms_enabled(),
                                   "cudnn_deterministic": torch.backends.cudnn.deterministic,
                                   "cudnn_benchmark": torch.backends.cudnn.benchmark}
    git = fp["git"]
    assert set(git) == {"commit", "dirty"}
    if (REPO / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert git["commit"] == head.stdout.strip() and isinstance(git["dirty"], bool)


def test_fingerprint_without_git_gives_nulls(monkeypatch):
    def no_git(*a, **k):
        raise FileNotFoundError("git")

    fpmod.git_state.cache_clear()
    monkeypatch.setattr(fpmod.subprocess, "run", no_git)
    try:
        assert fingerprint()["git"] == {"commit": None, "dirty": None}
    finally:
        fpmod.git_state.cache_clear()


def test_a_package_that_is_not_installed_is_left_out(monkeypatch):
    monkeypatch.setitem(fpmod.PACKAGES, "no_such_package_here", ("no-such-package-here",))
    fpmod.package_versions.cache_clear()
    try:
        versions = fpmod.package_versions()
        assert "no_such_package_here" not in versions and versions["torch"] == torch.__version__
    finally:
        fpmod.package_versions.cache_clear()


def _fp(torch_version="2.3.0", threads=1, dirty=False):
    return {"git": {"commit": "a" * 40, "dirty": dirty}, "versions": {"torch": torch_version, "python": "3.11.0"},
            "device": "cpu X", "threads": threads, "precision": "32-true",
            "deterministic": {"algorithms": True, "cudnn_deterministic": False, "cudnn_benchmark": False}}


def test_confounds_silent_when_all_cells_agree():
    cells = {"A": [_fp(), _fp()], "B": [_fp()], "C": [_fp(), _fp()]}
    assert confounds(cells) == []
    assert shared([f for fps in cells.values() for f in fps])["versions.torch"] == "2.3.0"


def test_confounds_name_the_field_and_the_cells():
    cells = {"A": [_fp(), _fp()], "B": [_fp()], "C": [_fp("2.2.0"), _fp("2.2.0")]}
    out = confounds(cells)
    assert [c["field"] for c in out] == ["versions.torch"]
    assert out[0]["groups"] == [("2.3.0", ["A", "B"]), ("2.2.0", ["C"])]
    assert confound_line(out[0]) == "Confound check: trials differ in torch version: cells A, B ran 2.3.0, cell C ran 2.2.0."
    # a cell whose own trials disagree differs from the rest too; the shared fields leave the field out
    mixed = {"A": [_fp(dirty=False)], "B": [_fp(dirty=False), _fp(dirty=True)]}
    out = confounds(mixed)
    assert [(c["field"], c["groups"]) for c in out] == [("git.dirty", [("False", ["A"]), ("False and True", ["B"])])]
    assert "git.dirty" not in shared([f for fps in mixed.values() for f in fps])


def test_a_factor_that_varies_a_field_is_not_a_confound():
    cells = {"threads=1": [_fp(threads=1)], "threads=4": [_fp(threads=4)]}
    assert [c["field"] for c in confounds(cells)] == ["threads"]
    assert confounds(cells, exempt_fields(["train.threads"])) == []


def test_report_of_a_journal_without_fingerprints(tmp_path):
    journal = tmp_path / "shared_qk.journal"
    shutil.copy(REPO / "reports/storage/shared_qk.journal", journal)  # the committed one stays untouched
    res = run_cli(["ablate.report", str(REPO / "studies/shared_qk.yaml"), "--storage", str(journal),
                   "--reports-dir", str(tmp_path / "out")], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "out/shared_qk.md").read_text()
    assert "no fingerprint recorded (trials from before fingerprints)" in text
    assert "Confound check" not in text


def test_every_trial_of_a_run_stores_a_fingerprint_and_the_report_prints_it(tmp_path):
    path = tiny_study(tmp_path, name="fp", train={"epochs": 1}, seeds=[0])
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/fp", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    store = st.open_storage(str(tmp_path / "runs/fp/optuna.journal"))
    done = [t for t in optuna.load_study(study_name="fp", storage=store).get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        fp = t.user_attrs["fingerprint"]
        assert fp["versions"]["torch"] == torch.__version__
        assert fp["threads"] == 1  # the study's train.threads, as the trial ran it
        assert fp["precision"] == "32-true" and fp["deterministic"]["algorithms"] is True
    text = (tmp_path / "reports/fp.md").read_text()
    assert f"torch version {torch.__version__}" in text
    assert "Confound check: the cells' fingerprints agree on every field" in text


def test_report_provenance_flags_a_cell_that_ran_another_torch(tmp_path):
    from ablate.report.build import fingerprint_lines
    from ablate.study.load import load_study

    study = load_study(tiny_study(tmp_path))
    on, off = study.cells()
    data = {"fingerprints": {on.key: [_fp(), _fp()], off.key: [_fp("2.2.0"), None]}}
    lines = fingerprint_lines(study, data, [on, off])
    assert any(line.startswith("Fingerprint (shared by all 3") and "python version 3.11.0" in line for line in lines)
    assert any("1 finished trial(s) have no fingerprint" in line for line in lines)
    assert f"Confound check: trials differ in torch version: cell {on.title()} ran 2.3.0, cell {off.title()} ran " \
           "2.2.0." in lines
