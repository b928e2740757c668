"""Write a synthetic task to disk in the VOC, Cityscapes or ADE20K layout.

``python -m ablate.data.export --task global_cue --layout voc --out DIR [--size N]
[--train-images N --val-images N] [--seed S] [--quality Q]`` generates the task's train and val
splits with :func:`ablate.data.synthetic.make_split` (the same arrays a study with
``data.name: synthetic`` trains on) and writes them where :mod:`ablate.data.real` reads each
dataset, so a study can train on them through mmseg's loaders:

* ``voc``: ``DIR/VOCdevkit/VOC2012/JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (a
  palette PNG holding class indices, 255 = ignore, VOC's colour map) and
  ``ImageSets/Segmentation/{train,val}.txt``; ids are ``train_000000``, ``val_000000``, ...
  (no SBD set: the loader's ``aug: auto`` trains on ``train.txt``).
* ``cityscapes``: ``DIR/leftImg8bit/<split>/synth/synth_<n>_000019_leftImg8bit.png`` (PNG, as
  Cityscapes ships; lossless), ``gtFine/<split>/synth/..._gtFine_labelTrainIds.png`` (train ids =
  the task's class indices, 255 = ignore: what the loader reads) and ``..._gtFine_labelIds.png``
  (the Cityscapes label ids whose train id is that class, :data:`CITYSCAPES_LABEL_IDS`; ignore is
  label id 0, "unlabeled"), as cityscapesscripts' createTrainIdLabelImgs would map them.
* ``ade20k``: ``DIR/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_<n>.jpg``
  and ``annotations/.../<name>.png`` holding class + 1 with 0 = "other" (mmseg's
  ``reduce_zero_label`` maps 0 to 255 and k to k - 1, so task pixels come back as their class and
  the task's ignore pixels as 255).

Images: the loaders normalise with the ImageNet mean/std, so a tensor value ``t`` of channel c
is written as the 8-bit value ``round(t * std[c] + mean[c])`` clipped to 0..255 (RGB); the model
then sees ``t`` up to rounding, clipping (values beyond about -2.1..2.2) and, for JPEG, the
codec's loss. JPEGs are written at ``--quality`` (default 98) without chroma subsampling: on
``global_cue`` at 40 x 40 the decoded pixels differ from the written ones by 1.4 grey levels on
average (at most 8; at quality 95: 3.2, at most 16), about 0.02 in model units against the
task's noise of 0.35;
labels are PNG (lossless). File names sort in generation order, so the loaders' image i is the
task's image i.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .real import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from .synthetic import TASKS, SceneConfig, make_split, num_classes

LAYOUTS = ("voc", "cityscapes", "ade20k")
MAX_CLASSES = {"voc": 21, "cityscapes": 19, "ade20k": 150}
# Cityscapes label id of each train id 0..18 (road, sidewalk, building, wall, fence, pole,
# traffic light, traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train,
# motorcycle, bicycle), from the dataset's published label table; label id 0 is "unlabeled"
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_UNLABELED = 0


def voc_palette() -> list[int]:
    """VOC's 256-entry colour map, flattened (r, g, b, ...): the bits of the index spread over
    the three channels, most significant first."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out += [r, g, b]
    return out


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in model units -> (H, W, 3) uint8 RGB such that the loaders' ImageNet
    normalisation gives the tensor back (up to rounding and clipping)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = (image.float() * std + mean).round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(1, 2, 0).numpy()


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`to_uint8` without rounding: (H, W, 3) uint8 RGB -> (3, H, W) float."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() - mean) / std


def encode_label(label: np.ndarray, layout: str) -> np.ndarray:
    """Class indices (255 = ignore) -> the uint8 values the layout's label file holds (for
    Cityscapes: train ids, as in ``*_gtFine_labelTrainIds.png``)."""
    label = label.astype(np.int64)
    if layout == "ade20k":
        return np.where(label == IGNORE_INDEX, 0, label + 1).astype(np.uint8)
    return label.astype(np.uint8)


def cityscapes_label_ids(label: np.ndarray) -> np.ndarray:
    """Class indices (255 = ignore) -> Cityscapes label ids (``*_gtFine_labelIds.png``)."""
    table = np.full(256, CITYSCAPES_UNLABELED, dtype=np.uint8)
    table[:len(CITYSCAPES_LABEL_IDS)] = CITYSCAPES_LABEL_IDS
    return table[label.astype(np.int64)]


