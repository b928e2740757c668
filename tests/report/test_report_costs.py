"""Cost columns of a study report: each cell's attention block is timed (forward + backward) and
its peak memory measured at the input it trains on, when the report is written."""
from __future__ import annotations

import json
import re

import optuna

from ablate.storage import records as st
from ablate.report.build import block_costs, block_shape
from ablate.report.command import write_report
from ablate.study.load import load_study

from support import tiny_study


def _fake_finished_study(tmp_path, **overrides):
    """A study whose trials are in storage as if they had run (no training needed here)."""
    study = load_study(tiny_study(tmp_path, factors={"gcn": [True]}, references=[{"mechanism": "none"}],
                                  baseline={}, **overrides))
    url = str(tmp_path / "runs" / "optuna.journal")
    ostudy = st.load_or_create(st.open_storage(url), study.name)
    for i, (cell, seed) in enumerate(study.trials()):
        attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
                 "class_iou": [0.9, 0.5, 0.5, 0.5, 0.5], "wall_s": 2.0, "compute_s": 1.5, "curve": [0.5, 0.6],
                 "attention_params": 0 if cell.mechanism == "none" else 100, "attention_flops": 1000}
        ostudy.add_trial(optuna.trial.create_trial(value=0.6 + 0.01 * i, user_attrs=attrs))
    return study, url


