"""The report's verdicts (issue 13, items 2-4): paired Δ over shared seeds (Welch otherwise), all
comparisons of a study corrected together, better / worse / equivalent / inconclusive with the
seeds that would decide, intervals too wide to mean anything left out, and budget-limited cells.

The numbers are checked against scipy and a hand-computed Holm step-down; no training runs: the
trials are written into storage (or into the report's data dict) by hand."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import optuna
import pytest
import yaml
from scipy import stats as sst

from ablate.storage import records as st
from ablate.report.build import judge, render
from ablate.report.command import write_report
from ablate.stats.power import Normal, seeds_for_power
from ablate.study.load import load_study

from support import tiny_study

SEEDS = [0, 1, 2, 3, 4]
BASE = [0.50, 0.52, 0.48, 0.51, 0.49]
# per-seed differences to the baseline: a clear gain, a null effect, and one whose raw p (about
# 0.047) is below 0.05 but whose Holm-adjusted p over the study's three comparisons is not
DIFFS = {0.002: [0.050, 0.052, 0.049, 0.051, 0.048],
         0.003: [0.001, -0.001, 0.0005, 0.0, -0.0005],
         0.004: [0.020, 0.005, 0.015, 0.0, 0.010]}


def _study(tmp_path):
    path = tiny_study(tmp_path, seeds=SEEDS)
    raw = yaml.safe_load(path.read_text())
    raw["factors"], raw["baseline"] = {"train.lr": [0.001, 0.002, 0.003, 0.004]}, {"train.lr": 0.001}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_study(path)


def _data(values: dict, curves: dict | None = None) -> dict:
    """The report's data dict for finished trials only (what ``collect`` returns)."""
    rec = {"class_iou": [0.9, 0.5], "wall_s": 2.0, "compute_s": 1.5, "attention_params": 7,
           "attention_flops": 1000}
    return {"values": values, "records": {k: [rec] * len(v) for k, v in values.items()},
            "curves": curves or {}, "failed": [], "retry": [], "pruned": [], "running": 0, "pending": 0,
            "epochs": {"run": 0, "planned": 0}, "finished": [], "run": {}}


def _grid(study) -> tuple[dict, dict, list]:
    cells = {c.label_dict["train.lr"]: c for c in study.cells()}
    values = {cells[0.001].key: dict(zip(SEEDS, BASE))}
    for lr, d in DIFFS.items():
        values[cells[lr].key] = {s: b + x for s, b, x in zip(SEEDS, BASE, d)}
    pairs = [(cells[lr], cells[0.001]) for lr in DIFFS]
    return cells, values, pairs


def _table(text: str) -> dict:
    """The main table's rows by cell title."""
    rows = [ln for ln in text.split("\n## ")[0].splitlines() if ln.startswith("| ")]
    head = [h.strip() for h in rows[0].strip("|").split("|")]
    return {r.split("|")[1].strip(): dict(zip(head, (c.strip() for c in r.strip("|").split("|")))) for r in rows[1:]}


def test_paired_delta_interval_is_scipys_ttest_rel_at_the_corrected_level(tmp_path):
    study = _study(tmp_path)
    cells, values, pairs = _grid(study)
    comps, info = judge(study, _data(values), pairs)
    assert info["m"] == 3 and info["level"] == pytest.approx(1 - 0.05 / 3)
    for cell, base in pairs:
        a, b = [values[cell.key][s] for s in SEEDS], [values[base.key][s] for s in SEEDS]
        ref = sst.ttest_rel(a, b).confidence_interval(confidence_level=info["level"])
        x = comps[cell.key]
        assert x["d"].method == "paired"
        assert x["interval"] == pytest.approx((ref.low, ref.high), abs=1e-12)
    text = render(study, _data(values), "test")
    row = _table(text)[cells[0.002].title()]
    lo, hi = sst.ttest_rel([values[cells[0.002].key][s] for s in SEEDS], BASE).confidence_interval(1 - 0.05 / 3)
    assert row["Δ vs baseline [corrected CI]"] == f"+5.0 [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    assert "Tests used: paired t (3)" in text and "question: m = 3, Δ intervals at 98.33%" in text


def test_holm_is_applied_over_the_studys_comparisons(tmp_path):
    study = _study(tmp_path)
    cells, values, pairs = _grid(study)
    raw = [sst.ttest_rel([values[c.key][s] for s in SEEDS], BASE).pvalue for c, _ in pairs]
    order = np.argsort(raw)  # Holm by hand: (m - j + 1) p_(j), running maximum, at most 1
    holm, running = [0.0] * 3, 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (3 - j) * raw[i]))
        holm[i] = running
    comps, _ = judge(study, _data(values), pairs)
    for (cell, _), p in zip(pairs, holm):
        assert comps[cell.key]["p_diff"] == pytest.approx(p, rel=1e-9)
    weak = comps[cells[0.004].key]
    assert raw[2] < 0.05 < holm[2]  # the case is built for this
    assert weak["decision"].label == "inconclusive"
    # without a correction the same data call it better; Bonferroni multiplies every p by 3
    loose, _ = judge(replace(study, correction="none"), _data(values), pairs)
    assert loose[cells[0.004].key]["decision"].label == "better"
    assert loose[cells[0.004].key]["p_diff"] == pytest.approx(raw[2], rel=1e-9)
    bonf, info = judge(replace(study, correction="bonferroni"), _data(values), pairs)
    assert [bonf[c.key]["p_diff"] for c, _ in pairs] == pytest.approx([min(1.0, 3 * p) for p in raw], rel=1e-9)
    text = render(study, _data(values), "test")
    assert "corrected separately by Holm at level 0.05: question: m = 3, Δ intervals at 98.33%" in text
    assert "equivalent\": the corrected TOST puts Δ inside ±1 mIoU points" in text


