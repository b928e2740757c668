"""The real datasets through mmsegmentation: its dataset classes with the papers' transform
pipelines, the collate functions (ImageNet normalisation, padding to the crop) and the loaders.
mmsegmentation is imported only when datasets are built. Re-exported by :mod:`ablate.data.real`."""
from __future__ import annotations

import functools
import random
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader

from ..config.seeds import derive
from .real_layout import Part, resolve_layout
from .real_spec import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, RealDataSpec


def import_mmseg():
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
    _, T, LoadImageFromFile, RandomResize = import_mmseg()
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
    datasets = import_mmseg()[0]
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
