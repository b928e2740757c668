"""Study files: a malformed file stops before anything runs, with one paragraph naming the file
and the key at fault (exit code 2, no traceback); a valid file expands into cells x seeds with
stable cell keys.

The command-line cases go through the real CLI (``python -m ablate.run``) in subprocesses. Each
start imports torch (about 2 s), so the module runs them all once, concurrently, in a fixture, and
the parametrized tests below only read the results.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from ablate.attention import MECHANISMS
from ablate.data.synthetic import TASKS
from ablate.config.errors import StudyError, exit_with
from ablate.study.load import load_study

from support import REPO, base_study

GCN_EFFECT = REPO / "studies" / "gcn_effect.yaml"
STUDY_FILES = sorted((REPO / "studies").glob("*.yaml"))




# --------------------------------------------------------------------------------------------
# one valid base study; every malformed case changes one thing in it
# --------------------------------------------------------------------------------------------

def _base() -> dict:
    return base_study()


def _write(tmp_path: Path, name: str = "study", **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(_with(**changes))
    return path


def _with(**changes) -> str:
    """The base study with ``changes`` applied; a key like ``train__epochs`` sets a nested key and
    ``None`` deletes it."""
    s = _base()
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        d = s
        for p in parents:
            d = d[p]
        if value is None:
            d.pop(leaf, None)
        else:
            d[leaf] = value
    return yaml.safe_dump(s, sort_keys=False)


def _nonlocal_with_gcn_factor() -> str:
    s = _base()
    s["model"] = {"mechanism": "nonlocal"}
    s.pop("baseline")
    return yaml.safe_dump(s, sort_keys=False)


def _nonlocal_with_gcn_arg() -> str:
    s = _base()
    s["model"] = {"mechanism": "nonlocal", "args": {"gcn": True}}
    s["factors"] = {"shared_qk": [True, False]}
    s.pop("baseline")
    return yaml.safe_dump(s, sort_keys=False)


NONLOCAL_FACTORS = list(MECHANISMS["nonlocal"].defaults)
ALL_MECHANISMS = sorted(MECHANISMS)

# id -> (file text or None for "no file", expected key ('' for file-level), substrings the message needs)
MALFORMED = {
    "unknown_top_level_key": (_with(epochz=3), "epochz", ["unknown key", "train", "factors"]),
    "unknown_train_key": (_with(train__epoch=3), "train.epoch", ["unknown key", "epochs", "batch_size"]),
    "factor_mechanism_lacks": (_nonlocal_with_gcn_factor(), "factors.gcn", ["'nonlocal'", "'gcn'", *NONLOCAL_FACTORS]),
    "wrong_type_epochs": (_with(train__epochs="ten"), "train.epochs", ["'ten'", "integer"]),
    "zero_epochs": (_with(train__epochs=0), "train.epochs", ["out of range"]),
    "zero_seeds": (_with(seeds=0), "seeds", [">= 1"]),
    "negative_lr": (_with(train__lr=-0.001), "train.lr", ["out of range", "> 0"]),
    "unknown_mechanism": (_with(model__mechanism="glorre"), "model.mechanism", ["'glorre'", *ALL_MECHANISMS]),
    "baseline_matches_no_cell": (_with(baseline={"K": 8}), "baseline", ["matches no cell", "gcn=on", "gcn=off"]),
    "invalid_yaml": ("model: {mechanism: glore\nfactors: [on, off\nseeds: 2\n", "", ["YAML", "line"]),
    "missing_file": (None, "", ["does not exist"]),
    "duplicate_factor_value": (_with(factors={"gcn": [True, True]}), "factors.gcn", ["repeats"]),
    "unknown_data_task": (_with(data__task="nope"), "data.task", ["'nope'", *TASKS]),
}


def _cli(path: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ablate.run", str(path), "--run-dir", str(cwd / "runs"),
                           "--reports-dir", str(cwd / "rep"), *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Run every CLI case once, concurrently; returns id -> (cwd, path, CompletedProcess, files before)."""
    jobs = {}
    for case, (text, _, _) in MALFORMED.items():
        cwd = tmp_path_factory.mktemp(case)
        path = cwd / "study.yaml"
        if text is not None:
            path.write_text(text)
        jobs[case] = (cwd, path, ())
    for case, extra in {"dry_run": ("--dry-run",), "print_config": ("--print-config", "1")}.items():
        jobs[case] = (tmp_path_factory.mktemp(case), GCN_EFFECT, extra)
    before = {case: sorted(p.name for p in cwd.iterdir()) for case, (cwd, _, _) in jobs.items()}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {case: pool.submit(_cli, path, cwd, *extra) for case, (cwd, path, extra) in jobs.items()}
        return {case: (jobs[case][0], jobs[case][1], f.result(), before[case]) for case, f in futures.items()}


