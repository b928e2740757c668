"""The committed reports reproduce: `studies/ci_repro.yaml` (2 cells x 2 seeds x 2 epochs) is run
again from this checkout and its numbers must equal the committed `reports/ci_repro.*` exactly.

Both the committed report and this test run with PyTorch's portable kernels
(``ATEN_CPU_CAPABILITY=default``, ``ONEDNN_MAX_CPU_ISA=SSE41``) and one thread, so the float
operations do not depend on which x86 vector extensions the machine has."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
# per-trial columns that are pure functions of the training (times and block timings are not)
EXACT = ("cell", "cell_key", "seed", "state", "val_miou_pts", "best_val_miou_pts", "epochs_run",
         "val_miou_pts_epoch_1", "val_miou_pts_epoch_2", "attn_params", "attn_flops", "total_params")
TABLE = ("cell", "mIoU mean ± std", "95% CI", "learned", "Δ vs baseline [corrected CI]", "attn params", "seeds",
         "verdict")


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: row[k] for k in EXACT} for row in csv.DictReader(f)]


def _table(path: Path) -> list[dict]:
    rows = [ln for ln in path.read_text().split("\n## ")[0].splitlines() if ln.startswith("| ")]
    head = [h.strip() for h in rows[0].strip("|").split("|")]
    out = []
    for r in rows[1:]:
        cells = dict(zip(head, (c.strip() for c in r.strip("|").split("|"))))
        out.append({k: cells[k] for k in TABLE})
    return out


@pytest.mark.slow
def test_ci_repro_reproduces_its_committed_report(tmp_path):
    env = {**os.environ, **PORTABLE, "WANDB_MODE": "offline"}
    run = subprocess.run([sys.executable, "-m", "ablate.run", "studies/ci_repro.yaml", "--run-dir",
                          str(tmp_path / "run"), "--reports-dir", str(tmp_path / "reports"), "--no-wandb",
                          "--workers", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    got, want = tmp_path / "reports", REPO / "reports"
    assert _csv(got / "ci_repro.csv") == _csv(want / "ci_repro.csv")
    assert _table(got / "ci_repro.md") == _table(want / "ci_repro.md")
