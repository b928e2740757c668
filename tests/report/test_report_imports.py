"""A report rewritten from a journal draws its figures, simulates its seeds advice and runs the
doctor's check side by side in forked pieces; the process that writes it imports no torch (the
doctor's piece imports it alone; a study whose trials kept final weights draws its pictures with
torch, as before), and the health section is still the doctor's."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import runpy, sys
sys.argv = ["ablate.report", "study.yaml", "--storage", "run.journal", "--reports-dir", "out", "--reuse-costs"]
try:
    runpy.run_module("ablate.report", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
print("torch imported:", sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:3])
"""


def test_a_report_from_a_journal_imports_no_torch_and_keeps_the_doctors_health_section(tmp_path):
    shutil.copy(ROOT / "studies" / "shared_qk.yaml", tmp_path / "study.yaml")
    shutil.copy(ROOT / "reports" / "storage" / "shared_qk.journal", tmp_path / "run.journal")
    (tmp_path / "out").mkdir()
    shutil.copy(ROOT / "reports" / "shared_qk.json", tmp_path / "out")  # its block costs, reused
    env = {**os.environ, "WANDB_MODE": "offline", "ABLATE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", RUN], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch imported: []" in r.stdout, r.stdout
    md = (tmp_path / "out" / "shared_qk.md").read_text()
    committed = (ROOT / "reports" / "shared_qk.md").read_text()
    section = md.split("## Health pre-flight", 1)[1].split("\n## ", 1)[0]
    assert "Health pre-flight (`python -m ablate.doctor STUDY`" in section
    assert section == committed.split("## Health pre-flight", 1)[1].split("\n## ", 1)[0]
