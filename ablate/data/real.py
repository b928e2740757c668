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
raising :class:`~ablate.config.errors.StudyError`) and :func:`build_real_data` (single-process loaders,
class count and names), or, for a trainer with its own samplers (DDP),
:func:`build_real_datasets` with :func:`train_loader` / :func:`val_loader`. mmsegmentation is
imported only when datasets are built.

The code lives in three modules, re-exported here: :mod:`~ablate.data.real_spec` (the specs and
the study-file check), :mod:`~ablate.data.real_layout` (the layouts on disk) and
:mod:`~ablate.data.real_loaders` (mmseg's datasets, the collate functions and the loaders).
"""
from __future__ import annotations

from .real_layout import Layout, Part, expected_layout, resolve_layout
from .real_loaders import (RealData, RealDatasets, build_real_data, build_real_datasets, collate_train, collate_val,
                           import_mmseg, resize_logits_to, train_loader, val_loader)
from .real_spec import (IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, REAL_DATASETS, SPECS, ADE20KSpec, CityscapesSpec,
                        RealDataSpec, VOCSpec, is_real, spec_from_dict, validate_real_data)

_import_mmseg = import_mmseg  # the name tests and older callers use

__all__ = ["ADE20KSpec", "CityscapesSpec", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "Layout", "Part",
           "REAL_DATASETS", "RealData", "RealDataSpec", "RealDatasets", "SPECS", "VOCSpec", "build_real_data",
           "build_real_datasets", "collate_train", "collate_val", "expected_layout", "import_mmseg", "is_real",
           "resize_logits_to", "resolve_layout", "spec_from_dict", "train_loader", "val_loader", "validate_real_data"]
