"""``model.backbone: {init, freeze}`` of small_cnn in a study: defaults keep keys, factors, mistakes."""
from __future__ import annotations

import json

import pytest
import yaml

from ablate.config.errors import StudyError
from ablate.models import pretext
from ablate.models.registry import lookup
from ablate.study.load import load_study

from support import base_study, run_cli, REPO


def _study(tmp_path, name="s", backbone=None, factors=None):
    raw = base_study()
    raw["name"] = name
    raw["model"]["backbone"] = {"name": "small_cnn", "width": 8, **(backbone or {})}
    if factors is not None:
        raw["factors"], raw["baseline"] = factors, None
        raw.pop("baseline")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_defaults_written_out_keep_every_key_and_trial_config(tmp_path):
    plain = load_study(_study(tmp_path, "plain"))
    explicit = load_study(_study(tmp_path, "explicit", {"init": "scratch", "freeze": False}))
    assert [c.key for c in plain.cells()] == [c.key for c in explicit.cells()]
    (cell, seed), (cell2, _) = plain.trials()[0], explicit.trials()[0]
    config = plain.trial_config(cell, seed)["backbone"]
    assert config == explicit.trial_config(cell2, seed)["backbone"] == {"name": "small_cnn", "width": 8, "depth": 3}


def test_init_and_freeze_as_factors_make_cells_of_their_own(tmp_path):
    study = load_study(_study(tmp_path, factors={"backbone.init": ["scratch", "pretrained_synthetic"],
                                                 "backbone.freeze": [False, True]}))
    cells = study.cells()
    assert len({c.key for c in cells}) == 4
    specs = {(c.backbone.init, c.backbone.freeze) for c in cells}
    assert specs == {("scratch", False), ("scratch", True), ("pretrained_synthetic", False),
                     ("pretrained_synthetic", True)}
    frozen = next(c for c in cells if c.backbone.init == "pretrained_synthetic" and c.backbone.freeze)
    assert study.trial_config(frozen, 0)["backbone"] == {"name": "small_cnn", "width": 8, "depth": 3,
                                                         "init": "pretrained_synthetic", "freeze": True}


def test_the_report_names_the_init_and_the_pretext_key(tmp_path):
    study = load_study(_study(tmp_path, backbone={"init": "pretrained_synthetic", "freeze": True}))
    words = lookup("small_cnn").describe(study.backbone)
    assert pretext.pretext_key(8, 3) in words and "pretrained_synthetic" in words and "frozen" in words
    assert lookup("small_cnn").describe(load_study(_study(tmp_path, "p")).backbone) == "width 8"


@pytest.mark.parametrize("backbone, key, needles", [
    ({"init": "imagenet"}, "model.backbone.init", ["'imagenet'", "scratch", "pretrained_synthetic"]),
    ({"freeze": "yes"}, "model.backbone.freeze", ["true or false"]),
    ({"init": 1}, "model.backbone.init", ["string"]),
])
def test_mistakes_name_the_key(tmp_path, backbone, key, needles):
    with pytest.raises(StudyError) as e:
        load_study(_study(tmp_path, backbone=backbone))
    assert e.value.key == key
    assert all(n in e.value.message for n in needles), e.value.message


def test_a_bad_init_factor_level_exits_2_and_runs_nothing(tmp_path):
    path = _study(tmp_path, factors={"backbone.init": ["scratch", "imagenet"]})
    done = run_cli(["ablate.run", str(path), "--dry-run"], cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "backbone.init" in done.stderr and "pretrained_synthetic" in done.stderr
    assert not (tmp_path / "storage").exists() and "Traceback" not in done.stderr


def test_the_committed_twins_differ_from_their_studies_only_by_the_backbone():
    for name in ("em_iterations", "num_bases"):
        base = load_study(REPO / "studies" / f"{name}.yaml", check_files=False)
        twin = load_study(REPO / "studies" / f"{name}_pretrained.yaml", check_files=False)
        titles = [c.title() for c in base.cells()]  # (the study may since have grown cells of its own)
        assert [c.title() for c in twin.cells()] == [t for t in titles if t in {c.title() for c in twin.cells()}]
        assert len(twin.cells()) >= 9
        assert (twin.backbone.init, twin.backbone.freeze) == ("pretrained_synthetic", True)
        assert json.dumps(twin.train.identity(), sort_keys=True) == json.dumps(base.train.identity(), sort_keys=True)
