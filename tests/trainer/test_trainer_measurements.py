"""What a trial measures besides its mIoU curve: per-image counts (issue 13 item 7), the seed
streams that pair cells (item 1) and the cue probe's attention mass (issue 11), through
``run_trial`` on tiny synthetic trials."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from ablate.attention import MECHANISMS
from ablate.data.synthetic import IGNORE_INDEX, SceneConfig, make_split
from ablate.models.image_counts import ATTR, decode
from ablate.models.segmenter import Segmenter
from ablate.config.seeds import SEED_STREAMS, derive
from ablate.stats import bootstrap_miou, miou_from_counts
from ablate.trainer.trial import run_trial

SMALL = {"name": "small_cnn", "width": 8, "depth": 3}


def _config(mechanism: str, seed: int, task: str = "global_cue", epochs: int = 1, args: dict | None = None) -> dict:
    return {"seed": seed, "backbone": dict(SMALL), "mechanism": mechanism, "args": args or {},
            "data": {"task": task, "train_images": 32, "val_images": 24},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 0.01, "weight_decay": 1e-4}}


class _Inert(nn.Module):
    """An identity block that still draws 1000 random numbers at construction (an unused
    parameter): a factor value that changes nothing but the generators' state."""

    FACTORS = ()

    def __init__(self, channels: int):
        super().__init__()
        self.unused = nn.Parameter(torch.randn(1000))

    def forward(self, x):
        return x


@pytest.fixture
def inert(monkeypatch):
    preset = dataclasses.replace(MECHANISMS["none"], name="_inert", source=_Inert)  # the control's, another block
    monkeypatch.setitem(MECHANISMS, "_inert", preset)
    return "_inert"


def test_derive_is_stable_and_separates_streams():
    assert derive(0, "head") == derive(0, "head")
    assert len({derive(s, n) for s in (0, 1) for n in ("backbone", "attention", "head", "train")}) == 8
    assert 0 <= derive(123, "backbone") < 2 ** 63
    # a fixed value: the derivation must not change between processes or versions of Python
    assert derive(0, "head") == int.from_bytes(__import__("hashlib").sha256(b"ablate:0:head").digest()[:8],
                                               "little") & (2 ** 63 - 1)


def _shared_state(model: Segmenter) -> dict:
    return {f"{part}.{k}": v for part in ("backbone", "head") for k, v in getattr(model, part).state_dict().items()}


def test_backbone_and_head_init_are_bit_identical_across_mechanisms(inert):
    ref = _shared_state(Segmenter(5, SMALL, "none", {}, seed=3))
    for mechanism, args in (("nonlocal", {}), ("glore", {"K": 4}), (inert, {})):
        other = _shared_state(Segmenter(5, SMALL, mechanism, args, seed=3))
        assert other.keys() == ref.keys()
        assert all(torch.equal(other[k], ref[k]) for k in ref), mechanism
    assert not torch.equal(Segmenter(5, SMALL, "none", {}, seed=4).head[1].weight, ref["head.1.weight"])
    # without streams (seed=None: one global seed, as before) the block's draws move the head
    torch.manual_seed(3)
    plain = Segmenter(5, SMALL, "none", {}).head[1].weight
    torch.manual_seed(3)
    assert not torch.equal(Segmenter(5, SMALL, inert, {}).head[1].weight, plain)


def test_a_factor_that_changes_nothing_gives_delta_zero_per_seed(inert):
    for seed in (0, 1):
        a = run_trial(_config("none", seed), threads=1)
        b = run_trial(_config(inert, seed), threads=1)
        assert b["attention_params"] == 1000 and a["attention_params"] == 0
        assert a["curve"] == b["curve"] and a["class_iou"] == b["class_iou"]  # Δ = 0 exactly
        assert a[ATTR] == b[ATTR]
        assert a["seed_streams"] == b["seed_streams"] == SEED_STREAMS
    assert run_trial(_config("none", 2), threads=1)["curve"] != a["curve"], "the seed should still matter"


