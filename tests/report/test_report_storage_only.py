"""The report reads storage alone: a study on a real dataset reports on a machine without the
dataset's folder (the committed Cityscapes real-path run), with the numbers its journal holds."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_report_of_a_real_data_study_needs_no_dataset_folder(tmp_path):
    shutil.copy(ROOT / "studies" / "real_path_cityscapes.yaml", tmp_path / "study.yaml")
    shutil.copy(ROOT / "reports" / "storage" / "real_path_cityscapes.journal", tmp_path / "run.journal")
    assert not (tmp_path / "data").exists()
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "ablate.report", "study.yaml", "--storage", "run.journal",
                        "--reports-dir", "out"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "real_path_cityscapes.csv")))
    assert len(rows) == 6 and {r["state"] for r in rows} == {"complete"}
    # the journal's own numbers: every finished trial's final value is in the table
    md = (tmp_path / "out" / "real_path_cityscapes.md").read_text()
    assert "3/3" in md and "mechanism=nonlocal" in md


def test_the_run_still_checks_the_dataset_folder(tmp_path):
    shutil.copy(ROOT / "studies" / "real_path_cityscapes.yaml", tmp_path / "study.yaml")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "ablate.run", "study.yaml", "--dry-run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "data_root" in r.stderr and "Traceback" not in r.stderr
