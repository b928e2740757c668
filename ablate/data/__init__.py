"""Datasets: the embedded synthetic tasks (:mod:`.synthetic_spec`: the generators and ``TASKS``, torch-free;
:mod:`.synthetic`: their tensors and torch ``Dataset``), the real ones (PASCAL VOC, Cityscapes, ADE20K)
through mmsegmentation (:mod:`.real`: specs, layouts on disk, loaders), a synthetic task exported in a
dataset's layout (:mod:`.export`) and the Lightning data modules with a resumable data order
(:mod:`.lightning`).

The names below are imported on first use (PEP 562), so importing a torch-free module of this package
(``real_spec``, ``synthetic_spec``: what a study reads when it loads) does not import torch."""
from __future__ import annotations

from ..config.lazy import lazy_names

_LAZY = {"TASKS": ".synthetic_spec", "SceneConfig": ".synthetic_spec",
         "make_split": ".synthetic", "SyntheticSegmentation": ".synthetic"}

__all__ = ["TASKS", "SceneConfig", "make_split", "SyntheticSegmentation"]
__getattr__ = lazy_names(__name__, _LAZY)