def _rows(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    table = {}
    for ln in lines[1:]:  # the |---| rule does not start with "| "
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(head):
            break  # the next table
        table[cells[1]] = dict(zip(head, cells))
    return table


def test_block_shape_is_the_training_input_of_the_block(tmp_path):
    study = load_study(tiny_study(tmp_path))  # batch 16, width 8, 32 x 32 images, backbone stride 2
    cell = study.cells()[0]
    assert block_shape(cell) == (16, 8, 16, 16)
    assert block_shape(cell, world_size=2) == (8, 8, 16, 16)  # DDP: each device's share of the batch


def _ms(text: str) -> float:
    """The median of a latency cell ('12.34 (IQR 0.56)' or 'noisy: ~12 (IQR 8.1)')."""
    return float(re.search(r"[\d.]+", text).group())


def test_report_has_latency_and_memory_columns(tmp_path):
    study, url = _fake_finished_study(tmp_path)
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    rows = _rows(text)
    glore, none = rows["glore"], rows["none"]
    for row in (glore, none):
        assert "attn fwd+bwd ms" in row and "attn peak MiB" in row
    # a real block takes time and holds activations; no block adds nothing over the input's gradient
    assert _ms(glore["attn fwd+bwd ms"]) > 0 and float(glore["attn peak MiB"]) > 0
    assert float(none["attn peak MiB"]) == 0.0
    assert _ms(none["attn fwd+bwd ms"]) < _ms(glore["attn fwd+bwd ms"])
    # the median with its IQR, or 'noisy: ~m (IQR q)' where q / m > 0.2 (tests/costs/test_costs_cache.py)
    assert re.fullmatch(r"(noisy: ~)?[\d.]+ \(IQR [\d.e+-]+\)", glore["attn fwd+bwd ms"])
    assert "(16, 8, 16, 16)" in text and "torch thread(s)" in text and "measured when this report was written" in text


def test_costs_are_measured_once_per_distinct_block(tmp_path, monkeypatch):
    study = load_study(tiny_study(tmp_path, factors={"gcn": [True, False], "train.lr": [0.001, 0.01]},
                                  baseline={}))
    calls = []
    import ablate.costs.blocks as costs

    real = costs.measure
    monkeypatch.setattr(costs, "measure", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    out = block_costs(study.cells())
    assert len(calls) == 2  # gcn on / off; the learning rate does not change the block
    assert out[study.cells()[0].key] is out[study.cells()[1].key]


def test_two_factor_grid_gets_a_matrix_with_the_best_of_each_column_in_bold(tmp_path):
    """The zoo's shape: mechanism x task. Every entry is that cell's own mean, at its row and column."""
    path = tiny_study(tmp_path, model={"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "glore",
                                      "args": {"K": 4}}, baseline={})
    import yaml

    raw = yaml.safe_load(path.read_text())
    raw["factors"] = {"mechanism": ["glore", "none", "a2net"], "data.task": ["global_cue", "local"]}
    raw["baseline"] = {"mechanism": "none", "data.task": "global_cue"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(path)
    url = str(tmp_path / "runs" / "optuna.journal")
    ostudy = st.load_or_create(st.open_storage(url), study.name)
    means = {}
    for i, cell in enumerate(study.cells()):
        for seed in study.seeds:
            value = 0.3 + 0.1 * i + 0.01 * seed  # a distinct mean per cell
            means.setdefault(cell.key, []).append(value)
            attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
                     "class_iou": [0.9, 0.5, 0.5], "wall_s": 2.0, "compute_s": 1.5, "curve": [value],
                     "attention_params": 7, "attention_flops": 1000}
            ostudy.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    section = text.split("## Matrix: mechanism × data.task")[1].split("## Verdict")[0]
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
            for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| mechanism")}
    assert list(rows) == ["glore", "none", "a2net"]
    cells = study.cells()
    for r, mech in enumerate(["glore", "none", "a2net"]):
        for c in range(2):
            mean = 100 * sum(means[cells[2 * r + c].key]) / len(study.seeds)
            assert rows[mech][1 + c].strip("*").startswith(f"{mean:.1f} [")
    # a2net's cells were written last, with the highest values: best in both columns
    assert rows["a2net"][1].startswith("**") and rows["a2net"][2].startswith("**")
    assert not rows["glore"][1].startswith("**")


def test_a_baseline_naming_one_factor_is_taken_per_group_of_the_other(tmp_path):
    """baseline {mechanism: none} in a mechanism x task grid: each mechanism is compared with none
    on its own task (not with none on the first task), in the table and in the verdict."""
    import yaml

    path = tiny_study(tmp_path, model={"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "glore",
                                      "args": {"K": 4}}, baseline={})
    raw = yaml.safe_load(path.read_text())
    raw["factors"] = {"mechanism": ["glore", "none"], "data.task": ["global_cue", "local"]}
    raw["seeds"] = [0, 1, 2, 3, 4]  # 5 seeds: the exact test of a two-valued comparison can reach p < 0.05
    raw["baseline"] = {"mechanism": "none"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(path)
    cells = {(c.mechanism, c.label_dict["data.task"]): c for c in study.cells()}
    assert study.baseline_for(cells["glore", "local"]).key == cells["none", "local"].key
    assert study.baseline_for(cells["glore", "global_cue"]).key == cells["none", "global_cue"].key
    assert {c.key for c in study.baseline_cells()} == {cells["none", "local"].key, cells["none", "global_cue"].key}
    # none is at 0.40 on global_cue and 0.90 on local; glore at 0.80 on both
    level = {("none", "global_cue"): 0.40, ("none", "local"): 0.90, ("glore", "global_cue"): 0.80,
             ("glore", "local"): 0.80}
    url = str(tmp_path / "runs" / "optuna.journal")
    ostudy = st.load_or_create(st.open_storage(url), study.name)
    for (mech, task), cell in cells.items():
        for seed in study.seeds:
            value = level[mech, task] + 0.01 * seed
            attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
                     "class_iou": [0.9, 0.5, 0.5], "wall_s": 2.0, "compute_s": 1.5, "curve": [value],
                     "attention_params": 7, "attention_flops": 1000}
            ostudy.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    main_table = text.split("## Matrix")[0]
    rows = [ln for ln in main_table.splitlines() if ln.startswith("| ")]
    col = [h.strip() for h in rows[0].split("|")].index("Δ vs baseline [corrected CI]")
    delta = {ln.split("|")[1].strip(): ln.split("|")[col].strip() for ln in rows if ln.startswith("| mechanism=")}
    assert delta["mechanism=glore, data.task=global_cue"].startswith("+40.0 [")
    assert delta["mechanism=glore, data.task=local"].startswith("-10.0 [")
    assert delta["mechanism=none, data.task=local"] == "baseline"
    assert delta["mechanism=none, data.task=global_cue"] == "baseline"
    verdict = text.split("## Verdict")[1].split("## ")[0]
    # global_cue: none at the floor, glore 40 points up: two-valued, the exact permutation test (2/252);
    # local: nobody 10 points above none: unclassified, the paired t over the shared seeds; one family a task
    assert "- **data.task=global_cue** (none: 42.0): better: glore +40.0." in verdict
    assert "- **data.task=local** (none: 92.0): worse: glore -10.0." in verdict
    assert "Tests used: exact permutation (1); paired t (1)" in text
    assert "question, task=global_cue: m = 1" in text and "question, task=local: m = 1" in text
    assert "synthetic tasks of the `data.task` factor (global_cue, local)" in text


def test_a_resumed_run_counts_only_its_own_trials_in_the_provenance(tmp_path):
    """The run line of a resumed study: the last invocation's trials, wall time and compute, then
    the whole study's compute (earlier invocations' trials are not charged to the last one)."""
    import time

    study, url = _fake_finished_study(tmp_path)  # 2 trials of compute_s 1.5 each, finished earlier
    time.sleep(0.05)
    started = time.time()
    ostudy = optuna.load_study(study_name=study.name, storage=st.open_storage(url))
    cell, seed = study.trials()[0]
    attrs = {"cell_key": cell.key, "seed": seed + 7, "config": json.dumps(study.trial_config(cell, seed + 7)),
             "class_iou": [0.9, 0.5, 0.5, 0.5, 0.5], "wall_s": 5.0, "compute_s": 4.0, "curve": [0.6],
             "attention_params": 100, "attention_flops": 1000}
    ostudy.add_trial(optuna.trial.create_trial(value=0.6, user_attrs=attrs))
    text = write_report(study, url, str(tmp_path / "rep"), run_info={
        "wall_s": 8.0, "started": started, "workers": 1, "command": "python -m ablate.run x.yaml"}).read_text()
    n = len(study.trials())
    assert (f"ran 1 of the {n + 1} finished trials in 8 s wall time, 4 s of trial compute, harness overhead "
            f"50.0% of worker time; all {n + 1} trials took {4 + 1.5 * n:.0f} s of trial compute.") in text
    # a run that finished every trial itself keeps the one-line form
    text = write_report(study, url, str(tmp_path / "rep"), run_info={
        "wall_s": 10.0, "started": 0.0, "workers": 1, "command": "python -m ablate.run x.yaml"}).read_text()
    assert f"study wall time 10 s; sum of trial compute {4 + 1.5 * n:.0f} s;" in text