def test_better_equivalent_and_inconclusive_with_the_seeds_that_would_decide(tmp_path):
    study = _study(tmp_path)
    cells, values, pairs = _grid(study)
    comps, _ = judge(study, _data(values), pairs)
    assert comps[cells[0.002].key]["decision"].label == "better"
    assert comps[cells[0.003].key]["decision"].label == "equivalent"
    weak = comps[cells[0.004].key]["decision"]
    # the advice: the seeds at which the paired t reaches 80% power at the observed Δ and spread (simulated)
    d = np.asarray(DIFFS[0.004])
    model = Normal(float(d.mean()), float(weak.d.sd) / np.sqrt(2))  # Normal.sd: one cell's spread
    want = max(seeds_for_power("paired_t", model, 0.05 / 3, target=0.8, max_seeds=50, reps=1000), len(SEEDS) + 1)
    assert weak.seeds == want
    rows = _table(render(study, _data(values), "test"))
    assert rows[cells[0.002].title()]["verdict"] == "**better**"
    assert rows[cells[0.003].title()]["verdict"] == "equivalent within ±1"
    assert rows[cells[0.004].title()]["verdict"] == f"inconclusive ({want} seeds a cell would decide: " \
        f"{want - len(SEEDS)} more)"
    # a narrower margin takes the equivalence away from the null effect (its interval is ±0.2 points)
    strict, _ = judge(replace(study, margin=0.05), _data(values), pairs)
    assert strict[cells[0.003].key]["decision"].label == "inconclusive"


def test_unshared_seeds_use_welch_and_wide_intervals_are_clipped_and_marked(tmp_path):
    study = _study(tmp_path)
    cells, values, pairs = _grid(study)
    values[cells[0.002].key] = {10: 0.60, 11: 0.62, 12: 0.61}  # seeds the baseline does not have
    values[cells[0.003].key] = {0: 0.10, 1: 0.95}  # two seeds, 85 points apart
    comps, info = judge(study, _data(values), pairs)
    welch = comps[cells[0.002].key]
    ref = sst.ttest_ind([0.60, 0.62, 0.61], BASE, equal_var=False).confidence_interval(info["level"])
    assert welch["d"].method == "welch" and welch["interval"] == pytest.approx((ref.low, ref.high), abs=1e-12)
    wide = comps[cells[0.003].key]
    assert wide["interval"] == (-1.0, 1.0) and wide["decision"].clipped and wide["decision"].label == "inconclusive"
    text = render(study, _data(values), "test")
    rows = _table(text)
    assert rows[cells[0.003].title()]["Δ vs baseline [corrected CI]"].endswith("[-100.0, +100.0]†")
    assert rows[cells[0.003].title()]["verdict"].startswith("inconclusive")
    assert "Welch t (1)" in text


def _rising_study(tmp_path):
    """gcn=on flat at 0.6 in every seed; gcn=off still climbing 0.05 an epoch when it stops, each
    seed a little lower (0.500 ... 0.452): with learned_above 47 points, seeds 0-2 cross in the last
    epochs and seeds 3-4 have not yet: worse, but only at this budget. Trials written to a journal,
    so the curves come from storage."""
    path = tiny_study(tmp_path, seeds=[0, 1, 2, 3, 4])
    raw = yaml.safe_load(path.read_text())
    raw["learned_above"] = 47
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(path)
    url = str(tmp_path / "runs" / "optuna.journal")
    ostudy = st.load_or_create(st.open_storage(url), study.name)
    for cell, seed in study.trials():
        if cell.label_dict["gcn"]:
            curve = [0.3, 0.5, 0.58, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6 + 0.001 * seed]
        else:
            curve = [0.1 + 0.05 * e - 0.012 * seed for e in range(9)]
        attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
                 "class_iou": [0.9, 0.5], "wall_s": 2.0, "compute_s": 1.5, "curve": curve,
                 "attention_params": 7, "attention_flops": 1000}
        ostudy.add_trial(optuna.trial.create_trial(value=curve[-1], user_attrs=attrs))
    return study, url


def test_a_cell_still_learning_is_budget_limited_and_worse_only_at_this_budget(tmp_path):
    study, url = _rising_study(tmp_path)
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    rows = _table(text)
    assert rows["gcn=off"]["mIoU mean ± std"].endswith("(budget-limited)")
    assert "budget-limited" not in rows["gcn=on"]["mIoU mean ± std"]
    assert rows["gcn=off"]["learned"].startswith("3/5 [") and rows["gcn=on"]["learned"].startswith("5/5 [")
    assert rows["gcn=off"]["verdict"] == "**worse at this budget (still improving)**"
    verdict = text.split("## Verdict")[1].split("## ")[0]
    # every gcn=off value lies below every gcn=on value: the exact permutation p is 2/C(10, 5)
    assert "- gcn=off vs gcn=on: Δ = -12.6 points [" in verdict and "two-valued outcomes: exact permutation" in verdict
    assert f"p = {2 / 252:.2g}" in verdict
    assert "**worse at this budget (still improving)**. Budget-limited (seeds still learning at the last epochs): " \
        "gcn=off." in verdict
    assert "Time to learn: learned by epoch 9 in 3/5 seeds (median epoch 9) vs learned by epoch 9 in 5/5 seeds" \
        in verdict
