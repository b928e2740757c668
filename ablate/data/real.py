"""PASCAL VOC 2012, Cityscapes and ADE20K in their standard layouts, read through mmsegmentation.

The datasets are mmsegmentation 1.2.2's own classes (``PascalVOCDataset``, ``CityscapesDataset``,
``ADE20KDataset``) with the transform pipelines of its ``configs/_base_/datasets/*.py``, which are
the settings the attention papers (Non-local, DANet, CCNet, OCNet, EMANet, ...) train with:

* training: ``LoadImageFromFile`` -> ``LoadAnnotations`` -> ``RandomResize(scale, ratio_range=(0.5,
  2.0), keep_ratio=True)`` -> ``RandomCrop(crop_size, cat_max_ratio=0.75)`` -> ``RandomFlip(0.5)`` ->
  ``PhotoMetricDistortion`` -> ``PackSegInputs``; the collate normalises with the ImageNet mean/std
  (RGB) and pads each sample bottom/right to the crop size (image 0 after normalisation, label 255),
  which is what mmseg's ``SegDataPreProcessor`` does.
* validation: ``LoadImageFromFile`` -> ``Resize(scale, keep_ratio=True)`` -> ``LoadAnnotations`` ->
  ``PackSegInputs``, **batch size 1**, no padding: the image is resized, the label stays at the
  original resolution (mmseg's protocol: the prediction is resized back to the label), so the
  validation step must resize its logits to the label's size (see ``resize_logits_to``). Padding
  a validation batch would change what global attention sees, so it is not offered.

Labels are ``long`` with 255 = ignore. ADE20K uses ``reduce_zero_label`` (0 "other" becomes 255,
class k becomes k - 1). VOC trains on ``train.txt`` plus, when the SBD augmented set is present
(mmseg's converter output: ``SegmentationClassAug/`` and ``ImageSets/Segmentation/aug.txt``), the
10582-image "train_aug" set, as mmseg's ``pascal_voc12_aug.py`` does (a concatenation of the two).

Entry points: :func:`validate_real_data` (study-file check: keys, types and the layout on disk,
raising :class:`~ablate.errors.StudyError`) and :func:`build_real_data` (single-process loaders,
class count and names), or, for a trainer with its own samplers (DDP),
:func:`build_real_datasets` with :func:`train_loader` / :func:`val_loader`. mmsegmentation is
imported only when datasets are built.
"""
from __future__ import annotations

import functools
import os
import random
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader

from ..errors import StudyError
from ..seeds import derive

IGNORE_INDEX = 255
# ImageNet statistics on the 0..255 scale, RGB order (mmseg's SegDataPreProcessor defaults)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


# ======================================================================================
# specs
# ======================================================================================

@dataclass(frozen=True)
class RealDataSpec:
    """Settings shared by the real datasets (each subclass sets the papers' defaults).

    ``crop_size`` is (height, width); ``scale`` is mmseg's keep-ratio scale (long edge, short
    edge): an image is resized to fit inside it, then by a random ratio in ``ratio_range``.
    ``train_images`` / ``val_images`` > 0 keep only the first N images of a split (quick runs).
    ``num_workers`` is the number of loader processes per training process. A relative
    ``data_root`` is taken from the working directory of the process (give absolute paths on a
    cluster, where workers may start elsewhere).
    """

    name: str = ""
    data_root: str = ""
    crop_size: tuple = (512, 512)
    scale: tuple = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    train_split: str = "train"
    val_split: str = "val"
    train_images: int = 0
    val_images: int = 0
    num_workers: int = 4

    def as_dict(self) -> dict:
        """Plain JSON-able dict (tuples as lists); ``spec_from_dict`` reads it back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class VOCSpec(RealDataSpec):
    """PASCAL VOC 2012 (21 classes), 512 x 512 crops, scale (2048, 512), as mmseg's
    ``pascal_voc12_aug.py``. ``aug``: 'auto' uses the SBD augmented set when both
    ``SegmentationClassAug/`` and ``ImageSets/Segmentation/aug.txt`` exist, 'on' requires it,
    'off' trains on ``train.txt`` alone (1464 images)."""

    name: str = "voc"
    aug: str = "auto"


@dataclass(frozen=True)
class CityscapesSpec(RealDataSpec):
    """Cityscapes (19 train ids), 512 x 1024 crops, scale (2048, 1024), as mmseg's
    ``cityscapes.py``. CCNet's setting is ``crop_size: [769, 769], scale: [2049, 1025]``
    (mmseg's ``cityscapes_769x769.py``)."""

    name: str = "cityscapes"
    crop_size: tuple = (512, 1024)
    scale: tuple = (2048, 1024)


@dataclass(frozen=True)
class ADE20KSpec(RealDataSpec):
    """ADE20K / SceneParsing (150 classes, ``reduce_zero_label``), 512 x 512 crops, scale
    (2048, 512), as mmseg's ``ade20k.py``."""

    name: str = "ade20k"
    train_split: str = "training"
    val_split: str = "validation"


SPECS: dict[str, type[RealDataSpec]] = {"voc": VOCSpec, "cityscapes": CityscapesSpec, "ade20k": ADE20KSpec}
REAL_DATASETS = tuple(SPECS)

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


# ======================================================================================
# validation
# ======================================================================================

def _pair(value, kind, where: str, key: str, positive: bool = True) -> tuple:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float) if kind is float else int) and not isinstance(v, bool) for v in value)
    if not ok or (positive and any(v <= 0 for v in value)):
        what = "positive integers" if kind is int else "positive numbers"
        raise StudyError(where, key, f"expected a list of two {what}, e.g. [512, 512]; got {value!r}.")
    return tuple(kind(v) for v in value)


