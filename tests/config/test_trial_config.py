"""The typed trial config: a JSON round trip, the shape storage keeps, and configs older journals wrote."""
from __future__ import annotations

import dataclasses
import json

import pytest

from ablate.study.load import load_study
from ablate.config.trial import HeadSpec, TrainerSpec, TrainSpec, TrialConfig

from support import REPO

STUDIES = sorted((REPO / "studies").glob("*.yaml"))
JOURNALS = sorted((REPO / "reports" / "storage").glob("*.journal"))
# the keys of a trial's stored ``config``, in the order storage has always written them
STORED_KEYS = ["study", "cell", "cell_key", "seed", "mechanism", "args", "backbone", "data", "train", "head",
               "trainer", "metric"]


def _stored_configs(journal) -> list[str]:
    """The ``config`` attribute of every trial in an Optuna journal file, as stored (JSON text)."""
    out = []
    for line in journal.read_text().splitlines():
        rec = json.loads(line)
        attrs = dict(rec.get("user_attrs") or {})
        if rec.get("key") == "config":
            attrs["config"] = rec["value"]
        if "config" in attrs:
            out.append(attrs["config"])
    return out


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_committed_studys_trials_round_trip_in_the_stored_shape(path):
    study = load_study(path, check_files=False)
    plan = study.trials() or [(study.search_cell({}), study.seeds[0])]
    for cell, seed in plan[:40]:
        config = study.trial(cell, seed)
        assert TrialConfig.from_json(config.to_json()) == config
        assert TrialConfig.from_json(json.loads(config.to_json())) == config  # the dict form too
        stored = json.loads(config.to_json())
        assert list(stored) == STORED_KEYS + (["overrides"] if study.overrides else [])
        assert stored["cell_key"] == cell.key and stored["seed"] == seed and stored["cell"] == cell.label_dict
        assert config.train == cell.train and config.head == study.head_of(cell) and config.trainer == study.trainer
        assert json.dumps(study.trial_config(cell, seed)) == config.to_json()


def test_the_committed_journals_configs_read_back_unchanged():
    """What storage holds reads into a TrialConfig whose stored form is the same text."""
    seen = 0
    for journal in JOURNALS:
        for text in _stored_configs(journal):
            config = TrialConfig.from_json(text)
            assert config.to_json() == text, journal.name
            seen += 1
    assert seen >= 100  # the committed journals hold a few hundred trials


def test_a_config_from_before_head_trainer_and_the_newer_train_keys_reads_with_the_records_defaults():
    stored = json.loads(_stored_configs(JOURNALS[0])[0])
    old = {k: v for k, v in stored.items() if k not in ("head", "trainer", "metric")}
    old["train"] = {k: stored["train"][k] for k in TrainSpec._keyed}
    config = TrialConfig.from_json(json.dumps(old))
    assert config.head == HeadSpec() and config.trainer == TrainerSpec() and config.metric == "val_miou"
    assert config.train == dataclasses.replace(TrainSpec(), **old["train"])
    newer = TrialConfig.from_json(json.dumps(stored))  # every other field reads as the newer config has it
    assert config == dataclasses.replace(newer, train=config.train, head=HeadSpec(), trainer=TrainerSpec(),
                                         metric="val_miou")


def test_precision_and_overrides_are_stored_only_off_their_defaults():
    base = TrialConfig("s", {"gcn": True}, "abc", 0, "none", {}, {"name": "small_cnn", "width": 8, "depth": 2},
                       {"name": "synthetic", "task": "global_cue"})
    assert "precision" not in base.as_dict()["trainer"] and "overrides" not in base.as_dict()
    other = dataclasses.replace(base, trainer=TrainerSpec(precision="bf16-mixed"), overrides=("train.epochs=2",))
    stored = other.as_dict()
    assert stored["trainer"]["precision"] == "bf16-mixed" and stored["overrides"] == ["train.epochs=2"]
    for c in (base, other):
        assert TrialConfig.from_json(c.to_json()) == c
    assert TrialConfig.of(base) is base and TrialConfig.of(base.as_dict()) == base


def test_tuples_in_a_spec_compare_equal_after_the_round_trip():
    """A plugin backbone's options are a tuple of pairs in its record and lists in JSON."""
    backbone = {"name": "m:B", "options": (("width", 4),)}
    config = TrialConfig("s", {}, "k", 1, "none", {}, backbone, {"name": "synthetic"})
    assert config.backbone == {"name": "m:B", "options": [["width", 4]]}
    assert TrialConfig.from_json(config.to_json()) == config


def test_the_trainer_and_the_segmenter_read_the_records_defaults_from_a_dict_or_a_trial_config():
    """The trainer takes the typed config or its stored dict; neither it nor the segmenter has defaults of its own."""
    import inspect

    from ablate.models.segmenter import SegmentationModule, as_head, feature_geometry
    from ablate.trainer.trial import is_isolated

    study = load_study(REPO / "studies" / "gcn_effect.yaml")
    config = study.trial(*study.trials()[0])
    two = dataclasses.replace(config, trainer=TrainerSpec(devices=2))
    ddp = dataclasses.replace(config, trainer=TrainerSpec(strategy="ddp"))
    for c, isolated in ((config, False), (two, True), (ddp, True)):
        assert is_isolated(c) is is_isolated(c.as_dict()) is is_isolated(c.to_json()) is isolated
    old = {k: v for k, v in config.as_dict().items() if k not in ("trainer", "head")}
    assert not is_isolated(old) and TrialConfig.of(old).head == HeadSpec()
    assert as_head(None) == as_head({}) == HeadSpec() and as_head({"channels": 8}) == HeadSpec(channels=8)
    small = {"name": "small_cnn", "width": 16, "depth": 3}
    plain = feature_geometry(small, None)
    assert feature_geometry(small, HeadSpec(channels=8)) == feature_geometry(small, {"channels": 8}) == (8, plain[1])
    assert plain[0] == 16
    params = inspect.signature(SegmentationModule).parameters
    for name in ("lr", "weight_decay", "epochs", "optimizer", "momentum", "schedule", "poly_power", "min_lr"):
        assert params[name].default == getattr(TrainSpec(), name), name