def _save_image(pixels: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)  # (H, W, 3) uint8: RGB
    if path.suffix == ".jpg":
        img.save(path, quality=quality, subsampling=0)
    else:
        img.save(path)


def _save_label(values: np.ndarray, path: Path, palette: list[int] | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(values)  # (H, W) uint8: mode L, the values as they are
    if palette is not None:
        img.putpalette(palette)  # L becomes P with the same indices
    img.save(path)


def _write_split(images, labels, layout: str, root: Path, split: str, quality: int) -> list[str]:
    """Write one split; return the names written, in order."""
    names = []
    palette = voc_palette() if layout == "voc" else None
    for i, (x, y) in enumerate(zip(images, labels)):
        pixels, lab = to_uint8(x), y.numpy()
        if layout == "voc":
            name = f"{split}_{i:06d}"
            _save_image(pixels, root / "JPEGImages" / f"{name}.jpg", quality)
            _save_label(encode_label(lab, layout), root / "SegmentationClass" / f"{name}.png", palette)
        elif layout == "cityscapes":
            name = f"synth_{i:06d}_000019"
            _save_image(pixels, root / "leftImg8bit" / split / "synth" / f"{name}_leftImg8bit.png", quality)
            gt = root / "gtFine" / split / "synth"
            _save_label(encode_label(lab, layout), gt / f"{name}_gtFine_labelTrainIds.png")
            _save_label(cityscapes_label_ids(lab), gt / f"{name}_gtFine_labelIds.png")
        else:
            name = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            _save_image(pixels, root / "images" / split / f"{name}.jpg", quality)
            _save_label(encode_label(lab, layout), root / "annotations" / split / f"{name}.png")
        names.append(name)
    return names


def export(cfg: SceneConfig, layout: str, out: str | Path, quality: int = 98) -> Path:
    """Write ``cfg``'s train and val splits under ``out`` in ``layout``; return the folder a
    study's ``data.data_root`` names (``out`` itself)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if num_classes(cfg.task) > MAX_CLASSES[layout]:
        raise ValueError(f"task {cfg.task!r} has {num_classes(cfg.task)} classes, more than {layout}'s "
                         f"{MAX_CLASSES[layout]}")
    out = Path(out)
    root = {"voc": out / "VOCdevkit" / "VOC2012", "cityscapes": out, "ade20k": out / "ADEChallengeData2016"}[layout]
    splits = {"voc": ("train", "val"), "cityscapes": ("train", "val"), "ade20k": ("training", "validation")}[layout]
    for which, split in zip(("train", "val"), splits):
        images, labels = make_split(cfg, which)
        names = _write_split(images, labels, layout, root, split, quality)
        if layout == "voc":
            sets = root / "ImageSets" / "Segmentation"
            sets.mkdir(parents=True, exist_ok=True)
            (sets / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablate.data.export",
                                description="Write a synthetic task in a real dataset's layout on disk.")
    p.add_argument("--task", default="global_cue", choices=sorted(TASKS))
    p.add_argument("--layout", required=True, choices=LAYOUTS)
    p.add_argument("--out", required=True, help="folder to write (a study's data.data_root)")
    p.add_argument("--size", type=int, default=SceneConfig.size, help="image side in pixels")
    p.add_argument("--train-images", type=int, default=SceneConfig.train_images)
    p.add_argument("--val-images", type=int, default=SceneConfig.val_images)
    p.add_argument("--seed", type=int, default=SceneConfig.seed, help="the task's seed (data.seed)")
    p.add_argument("--quality", type=int, default=98, help="JPEG quality, 1..100 (VOC, ADE20K)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    d = SceneConfig()
    room = 2 * d.max_side + 2 * d.cue_gap + d.cue_side  # the generator's room for objects and the cue
    for flag, value, low in (("--size", a.size, room), ("--train-images", a.train_images, 1),
                             ("--val-images", a.val_images, 1), ("--quality", a.quality, 1)):
        if value < low or (flag == "--quality" and value > 100):
            p.error(f"{flag} must be {'between 1 and 100' if flag == '--quality' else f'at least {low}'}, "
                    f"got {value}")
    cfg = SceneConfig(task=a.task, size=a.size, train_images=a.train_images, val_images=a.val_images, seed=a.seed)
    try:
        out = export(cfg, a.layout, a.out, a.quality)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {cfg.train_images} train and {cfg.val_images} val images of {cfg.task} ({cfg.size}x{cfg.size}, "
          f"seed {cfg.seed}) in the {a.layout} layout under {out}; use data: {{name: {a.layout}, data_root: {out}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
