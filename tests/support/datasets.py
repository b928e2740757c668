"""Tiny fake copies of the real datasets' standard layouts (VOC here) and study files for them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image



H, W = 64, 96  # fake image size (VOC, ADE20K); Cityscapes uses 64 x 128


def fake_image(path: Path, h: int, w: int, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def fake_label(path: Path, h: int, w: int, rng, high: int, palette: bool = False) -> np.ndarray:
    """Labels 0..high with a 255 (ignore) block in the top-left corner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = rng.integers(0, high + 1, (h, w)).astype(np.uint8)
    a[:4, :6] = 255
    im = Image.fromarray(a, mode="L")
    if palette:  # VOC's SegmentationClass PNGs are palette images: pixel values are indices
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, (7 * i) % 256, (13 * i) % 256)])
    im.save(path)
    return a


def make_voc(root: Path, n_train: int = 4, n_val: int = 2, aug: int = 0) -> Path:
    rng = np.random.default_rng(0)
    voc = root / "VOCdevkit" / "VOC2012"
    ids = [f"2007_{i:06d}" for i in range(n_train + n_val + aug)]
    for i in ids[:n_train + n_val]:
        fake_image(voc / "JPEGImages" / f"{i}.jpg", H, W, rng)
        fake_label(voc / "SegmentationClass" / f"{i}.png", H, W, rng, 20, palette=True)
    for i in ids[n_train + n_val:]:
        fake_image(voc / "JPEGImages" / f"{i}.jpg", H, W, rng)
        fake_label(voc / "SegmentationClassAug" / f"{i}.png", H, W, rng, 20)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:n_train + n_val]))
    if aug:
        (sets / "aug.txt").write_text("".join(f"{i}\n" for i in ids[n_train + n_val:]))
    return voc


def cli_study(root: Path, name: str, data: dict, model: dict, train: dict, factors: dict) -> Path:
    import yaml

    study = {"name": name, "question": f"does the {data['name']} path run end to end?", "model": model,
             "data": {"num_workers": 0, **data}, "train": {"batch_size": 2, "threads": 1, **train},
             "factors": factors, "seeds": [0], "tracking": {"wandb": False}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


SMALL = {"name": "small_cnn", "width": 8}
