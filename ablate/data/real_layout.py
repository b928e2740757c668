"""Where a real dataset's files are: the standard layout of each dataset, found under ``data_root``
and checked file by file (every listed image has its label), with a :class:`StudyError` naming the
missing folder or files and the layout expected. Re-exported by :mod:`ablate.data.real`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..config.errors import StudyError


class RealDataSpec(Protocol):
    """What a layout reads of a dataset spec (:mod:`.real_spec` defines the specs; they satisfy this)."""

    name: str
    data_root: str
    train_split: str
    val_split: str
    aug: object


_LAYOUTS = {
    "voc": ("<data_root>/VOCdevkit/VOC2012/ (or <data_root> itself being VOC2012/) holding JPEGImages/<id>.jpg, "
            "SegmentationClass/<id>.png and ImageSets/Segmentation/<split>.txt (one image id per line) for the "
            "train and val splits; for the SBD augmented set also SegmentationClassAug/<id>.png and "
            "ImageSets/Segmentation/aug.txt, as written by mmsegmentation's "
            "tools/dataset_converters/voc_aug.py"),
    "cityscapes": ("<data_root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png and "
                   "<data_root>/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png for the train and val "
                   "splits (the labelTrainIds files are made by cityscapesscripts' createTrainIdLabelImgs or "
                   "mmsegmentation's tools/dataset_converters/cityscapes.py)"),
    "ade20k": ("<data_root>/ADEChallengeData2016/ (or <data_root> itself being ADEChallengeData2016/) holding "
               "images/<split>/<name>.jpg and annotations/<split>/<name>.png for the splits training and "
               "validation (labels 0..150, 0 = other)"),
}


def expected_layout(name: str) -> str:
    """One sentence describing the standard layout of dataset ``name``."""
    return _LAYOUTS[name]


@dataclass(frozen=True)
class Part:
    """One mmseg dataset: images under ``img_dir``, labels under ``seg_dir`` (``ann_file``: id list)."""

    img_dir: str
    seg_dir: str
    ann_file: str = ""
    count: int = 0


@dataclass(frozen=True)
class Layout:
    root: str
    train: tuple  # of Part (VOC with SBD: two parts)
    val: tuple


def _fail(spec: RealDataSpec, where: str, prefix: str, problem: str) -> StudyError:
    root = Path(spec.data_root).expanduser().resolve()
    return StudyError(where, prefix + "data_root", f"the {spec.name} data root {root} {problem}; expected the "
                      f"standard layout: {expected_layout(spec.name)}.")


def _first_existing(root: Path, candidates: list[str], marker: str) -> Path:
    for c in candidates:
        p = root / c if c else root
        if (p / marker).exists():
            return p
    return root


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _missing(paths, limit: int = 3) -> tuple[int, list[str]]:
    gone = [str(p) for p in paths if not os.path.exists(p)]
    return len(gone), gone[:limit]


def _voc_layout(spec: RealDataSpec, where: str, prefix: str) -> Layout:
    root = _first_existing(Path(spec.data_root).expanduser().resolve(), ["VOCdevkit/VOC2012", "VOC2012", ""],
                           "JPEGImages")
    img_dir, seg_dir, sets = root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"
    for d in (img_dir, seg_dir, sets):
        if not d.is_dir():
            raise _fail(spec, where, prefix, f"has no folder {d}")

    def part(split: str, seg: Path, list_name: str) -> Part:
        ann = sets / f"{list_name}.txt"
        if not ann.is_file():
            raise _fail(spec, where, prefix, f"has no split list {ann} (split '{split}')")
        ids = _read_ids(ann)
        if not ids:
            raise _fail(spec, where, prefix, f"has an empty split '{split}': {ann} lists no image ids")
        n, first = _missing([img_dir / f"{i}.jpg" for i in ids] + [seg / f"{i}.png" for i in ids])
        if n:
            raise _fail(spec, where, prefix, f"lacks {n} file(s) listed in {ann}, e.g. {', '.join(first)}")
        return Part(str(img_dir), str(seg), str(ann), len(ids))

    train = [part(spec.train_split, seg_dir, spec.train_split)]
    aug_dir, aug_list = root / "SegmentationClassAug", sets / "aug.txt"
    have = aug_dir.is_dir(), aug_list.is_file()
    if spec.aug == "on" and not all(have):
        raise _fail(spec, where, prefix, f"lacks the SBD augmented set asked for by aug: on ({aug_dir if not have[0] else aug_list} "
                    "is missing); run mmsegmentation's tools/dataset_converters/voc_aug.py or set aug: off")
    if spec.aug == "auto" and any(have) and not all(have):
        raise _fail(spec, where, prefix, f"holds half of the SBD augmented set ({aug_list if have[0] else aug_dir} is "
                    "missing); finish mmsegmentation's tools/dataset_converters/voc_aug.py, or set aug: off to train "
                    "on train.txt alone")
    if spec.aug != "off" and all(have):
        train.append(part("aug", aug_dir, "aug"))
    val = [part(spec.val_split, seg_dir, spec.val_split)]
    return Layout(str(root), tuple(train), tuple(val))


def _split_images(spec, where: str, prefix: str, split: str, img_dir: Path, seg_dir: Path, pattern: str,
                  shown: str) -> list[Path]:
    """The sorted images of a split that keeps images and labels in two folders (Cityscapes,
    ADE20K); a missing folder or an empty split is a layout error."""
    for d in (img_dir, seg_dir):
        if not d.is_dir():
            raise _fail(spec, where, prefix, f"has no folder {d} (split '{split}')")
    images = sorted(img_dir.glob(pattern))
    if not images:
        raise _fail(spec, where, prefix, f"has an empty split '{split}': no {shown} under {img_dir}")
    return images


def _cityscapes_layout(spec: RealDataSpec, where: str, prefix: str) -> Layout:
    root = Path(spec.data_root).expanduser().resolve()

    def part(split: str) -> Part:
        img_dir, seg_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        images = _split_images(spec, where, prefix, split, img_dir, seg_dir, "*/*_leftImg8bit.png",
                               "<city>/*_leftImg8bit.png")
        labels = [seg_dir / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
                  for p in images]
        n, first = _missing(labels)
        if n:
            hint = ""
            if Path(first[0].replace("_labelTrainIds.png", "_labelIds.png")).exists():
                hint = (" (the _gtFine_labelIds.png files are there: convert them to train ids with "
                        "`python -m cityscapesscripts.preparation.createTrainIdLabelImgs` or mmsegmentation's "
                        "tools/dataset_converters/cityscapes.py)")
            raise _fail(spec, where, prefix, f"lacks {n} of {len(images)} label file(s) of split '{split}', e.g. "
                        f"{', '.join(first)}{hint}")
        return Part(str(img_dir), str(seg_dir), "", len(images))

    return Layout(str(root), (part(spec.train_split),), (part(spec.val_split),))


def _ade_layout(spec: RealDataSpec, where: str, prefix: str) -> Layout:
    root = _first_existing(Path(spec.data_root).expanduser().resolve(), ["ADEChallengeData2016", ""], "images")

    def part(split: str) -> Part:
        img_dir, seg_dir = root / "images" / split, root / "annotations" / split
        images = _split_images(spec, where, prefix, split, img_dir, seg_dir, "*.jpg", "*.jpg")
        n, first = _missing([seg_dir / (p.stem + ".png") for p in images])
        if n:
            raise _fail(spec, where, prefix, f"lacks {n} of {len(images)} annotation(s) of split '{split}', e.g. "
                        f"{', '.join(first)}")
        return Part(str(img_dir), str(seg_dir), "", len(images))

    return Layout(str(root), (part(spec.train_split),), (part(spec.val_split),))


def resolve_layout(spec: RealDataSpec, where: str = "data config", prefix: str = "data.") -> Layout:
    """Find the dataset's folders and check every listed image has its label (one stat per file)."""
    root = Path(spec.data_root).expanduser().resolve()
    if not root.is_dir():
        raise _fail(spec, where, prefix, "does not exist" if not root.exists() else "is not a folder")
    return {"voc": _voc_layout, "cityscapes": _cityscapes_layout, "ade20k": _ade_layout}[spec.name](spec, where, prefix)
