"""The synthetic tasks as tensors: :func:`make_split` (a split's images and labels) and
:class:`SyntheticSegmentation` (a torch ``Dataset`` held in memory).

The tasks themselves (the generators, ``TASKS``, ``SceneConfig``, the class names) are in the torch-free
:mod:`ablate.data.synthetic_spec`, which a study reads when it loads without importing torch; they are
re-exported here, so ``ablate.data.synthetic`` stays the one import for training code.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .synthetic_spec import (CLASS_NAMES, IGNORE_INDEX, TASKS, SceneConfig, class_names,  # noqa: F401 (re-exported)
                             num_classes)


def make_split(cfg: SceneConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) float32 and labels (N, S, S) int64 of ``split`` ('train' or 'val')."""
    if cfg.task not in TASKS:
        raise KeyError(f"unknown synthetic task {cfg.task!r}; valid: {', '.join(TASKS)}")
    fn, _, _ = TASKS[cfg.task]
    count = {"train": cfg.train_images, "val": cfg.val_images}[split]
    # independent streams for train and val, both fixed by the config's seed alone
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1])
    pairs = [fn(rng, cfg) for _ in range(count)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    labels = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return images, labels


class SyntheticSegmentation(Dataset):
    """A generated split held in memory."""

    def __init__(self, cfg: SceneConfig, split: str):
        self.images, self.labels = make_split(cfg, split)
        self.num_classes = num_classes(cfg.task)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


__all__ = ["CLASS_NAMES", "IGNORE_INDEX", "TASKS", "SceneConfig", "SyntheticSegmentation", "class_names", "make_split",
           "num_classes"]