def validate_real_data(raw: dict, where: str, prefix: str = "data.", base: RealDataSpec | None = None,
                       check_layout: bool = True) -> RealDataSpec:
    """Parse a study's ``data:`` mapping for a real dataset into its frozen spec.

    ``raw`` must name the dataset (``name: voc | cityscapes | ade20k``) unless ``base`` is given
    (then ``raw`` overrides ``base``'s fields). Unknown keys, wrong types, impossible values and,
    with ``check_layout``, a missing ``data_root`` or a malformed layout on disk raise
    :class:`StudyError` naming the file ``where`` and the key ``prefix + field``.
    """
    if not isinstance(raw, dict):
        raise StudyError(where, prefix.rstrip("."), f"expected a mapping, got {raw!r}.")
    raw = dict(raw)
    name = raw.pop("name", base.name if base is not None else None)
    if name not in SPECS:
        raise StudyError(where, prefix + "name", f"unknown real dataset {name!r}; valid: {', '.join(REAL_DATASETS)}.")
    cls = SPECS[name]
    if base is None or base.name != name:
        base = cls()
    allowed = [f.name for f in fields(cls) if f.name != "name"]
    for k in raw:
        if k not in allowed:
            raise StudyError(where, prefix + k, f"unknown key for dataset {name!r}; valid keys here are: name, "
                             f"{', '.join(allowed)}.")
    values = {}
    for k, v in raw.items():
        key = prefix + k
        default = getattr(base, k)
        if k in ("crop_size", "scale"):
            v = _pair(v, int, where, key)
        elif k == "ratio_range":
            v = _pair(v, float, where, key)
            if v[0] > v[1]:
                raise StudyError(where, key, f"expected [low, high] with low <= high, got {list(v)!r}.")
        elif k == "aug":
            v = {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
            if v not in ("auto", "on", "off"):
                raise StudyError(where, key, f"expected auto, on (true) or off (false), got {v!r}.")
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise StudyError(where, key, f"expected true or false, got {v!r}.")
        elif isinstance(default, int):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise StudyError(where, key, f"expected an integer >= 0, got {v!r}.")
        elif isinstance(default, float):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise StudyError(where, key, f"expected a number >= 0, got {v!r}.")
            v = float(v)
            if k in ("cat_max_ratio", "flip_prob") and not (0.0 <= v <= 1.0 and (k != "cat_max_ratio" or v > 0)):
                raise StudyError(where, key, f"{v!r} is out of range: it must lie in "
                                 f"{'(0, 1]' if k == 'cat_max_ratio' else '[0, 1]'}.")
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise StudyError(where, key, f"expected a string, got {v!r}.")
        values[k] = v
    spec = replace(base, **values)
    if not spec.data_root:
        raise StudyError(where, prefix + "data_root", f"missing; give the folder that holds the {name} data in its "
                         f"standard layout: {expected_layout(name)}.")
    if check_layout:
        resolve_layout(spec, where, prefix)
    return spec


def spec_from_dict(d: dict) -> RealDataSpec:
    """The spec back from ``RealDataSpec.as_dict()`` (a trial config); no disk access."""
    return validate_real_data(dict(d), "trial config", "data.", check_layout=False)


def is_real(data: dict | object) -> bool:
    """True if ``data`` (a ``data:`` mapping or a spec) names a real dataset."""
    name = data.get("name") if isinstance(data, dict) else getattr(data, "name", None)
    return name in SPECS


# ======================================================================================
# layout on disk
# ======================================================================================

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


def _voc_layout(spec: VOCSpec, where: str, prefix: str) -> Layout:
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


def _cityscapes_layout(spec: CityscapesSpec, where: str, prefix: str) -> Layout:
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


def _ade_layout(spec: ADE20KSpec, where: str, prefix: str) -> Layout:
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


# ======================================================================================
# mmseg datasets and loaders
# ======================================================================================

def _import_mmseg():
    """mmseg's dataset classes and transforms (installs the mmcv.ops stand-in first)."""
    from ..compat import install_mmcv_ops

    install_mmcv_ops()
    with warnings.catch_warnings():  # mmcv-lite: "Fail to import MultiScaleDeformableAttention"
        warnings.simplefilter("ignore")
        import mmseg.datasets as datasets
        import mmseg.datasets.transforms as T
        from mmcv.transforms import LoadImageFromFile, RandomResize
    return datasets, T, LoadImageFromFile, RandomResize


def _pipelines(spec: RealDataSpec):
    _, T, LoadImageFromFile, RandomResize = _import_mmseg()
    train = [
        LoadImageFromFile(),
        T.LoadAnnotations(),  # reduce_zero_label comes from the dataset (ADE20K: on)
        RandomResize(scale=spec.scale, ratio_range=spec.ratio_range, keep_ratio=True),
        T.RandomCrop(crop_size=spec.crop_size, cat_max_ratio=spec.cat_max_ratio, ignore_index=IGNORE_INDEX),
        T.RandomFlip(prob=spec.flip_prob),
    ]
    if spec.photometric:
        train.append(T.PhotoMetricDistortion())
    train.append(T.PackSegInputs())
    val = [LoadImageFromFile(), T.Resize(scale=spec.scale, keep_ratio=True), T.LoadAnnotations(), T.PackSegInputs()]
    return train, val


def _mmseg_dataset(spec: RealDataSpec, part: Part, pipeline, limit: int, test_mode: bool):
    datasets = _import_mmseg()[0]
    cls = {"voc": datasets.PascalVOCDataset, "cityscapes": datasets.CityscapesDataset,
           "ade20k": datasets.ADE20KDataset}[spec.name]
    kw = dict(data_prefix=dict(img_path=part.img_dir, seg_map_path=part.seg_dir), pipeline=pipeline,
              test_mode=test_mode, ignore_index=IGNORE_INDEX)
    if part.ann_file:
        kw["ann_file"] = part.ann_file
    if limit:
        kw["indices"] = min(limit, part.count)
    return cls(**kw)


def _to_model_input(img: torch.Tensor) -> torch.Tensor:
    """uint8 BGR (3, H, W) from mmcv -> float RGB normalised with the ImageNet mean/std."""
    x = img.flip(0).float()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def _label(sample) -> torch.Tensor:
    return sample["data_samples"].gt_sem_seg.data[0].long()


def collate_train(batch: list, crop_size: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and pad every sample bottom/right to ``crop_size`` (image 0, label 255)."""
    h, w = crop_size
    x = torch.zeros(len(batch), 3, h, w)
    y = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(batch):
        img, lab = _to_model_input(s["inputs"]), _label(s)
        ih, iw = img.shape[-2:]
        if ih > h or iw > w:
            raise ValueError(f"training sample of {ih}x{iw} exceeds the crop {h}x{w}")
        x[i, :, :ih, :iw] = img
        y[i, :lab.shape[0], :lab.shape[1]] = lab
    return x, y


def collate_val(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch size 1: the resized image and its label at the original resolution."""
    if len(batch) != 1:
        raise ValueError("validation batches hold one image (images differ in size)")
    s = batch[0]
    return _to_model_input(s["inputs"])[None], _label(s)[None]


def resize_logits_to(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bilinear-resize (B, C, h, w) logits to the labels' (H, W), as mmseg does before scoring."""
    if logits.shape[-2:] == labels.shape[-2:]:
        return logits
    return F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)


def _seed_worker(worker_id: int) -> None:
    """mmcv's random transforms draw from numpy's and Python's global generators: seed both per worker."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


class RealDatasets(NamedTuple):
    train: torch.utils.data.Dataset  # items: mmseg's packed dicts (inputs, data_samples)
    val: torch.utils.data.Dataset
    num_classes: int
    class_names: tuple


class RealData(NamedTuple):
    train: DataLoader
    val: DataLoader
    num_classes: int
    class_names: tuple


def build_real_datasets(spec: RealDataSpec, where: str = "data config") -> RealDatasets:
    """mmseg's datasets of ``spec`` with the training / validation pipelines, and the class names.

    VOC with the SBD set: the concatenation of ``train.txt`` (SegmentationClass) and ``aug.txt``
    (SegmentationClassAug). ``train_images`` / ``val_images`` keep the first N images.
    """
    layout = resolve_layout(spec, where)
    train_pipe, val_pipe = _pipelines(spec)
    parts = [_mmseg_dataset(spec, p, train_pipe, 0, False) for p in layout.train]
    train = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if spec.train_images:
        train = torch.utils.data.Subset(train, range(min(spec.train_images, len(train))))
    val = _mmseg_dataset(spec, layout.val[0], val_pipe, spec.val_images, True)
    classes = tuple(val.metainfo["classes"])
    return RealDatasets(train, val, len(classes), classes)


def _loader_kwargs(spec: RealDataSpec, num_workers: int | None) -> dict:
    workers = spec.num_workers if num_workers is None else num_workers
    return dict(num_workers=workers, worker_init_fn=_seed_worker if workers else None,
                persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def train_loader(spec: RealDataSpec, dataset, batch_size: int = 8, seed: int = 0, batch_sampler=None,
                 num_workers: int | None = None) -> DataLoader:
    """Training batches (B, 3, crop_h, crop_w) float / (B, crop_h, crop_w) long.

    Without ``batch_sampler``: shuffled by a generator seeded with ``seed``, ``batch_size`` per
    batch, the last incomplete batch dropped when the split holds a full one (BatchNorm needs
    more than one sample). A ``batch_sampler`` (e.g. one rank's slice of each global batch
    under DDP) replaces all of that.
    """
    collate = functools.partial(collate_train, crop_size=spec.crop_size)
    kw = _loader_kwargs(spec, num_workers)
    if batch_sampler is not None:
        # the generator only seeds the loader's worker processes (their augmentation draws), from
        # the trial's own stream, so cells with and without dropout draw the same augmentations
        gen = torch.Generator().manual_seed(derive(seed, "augment"))
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, generator=gen, **kw)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                      drop_last=len(dataset) >= batch_size, collate_fn=collate, **kw)


def val_loader(spec: RealDataSpec, dataset, sampler=None, num_workers: int | None = None) -> DataLoader:
    """Validation batches of one image, in order (or in ``sampler``'s order: a rank's shard)."""
    return DataLoader(dataset, batch_size=1, shuffle=False, sampler=sampler, collate_fn=collate_val,
                      **_loader_kwargs(spec, num_workers))


def build_real_data(spec: RealDataSpec, batch_size: int = 8, seed: int = 0, num_workers: int | None = None,
                    where: str = "data config") -> RealData:
    """Single-process training and validation loaders of ``spec`` plus the class count and names
    (see :func:`train_loader` and :func:`val_loader`; ``num_workers`` defaults to the spec's)."""
    sets = build_real_datasets(spec, where)
    return RealData(train_loader(spec, sets.train, batch_size, seed, num_workers=num_workers),
                    val_loader(spec, sets.val, num_workers=num_workers), sets.num_classes, sets.class_names)


__all__ = ["ADE20KSpec", "CityscapesSpec", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "REAL_DATASETS", "RealData",
           "RealDataSpec", "RealDatasets", "SPECS", "VOCSpec", "build_real_data", "build_real_datasets", "collate_train",
           "collate_val", "expected_layout", "is_real", "resize_logits_to", "resolve_layout", "spec_from_dict",
           "train_loader", "val_loader", "validate_real_data"]
