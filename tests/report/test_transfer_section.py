"""The report's transfer section on transfer_voc's cells with given seed values, against the
committed zoo report table (reports/zoo.csv): tau-b as scipy computes it from the two sides' means."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from ablate.report.transfer import compute, section_lines
from ablate.study.overrides import load_with_overrides
from support import REPO

MECHS = ["none", "nonlocal", "senet", "glore", "a2net", "emanet"]


def _study(*extra):
    return load_with_overrides(REPO / "studies" / "transfer_voc.yaml",
                               [f"factors.mechanism={MECHS}", f"transfer.table={REPO / 'reports' / 'zoo.csv'}",
                                *extra], check_files=False)


def _data(study) -> dict:
    rng = np.random.default_rng(4)
    return {"values": {c.key: {0: 0.3 + 0.05 * i + 0.02 * rng.standard_normal(), 1: 0.3 + 0.05 * i}
                       for i, c in enumerate(study.cells())}}


def _zoo_means() -> dict:
    vals: dict = {}
    with open(REPO / "reports" / "zoo.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["state"] == "complete" and r["cell"]:
                vals.setdefault((r["data.task"], r["mechanism"]), []).append(float(r["val_miou_pts"]))
    return {k: np.mean(v) for k, v in vals.items()}


def test_tau_per_zoo_task_is_scipys_on_the_two_sides_cell_means():
    study = _study()
    data = _data(study)
    out = compute(study, data)
    zoo = _zoo_means()
    here = {c.mechanism: 100 * np.mean(list(data["values"][c.key].values())) for c in study.cells()}
    assert sorted(r["setting"] for r in out["results"]) == [f"data.task={t}" for t in
                                                           ("global_cue", "left_right", "local", "pairing")]
    for r in out["results"]:
        task = r["setting"].split("=")[1]
        names = sorted(MECHS)
        assert r["cells"] == names and r["n"] == len(MECHS)
        want = stats.kendalltau([zoo[(task, m)] for m in names], [here[m] for m in names]).statistic
        assert r["tau"] == pytest.approx(want, abs=1e-12)
        assert r["low"] <= r["high"] and r["defined"] == 2000
    text = "\n".join(section_lines(study, data))
    assert "| data.task=local | 6 |" in text and "reference only: apcnet" in text


def test_where_selects_one_task_and_a_missing_table_is_said():
    study = _study("transfer.where={data.task: pairing}")
    out = compute(study, _data(study))
    assert [r["setting"] for r in out["results"]] == ["(all)"]
    gone = _study("transfer.table=nowhere/zoo.csv")
    assert "Not computed: the reference table `nowhere/zoo.csv` is not here" in "\n".join(section_lines(gone, {}))
    plain = load_with_overrides(REPO / "studies" / "zoo.yaml", [], check_files=False)
    assert section_lines(plain, {}) == []