def _flat(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------
# malformed study files through the CLI
# --------------------------------------------------------------------------------------------

def test_base_study_is_valid(tmp_path):
    """The control: without its one change, every malformed case is a valid study."""
    path = tmp_path / "base.yaml"
    path.write_text(_with())
    study = load_study(path)
    assert len(study.trials()) == 4


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_study_exits_2_with_one_paragraph(cli, case):
    cwd, path, proc, before = cli[case]
    _, key, needles = MALFORMED[case]
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert proc.stdout.strip() == ""
    body = err.strip()
    assert body, "no message on stderr"
    assert "\n\n" not in body, f"more than one paragraph:\n{err}"
    flat = _flat(body)
    assert flat.startswith("error in ") and flat.endswith("Nothing was run."), flat
    # names the file and the key at fault
    if key:
        assert f"error in {path}, key '{key}':" in flat, flat
    else:
        assert f"error in {path}:" in flat, flat
    for needle in needles:
        assert needle in flat, f"{needle!r} missing from: {flat}"
    # nothing was run: no run folder, no report folder, no default runs/ under the cwd
    assert not (cwd / "runs").exists()
    assert not (cwd / "rep").exists()
    assert sorted(p.name for p in cwd.iterdir()) == before


def test_arg_the_mechanism_lacks_in_process(tmp_path, capsys):
    """Same contract through ``ablate.run.main`` in this process (a key under model.args)."""
    from ablate.run.command import main

    path = tmp_path / "study.yaml"
    path.write_text(_nonlocal_with_gcn_arg())
    with pytest.raises(SystemExit) as e:
        main([str(path), "--run-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "rep")])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    flat = _flat(err)
    assert out == "" and "Traceback" not in err and "\n\n" not in err.strip()
    assert f"error in {path}, key 'model.args.gcn':" in flat
    for needle in ["'nonlocal'", "'gcn'", *NONLOCAL_FACTORS]:
        assert needle in flat
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_dry_run_prints_plan_and_creates_nothing(cli):
    cwd, path, proc, before = cli["dry_run"]
    assert proc.returncode == 0, proc.stderr
    study = load_study(path)
    cells, trials = study.cells(), study.trials()
    seq = study.sequential  # gcn_effect adds seeds where they decide: its plan is the start, up to the max
    assert f"{len(cells)} cells x {seq['start']} seeds to start = {len(trials)} trials, up to {seq['max']} seeds " \
        f"a cell = {len(cells) * seq['max']} trials" in proc.stdout
    assert len(trials) == len(cells) * seq["start"]
    # every cell is listed, with the key this process computes: keys are stable across processes
    printed = re.findall(r"key=([0-9a-f]{12})", proc.stdout)
    assert printed == [c.key for c in cells]
    baseline_lines = [ln for ln in proc.stdout.splitlines() if "<- baseline" in ln]
    assert len(baseline_lines) == 1 and study.baseline_cell().key in baseline_lines[0]
    assert not (cwd / "runs").exists() and not (cwd / "rep").exists()
    assert sorted(p.name for p in cwd.iterdir()) == before


def test_print_config_is_the_resolved_trial_as_json(cli):
    cwd, path, proc, before = cli["print_config"]
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    for key in ("study", "cell", "seed", "mechanism", "args", "data", "train"):
        assert key in config, key
    study = load_study(path)
    cell, seed = study.trials()[0]
    expected = json.loads(json.dumps(study.trial_config(cell, seed)))
    assert {k: v for k, v in config.items() if k != "trial"} == expected
    assert config["trial"] == 1
    assert not (cwd / "runs").exists()
    assert sorted(p.name for p in cwd.iterdir()) == before


# --------------------------------------------------------------------------------------------
# the studies shipped in studies/
# --------------------------------------------------------------------------------------------

def _needs_cluster_files(path: Path) -> bool:
    """A real-data study (its dataset and weights live on the cluster, not in this checkout)."""
    return (yaml.safe_load(path.read_text()).get("data") or {}).get("name", "synthetic") != "synthetic"


@pytest.mark.parametrize("path", STUDY_FILES, ids=[p.stem for p in STUDY_FILES])
def test_shipped_study_validates(path):
    # real-data studies: the schema alone (their data_root and weights are not on this machine)
    study = load_study(path, check_files=not _needs_cluster_files(path))
    cells = study.cells() or ([study.baseline_point()] if study.search else [])  # a search: its baseline
    assert cells and study.seeds
    if not study.search:
        # a sequential study plans its start seeds; the runner adds the rest as its verdicts ask
        planned = study.sequential["start"] if study.sequential else len(study.seeds)
        assert len(study.trials()) == len(cells) * planned
        assert study.baseline_cell() is not None
    # every resolved cell builds its block at the width it gets in training and runs on a
    # feature map (real data: a small one; the crop's full map would only cost time)
    from dataclasses import asdict

    from ablate.models.segmenter import feature_geometry

    torch.manual_seed(0)
    for c in cells:
        channels, stride = feature_geometry(asdict(c.backbone), asdict(study.head))
        side = 8 if hasattr(c.data, "crop_size") else c.data.size // stride
        block = MECHANISMS[c.mechanism].build(channels, **dict(c.args))
        x = torch.randn(1, channels, side, side)
        with torch.no_grad():
            assert block.eval()(x).shape == x.shape


def test_real_data_example_studies_are_shipped():
    """The cluster examples live beside the synthetic studies and say what they cost."""
    real = [p for p in STUDY_FILES if _needs_cluster_files(p)]
    assert {p.stem for p in real} >= {"voc_zoo", "cityscapes_gcn_effect"}
    for p in real:
        text = p.read_text()
        assert "question:" in text and "compute" in text.lower(), p
        # without the data, the full check (what a run does) stops at the data root, exit-2 style
        with pytest.raises(StudyError) as e:
            load_study(p)
        assert e.value.key == "data.data_root" and "expected the standard layout" in e.value.message


def test_shipped_studies_exist():
    assert GCN_EFFECT in STUDY_FILES


# --------------------------------------------------------------------------------------------
# expansion
# --------------------------------------------------------------------------------------------

def test_trials_are_cells_times_seeds(tmp_path):
    path = _write(tmp_path, factors={"gcn": [True, False], "K": [2, 4, 8]}, seeds=[3, 5],
                      references=[{"mechanism": "none"}, {"mechanism": "nonlocal", "shared_qk": True}],
                      baseline={"gcn": True, "K": 4})
    study = load_study(path)
    cells = study.cells()
    assert len(cells) == 2 * 3 + 2
    trials = study.trials()
    assert len(trials) == len(cells) * len(study.seeds) == 16
    assert {(c.key, s) for c, s in trials} == {(c.key, s) for c in cells for s in (3, 5)}
    assert len({c.key for c in cells}) == len(cells)
    assert {tuple(sorted(c.label_dict.items())) for c in cells[:6]} == \
        {(("K", k), ("gcn", g)) for g in (True, False) for k in (2, 4, 8)}


def test_cells_and_baselines_are_resolved_once_at_load(tmp_path, monkeypatch):
    """``cells()`` hands out the cells load_study resolved (the same objects every call, nothing
    re-validated), and each cell's baseline was found at load as the search over the cells finds it."""
    import ablate.study.cells as sc
    from ablate.study.records import find_baseline

    path = _write(tmp_path, factors={"gcn": [True, False], "K": [2, 4]},
                  references=[{"mechanism": "none"}], baseline={"gcn": False})
    study = load_study(path)
    first = study.cells()
    monkeypatch.setattr(sc, "build_cell", lambda *a: pytest.fail("a cell was resolved again"))
    again = study.cells()
    assert len(first) == 5 and all(a is b for a, b in zip(first, again))
    assert [c for c, _ in study.trials()][::len(study.seeds)] == first
    for c in first:
        assert study.baseline_for(c) == find_baseline(study, c, first)
    assert [study.baseline_for(c).label_dict for c in first[:4]] == [{"gcn": False, "K": 2}, {"gcn": False, "K": 4}] * 2
    assert study.baseline_for(first[4]).label_dict == {"gcn": False, "K": 2}  # the reference: the first match
    assert [c.label_dict for c in study.baseline_cells()] == [{"gcn": False, "K": 2}, {"gcn": False, "K": 4}]


def test_seed_count_expands_to_range(tmp_path):
    study = load_study(_write(tmp_path, seeds=4))
    assert study.seeds == (0, 1, 2, 3)
    assert len(study.trials()) == len(study.cells()) * 4


def test_cell_keys_are_stable_across_loads(tmp_path):
    a = [c.key for c in load_study(GCN_EFFECT).cells()]
    b = [c.key for c in load_study(GCN_EFFECT).cells()]
    assert a == b
    # the same content under another file name gives the same keys
    copy = tmp_path / "elsewhere.yaml"
    copy.write_text(GCN_EFFECT.read_text())
    assert [c.key for c in load_study(copy).cells()] == a


@pytest.mark.parametrize("change", [{"epochs": 3}, {"lr": 0.001}, {"batch_size": 8}, {"weight_decay": 0.0}])
def test_cell_keys_change_with_a_training_setting(tmp_path, change):
    a = load_study(_write(tmp_path, "a")).cells()
    b = load_study(_write(tmp_path, "b", train={**_base()["train"], **change})).cells()
    assert [c.label for c in a] == [c.label for c in b]
    for ca, cb in zip(a, b):
        assert ca.key != cb.key


def test_cell_keys_differ_along_a_train_factor(tmp_path):
    study = load_study(_write(tmp_path, factors={"train.lr": [0.001, 0.01]}, baseline=None))
    cells = study.cells()
    assert [c.train.lr for c in cells] == [0.001, 0.01]
    assert cells[0].key != cells[1].key


def test_reference_switching_mechanism_drops_args_it_lacks():
    study = load_study(GCN_EFFECT)
    assert "K" in study.args
    by_mech = {}
    for c in study.cells():
        by_mech.setdefault(c.mechanism, []).append(c)
    for c in by_mech["glore"]:
        assert dict(c.args)["K"] == study.args["K"]
    assert dict(by_mech["nonlocal"][0].args) == MECHANISMS["nonlocal"].defaults
    assert dict(by_mech["none"][0].args) == {}


def test_reference_switching_mechanism_keeps_args_it_has(tmp_path):
    path = _write(tmp_path, model={"mechanism": "nonlocal", "args": {"reduction": 4, "scale": True}},
                      factors={"shared_qk": [True, False]}, baseline=None,
                      references=[{"mechanism": "nonlocal_dot"}, {"mechanism": "glore"}])
    cells = load_study(path).cells()
    dot = next(c for c in cells if c.mechanism == "nonlocal_dot")
    assert dict(dot.args)["reduction"] == 4 and dict(dot.args)["scale"] is True
    assert dict(dot.args)["normalization"] == "mean"
    glore = next(c for c in cells if c.mechanism == "glore")
    assert dict(glore.args) == MECHANISMS["glore"].defaults


# --------------------------------------------------------------------------------------------
# settings added with the real datasets: defaults leave old keys alone
# --------------------------------------------------------------------------------------------

# gcn_effect's keys (from `python -m ablate.run studies/gcn_effect.yaml --dry-run`): spelling out
# train.optimizer/schedule/iterations, model.head, trainer.precision, margin and correction at their
# defaults must keep them, so a resumed study finds its finished trials. The glore and nonlocal
# keys changed on purpose when their presets followed the official code (issue 11); none's did not.
GCN_EFFECT_KEYS = ["f71a7e7a52e8", "aef8242a7dcb", "460086aa4f51", "796a28f129be", "69e2c2cc0b62"]  # + the GCN control


def test_new_settings_at_their_defaults_keep_the_old_cell_keys(tmp_path):
    assert [c.key for c in load_study(GCN_EFFECT).cells()] == GCN_EFFECT_KEYS
    raw = yaml.safe_load(GCN_EFFECT.read_text())
    raw["train"].update(optimizer="adamw", schedule="onecycle", iterations=0, val_interval=0)
    raw["model"]["head"] = {"channels": 0, "aux_weight": 0.0}
    raw["trainer"] = {"precision": 32}
    raw["margin"], raw["correction"] = 1.0, "holm"
    spelled = tmp_path / "gcn_effect.yaml"
    spelled.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert [c.key for c in load_study(spelled).cells()] == GCN_EFFECT_KEYS


@pytest.mark.parametrize("change", [{"train": {"optimizer": "sgd"}}, {"train": {"schedule": "poly"}},
                                    {"model": {"head": {"channels": 16}}}, {"trainer": {"precision": "bf16"}}])
def test_new_settings_off_their_defaults_change_the_keys(tmp_path, change):
    s = _base()
    for section, values in change.items():
        s.setdefault(section, {}).update(values)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(s, sort_keys=False))
    a, b = load_study(_write(tmp_path, "a")).cells(), load_study(path).cells()
    assert all(ca.key != cb.key for ca, cb in zip(a, b))


def test_iterations_make_validation_rounds_the_epochs(tmp_path):
    study = load_study(_write(tmp_path, train={"iterations": 60, "val_interval": 20, "batch_size": 4},
                              pruner={"name": "hyperband"}))
    train = study.cells()[0].train
    assert (train.iterations, train.val_interval, train.epochs) == (60, 20, 3)
    assert study.pruner["max_resource"] == 3  # one resource unit per validation round
    once = load_study(_write(tmp_path, "once", train={"iterations": 50})).cells()[0].train
    assert once.epochs == 1


# id -> (changes to the base study, key at fault, substrings the message needs)
NEW_SETTING_MISTAKES = {
    "unknown_optimizer": (dict(train__optimizer="adam"), "train.optimizer", ["'adam'", "adamw", "sgd"]),
    "unknown_schedule": (dict(train__schedule="cosine"), "train.schedule", ["'cosine'", "onecycle", "poly"]),
    "momentum_without_sgd": (dict(train__momentum=0.9), "train.momentum", ["sgd"]),
    "poly_power_without_poly": (dict(train__poly_power=0.9), "train.poly_power", ["poly"]),
    "min_lr_above_lr": (dict(train__schedule="poly", train__min_lr=0.1), "train.min_lr", ["below", "train.lr"]),
    "epochs_and_iterations": (dict(train__iterations=100), "train.epochs", ["not both"]),
    "val_interval_not_dividing": (dict(train__epochs=None, train__iterations=100, train__val_interval=30),
                                  "train.val_interval", ["does not divide", "100"]),
    "val_interval_without_iterations": (dict(train__val_interval=10), "train.val_interval", ["iterations"]),
    "aux_head_on_small_cnn": (dict(model__head={"aux_weight": 0.4}), "model.head.aux_weight", ["resnet_d8"]),
    "unknown_head_key": (dict(model__head={"chanels": 512}), "model.head.chanels", ["channels", "aux_weight"]),
    "unknown_precision": (dict(trainer={"precision": "fp8"}), "trainer.precision", ["'fp8'", "bf16-mixed"]),
    "half_precision_on_cpu": (dict(trainer={"precision": 16}), "trainer.precision", ["GPU"]),
    "unknown_dataset": (dict(data={"name": "coco"}), "data.name", ["'coco'", "synthetic", "voc", "cityscapes",
                                                                   "ade20k"]),
    "dataset_as_factor": (dict(factors={"data.name": ["synthetic"]}, baseline=None), "factors.data.name",
                          ["one study per dataset"]),
    "unknown_backbone": (dict(model__backbone={"name": "resnet50"}), "model.backbone.name",
                         ["small_cnn", "resnet_d8"]),
    "resnet_without_pretrained": (dict(model__backbone={"name": "resnet_d8", "depth": 50}),
                                  "model.backbone.pretrained", ["none", "open-mmlab://resnet50_v1c"]),
    "zero_margin": (dict(margin=0), "margin", ["> 0"]),
    "negative_margin": (dict(margin=-1.0), "margin", ["> 0"]),
    "margin_over_the_range": (dict(margin=150), "margin", ["<= 100"]),
    "margin_as_text": (dict(margin="1pt"), "margin", ["mIoU points", "'1pt'"]),
    "margin_as_bool": (dict(margin=True), "margin", ["mIoU points"]),
    "unknown_correction": (dict(correction="fdr"), "correction", ["'fdr'", "none", "holm", "bonferroni"]),
    "correction_as_list": (dict(correction=["holm"]), "correction", ["none", "holm", "bonferroni"]),
}


def test_margin_and_correction_default_and_stay_out_of_the_cell_keys(tmp_path):
    plain = load_study(_write(tmp_path, "plain"))
    assert (plain.margin, plain.correction) == (1.0, "holm")
    judged = load_study(_write(tmp_path, "judged", margin=0.5, correction="bonferroni"))
    assert (judged.margin, judged.correction) == (0.5, "bonferroni")
    assert [c.key for c in judged.cells()] == [c.key for c in plain.cells()]
    cell, seed = judged.trials()[0]
    config = json.dumps(judged.trial_config(cell, seed))
    assert "margin" not in config and "bonferroni" not in config


@pytest.mark.parametrize("case", list(NEW_SETTING_MISTAKES))
def test_new_setting_mistakes_name_the_key(tmp_path, case):
    changes, key, needles = NEW_SETTING_MISTAKES[case]
    path = _write(tmp_path, **changes)
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.key == key, e.value.paragraph()
    for needle in needles:
        assert needle in e.value.message, f"{needle!r} missing from: {e.value.message}"


# --------------------------------------------------------------------------------------------
# regressions: bugs found while writing these tests
# --------------------------------------------------------------------------------------------

def test_duplicate_after_coercion_names_the_factor(tmp_path):
    """gcn: [true, 'on'] is one value twice; the error must name factors.gcn (it used to say 'references')."""
    path = tmp_path / "dup.yaml"
    path.write_text(_with(factors={"gcn": [True, "on"]}))
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.key == "factors.gcn"


def test_baseline_values_are_coerced_like_factor_values(tmp_path):
    """baseline {gcn: 'on'} is the cell gcn=on (it used to match no cell: raw vs coerced values)."""
    path = tmp_path / "base.yaml"
    path.write_text(_with(factors={"gcn": ["on", "off"]}, baseline={"gcn": "on"}))
    study = load_study(path)
    assert study.baseline_cell().label_dict == {"gcn": True}


def test_error_message_keeps_a_long_path_whole(capsys):
    """The paragraph is wrapped, but never inside the file's path (it used to break at hyphens)."""
    path = "/tmp/" + "a-rather-long-directory-name-with-hyphens/" * 3 + "study.yaml"
    with pytest.raises(SystemExit) as e:
        exit_with(StudyError(path, "bogus", "unknown key; valid keys here are: name, question, model."))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert path in err