def test_image_counts_give_back_the_trials_miou_and_a_bootstrap_interval():
    result = run_trial(_config("nonlocal", 0, epochs=2), threads=1)
    assert json.loads(json.dumps(result)) == result  # every key becomes a JSON user attr in storage
    inter, union = decode(result[ATTR])
    assert inter.shape == union.shape == (24, 5)
    assert (inter <= union).all() and (inter >= 0).all()
    # each row is one whole image: its scored pixels count once in I and U when right, twice in U when wrong
    _, yv = make_split(SceneConfig(**_config("none", 0)["data"]), "val")
    np.testing.assert_array_equal((inter + union).sum(1), 2 * (yv != IGNORE_INDEX).flatten(1).sum(1).numpy())
    assert int((inter + union).sum()) == 2 * result["val_pixels"]
    assert miou_from_counts(inter, union) == pytest.approx(result["final_val_miou"], abs=1e-6)
    total_u = union.sum(0)
    per_class = np.where(total_u > 0, inter.sum(0) / np.maximum(total_u, 1), 0.0)
    np.testing.assert_allclose(per_class, result["class_iou"], atol=1e-6)
    boot = bootstrap_miou(inter, union, n_boot=300)
    assert boot.lo <= result["final_val_miou"] <= boot.hi
    # the cue probe ran once per validation epoch and found the Non-local map
    assert len(result["cue_mass"]) == len(result["curve"]) == 2
    assert all(0.0 <= m <= 1.0 for m in result["cue_mass"])


def test_cue_mass_only_for_global_cue_and_none_without_a_map():
    assert run_trial(_config("none", 0), threads=1)["cue_mass"] == [None]
    assert "cue_mass" not in run_trial(_config("none", 0, task="local"), threads=1)


@pytest.mark.slow
def test_ddp_trial_stores_every_ranks_image_counts():
    """Two CPU ranks (13 and 12 validation images): the stored counts cover all 25 images and
    give back the trial's mIoU; every scored pixel is counted twice in Σ(I + U) (once in I and
    U when right, twice in U when wrong)."""
    config = _config("nonlocal", 0)
    config["data"]["val_images"] = 25
    config["trainer"] = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    result = run_trial(config, threads=2)
    assert result["world_size"] == 2
    inter, union = decode(result[ATTR])
    assert inter.shape == (25, 5)
    assert int((inter + union).sum()) == 2 * result["val_pixels"]
    assert miou_from_counts(inter, union) == pytest.approx(result["final_val_miou"], abs=1e-6)
    assert len(result["cue_mass"]) == 1 and result["cue_mass"][0] is not None
    assert result["seed_streams"] == SEED_STREAMS


def test_real_data_counts_are_per_image_at_the_labels_resolution(tmp_path):
    """VOC layout (fake images 64 x 96, trained on 32 x 32 crops): the counts are scored at each
    label's original resolution, one row per validation image in the split file's order (the
    fake labels get a different ignored area each, so the rows tell the images apart)."""
    from PIL import Image

    from ablate.study.load import load_study
    from support.datasets import SMALL as VOC_SMALL, W, H, cli_study, make_voc

    voc = make_voc(tmp_path / "voc", n_train=4, n_val=3)
    valid = []
    for k, name in enumerate((voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()):
        path = voc / "SegmentationClass" / f"{name}.png"
        im = Image.open(path)
        a = np.array(im)
        a[: 5 * (k + 1)] = 255
        out = Image.fromarray(a, mode="P")
        out.putpalette(im.getpalette())
        out.save(path)
        valid.append(int((a != 255).sum()))
    data = {"name": "voc", "data_root": str(tmp_path / "voc"), "crop_size": [32, 32], "scale": [W, H]}
    path = cli_study(tmp_path, "counts", data, {"backbone": VOC_SMALL, "mechanism": "none"}, {"epochs": 1},
                  {"mechanism": ["none"]})
    study = load_study(path)
    result = run_trial(study.trial_config(*study.trials()[0]), threads=1)
    inter, union = decode(result[ATTR])
    assert inter.shape == (3, 21)
    np.testing.assert_array_equal((inter + union).sum(1), 2 * np.array(valid))
    assert miou_from_counts(inter, union) == pytest.approx(result["final_val_miou"], abs=1e-6)
    assert "cue_mass" not in result
