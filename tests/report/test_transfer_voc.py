"""studies/transfer_voc.yaml end to end on exported synthetic VOC files: the committed study file,
shrunk by command-line overrides (ResNet-18-D8 from scratch, 32 x 32 crops, 2 iterations, three
mechanisms, CPU), runs through python -m ablate.run and its report ranks the cells against the
committed zoo report (reports/zoo.csv) as scipy would. At this size every cell scores the same, so
tau is undefined on every row (as scipy says too); tests/report/test_transfer_section.py checks the
numbers on cells with different means."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from scipy import stats

from ablate.data import export as ex
from ablate.data.synthetic import SceneConfig
from ablate.config.errors import StudyError
from support import REPO, run_cli

MECHANISMS = ["none", "nonlocal", "senet"]


def _means(path, by_task: bool) -> dict:
    """(task or "", mechanism) -> mean val_miou points over the complete trials of a report table."""
    vals: dict = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["state"] == "complete" and r["cell"]:
                key = (r["data.task"] if by_task else "", r["mechanism"])
                vals.setdefault(key, []).append(float(r["val_miou_pts"]))
    return {k: np.mean(v) for k, v in vals.items()}


def test_transfer_voc_runs_on_exported_voc_files_and_reports_kendalls_tau(tmp_path):
    ex.export(SceneConfig(size=32, train_images=4, val_images=2, seed=0), "voc", tmp_path / "voc")
    overrides = [f"data.data_root={tmp_path / 'voc'}", "data.crop_size=[32, 32]", "data.scale=[32, 32]",
                 "data.num_workers=0", "model.backbone.depth=18", "model.backbone.pretrained=none",
                 "model.head.channels=16", "train.iterations=2", "train.val_interval=2", "train.batch_size=2",
                 "train.threads=1", "trainer.accelerator=cpu", f"factors.mechanism={MECHANISMS}", "seeds=2",
                 "tracking.wandb=false", f"transfer.table={REPO / 'reports' / 'zoo.csv'}", "name=transfer_voc_ci"]
    proc = run_cli(["ablate.run", str(REPO / "studies" / "transfer_voc.yaml"), *overrides, "--workers", "1",
                    "--run-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (tmp_path / "reports" / "transfer_voc_ci.md").read_text()
    assert "## Transfer check: rank agreement with `zoo`" in md
    here = _means(tmp_path / "reports" / "transfer_voc_ci.csv", by_task=False)
    ref = _means(REPO / "reports" / "zoo.csv", by_task=True)
    tasks = sorted({t for t, _ in ref})
    assert tasks == ["global_cue", "left_right", "local", "pairing"]
    for task in tasks:
        row = re.search(rf"^\| data\.task={task} \| 3 \| (\S+) \| \[(\S+), (\S+)\] \|", md, re.M)
        assert row, md
        want = stats.kendalltau([ref[(task, m)] for m in MECHANISMS], [here[("", m)] for m in MECHANISMS]).statistic
        shown = row.group(1)
        assert (shown == "n/a") == bool(np.isnan(want))
        if shown != "n/a":
            assert float(shown) == pytest.approx(want, abs=0.006)
            assert float(row.group(2)) <= float(row.group(3))
    # each shared cell's means on both sides, and the zoo's 26 other mechanisms named as not compared
    assert re.search(r"^\| nonlocal \| [\d.]+ \(2\) \| [\d.]+ \(2\) \|", md, re.M)
    assert "reference only: a2net, apcnet" in md


def test_a_transfer_that_names_no_factor_or_no_study_is_refused():
    from ablate.study.overrides import load_with_overrides

    path = REPO / "studies" / "transfer_voc.yaml"
    assert load_with_overrides(path, [], check_files=False).analysis["transfer"]["table"] == "reports/zoo.csv"
    for override, key in (("transfer.by=K", "transfer.by"), ("transfer.reference=../zoo", "transfer.reference"),
                          ("transfer.level=95", "transfer.level"), ("transfer.tau=1", "transfer.tau")):
        with pytest.raises(StudyError, match=re.escape(key)):
            load_with_overrides(path, [override], check_files=False)
