"""python -m ablate.data.export: a synthetic task written in the VOC, Cityscapes and ADE20K layouts
and read back through ablate/data/real.py's mmseg loaders (labels exact, images within JPEG loss)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ablate.data import export as ex
from ablate.data.real import IGNORE_INDEX, build_real_datasets, collate_val, validate_real_data
from ablate.data.synthetic import SceneConfig, make_split

CFG = SceneConfig(size=40, train_images=3, val_images=4, seed=5)


def _reference(cfg: SceneConfig, split: str):
    """The task's tensors with the exporter's clipping to 8 bits undone exactly (no rounding):
    what a lossless file would give back, up to half a grey level."""
    x, y = make_split(cfg, split)
    return torch.stack([ex.from_uint8(ex.to_uint8(img)) for img in x]), x, y


def _load(layout: str, root, cfg: SceneConfig):
    spec = validate_real_data({"name": layout, "data_root": str(root), "crop_size": [cfg.size, cfg.size],
                               "scale": [cfg.size, cfg.size], "num_workers": 0}, "test")
    return build_real_datasets(spec, "test")


@pytest.mark.parametrize("layout", ex.LAYOUTS)
def test_round_trip_through_the_loaders(tmp_path, layout):
    ex.export(CFG, layout, tmp_path, quality=95)
    sets = _load(layout, tmp_path, CFG)
    assert len(sets.train) == CFG.train_images and len(sets.val) == CFG.val_images
    ref, raw, labels = _reference(CFG, "val")
    assert (labels == IGNORE_INDEX).any()  # the cue: ignore pixels must come back as ignore
    for i in range(CFG.val_images):
        x, y = collate_val([sets.val[i]])
        assert torch.equal(y[0], labels[i]), f"{layout}: labels of val image {i} differ"
        err = (x[0] - ref[i]).abs() * torch.tensor(ex.IMAGENET_STD).view(3, 1, 1)  # in grey levels
        if layout == "cityscapes":  # PNG: lossless, only the 8-bit rounding
            assert err.max() < 1e-3
        else:  # JPEG at quality 95, no chroma subsampling: measured mean 3.2, max 16 grey levels
            assert err.mean() < 4.5 and err.max() < 32, (layout, float(err.mean()), float(err.max()))
        assert (x[0] - raw[i]).abs().mean() < 0.08  # the model's input is the task's tensor, nearly


def test_train_split_matches_the_task_in_order(tmp_path):
    ex.export(CFG, "ade20k", tmp_path)
    sets = _load("ade20k", tmp_path, CFG)
    _, _, labels = _reference(CFG, "train")
    # the training pipeline crops/flips/distorts; the label file itself must hold class + 1
    files = sorted((tmp_path / "ADEChallengeData2016" / "annotations" / "training").glob("*.png"))
    assert len(files) == len(sets.train) == CFG.train_images
    for f, lab in zip(files, labels):
        stored = np.asarray(Image.open(f)).astype(np.int64)
        want = np.where(lab.numpy() == IGNORE_INDEX, 0, lab.numpy() + 1)
        assert np.array_equal(stored, want)


def test_voc_labels_are_palette_indices_and_split_lists(tmp_path):
    ex.export(CFG, "voc", tmp_path)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert ids == [f"val_{i:06d}" for i in range(CFG.val_images)]
    im = Image.open(voc / "SegmentationClass" / f"{ids[0]}.png")
    assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]  # class 1 is VOC's dark red
    _, _, labels = _reference(CFG, "val")
    assert np.array_equal(np.asarray(im).astype(np.int64), labels[0].numpy())


def test_cityscapes_label_ids_map_back_to_train_ids(tmp_path):
    ex.export(CFG, "cityscapes", tmp_path)
    gt = sorted((tmp_path / "gtFine" / "val" / "synth").glob("*_gtFine_labelIds.png"))
    _, _, labels = _reference(CFG, "val")
    to_train = np.full(256, IGNORE_INDEX)
    to_train[list(ex.CITYSCAPES_LABEL_IDS)] = np.arange(19)
    for f, lab in zip(gt, labels):
        ids = np.asarray(Image.open(f))
        assert np.array_equal(to_train[ids], lab.numpy())
        assert set(np.unique(ids[lab.numpy() == IGNORE_INDEX])) <= {ex.CITYSCAPES_UNLABELED}


def test_any_size_and_the_command_line(tmp_path, capsys):
    assert ex.main(["--layout", "voc", "--out", str(tmp_path), "--size", "48", "--train-images", "2",
                    "--val-images", "1", "--seed", "3"]) == 0
    assert "data_root" in capsys.readouterr().out
    img = Image.open(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / "val_000000.jpg")
    assert img.size == (48, 48)
    with pytest.raises(SystemExit) as e:
        ex.main(["--layout", "coco", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        ex.main(["--layout", "voc", "--out", str(tmp_path), "--quality", "101"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # too small for the objects and the distant cue
        ex.main(["--layout", "voc", "--out", str(tmp_path), "--size", "20"])
    assert e.value.code == 2


def test_clipping_is_rare_on_the_default_task():
    x, _ = make_split(SceneConfig(train_images=64, val_images=1), "train")
    back = torch.stack([ex.from_uint8(ex.to_uint8(i)) for i in x])
    half_level = 0.5 / min(ex.IMAGENET_STD) + 1e-6
    assert ((back - x).abs() > half_level).float().mean() < 1e-3


def test_training_batches_are_the_tasks_with_augmentation_off(tmp_path):
    """What studies/real_path_voc.yaml relies on: scale = crop = the image, ratio 1, no flip, no
    photometric distortion: mmseg's training pipeline hands back the task's labels exactly and its
    images within the JPEG loss."""
    from ablate.data.real import collate_train

    ex.export(CFG, "voc", tmp_path)
    spec = validate_real_data({"name": "voc", "data_root": str(tmp_path), "aug": "off", "crop_size": [40, 40],
                               "scale": [40, 40], "ratio_range": [1.0, 1.0], "cat_max_ratio": 1.0,
                               "flip_prob": 0.0, "photometric": False, "num_workers": 0}, "test")
    sets = build_real_datasets(spec, "test")
    x, y = make_split(CFG, "train")
    xb, yb = collate_train([sets.train[i] for i in range(CFG.train_images)], (40, 40))
    assert torch.equal(yb, y)
    assert (xb - x).abs().mean() < 0.05
