"""Backbone + attention block + head, and the LightningModule that trains it."""
from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassJaccardIndex

from ..attention import get_preset
from ..data.synthetic import IGNORE_INDEX
from .backbone import BACKBONES


class Segmenter(nn.Module):
    """features = backbone(x); features = attention(features); logits = head(features), upsampled."""

    def __init__(self, num_classes: int, backbone: dict, mechanism: str, mechanism_args: dict):
        super().__init__()
        bb = dict(backbone)
        self.backbone = BACKBONES[bb.pop("name")](**bb)
        c = self.backbone.out_channels
        self.attention = get_preset(mechanism).build(c, **mechanism_args)
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(c, num_classes, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.attention(self.backbone(x))
        return F.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationModule(L.LightningModule):
    """Cross-entropy with an ignore index; val mIoU and per-class IoU from torchmetrics.

    ``compute_seconds`` accumulates the wall time of forward, backward and optimiser steps
    (training) and of validation forwards, so the harness can report its own overhead.

    Under DDP the metrics' ``compute()`` sums the confusion matrices over ranks (torchmetrics'
    sync on compute), so ``history`` holds the whole validation set's IoU on every rank; the
    logged losses are averaged over ranks (``sync_dist``). ``compute_seconds`` is this rank's
    own time (its steps include waiting for the gradient all-reduce).
    """

    def __init__(self, num_classes: int, backbone: dict, mechanism: str, mechanism_args: dict,
                 lr: float = 3e-3, weight_decay: float = 1e-4, epochs: int = 10,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.save_hyperparameters()
        self.model = Segmenter(num_classes, backbone, mechanism, mechanism_args)
        self.miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)
        self.class_iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index)
        self.val_pixels = SumMetric()  # pixels scored (ignore_index excluded), over every rank
        self.compute_seconds = 0.0
        self._t0 = 0.0
        self.history: list[dict] = []

    def forward(self, x):
        return self.model(x)

    # --- timing of the work that is not harness -------------------------------------------
    def on_train_batch_start(self, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.compute_seconds += time.perf_counter() - self._t0

    def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self._t0 = time.perf_counter()

    def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        self.compute_seconds += time.perf_counter() - self._t0

    # --- steps ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, ignore_index=self.hparams.ignore_index)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index)
        pred = logits.argmax(1)
        self.miou.update(pred, y)
        self.class_iou.update(pred, y)
        self.val_pixels.update((y != self.hparams.ignore_index).sum())
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self):
        miou = self.miou.compute()
        per_class = self.class_iou.compute()
        pixels = self.val_pixels.compute()
        self.miou.reset()
        self.class_iou.reset()
        self.val_pixels.reset()
        self.log("val_miou", miou, sync_dist=True)  # already global: torchmetrics syncs on compute
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "val_miou": float(miou),
                                 "class_iou": [float(v) for v in per_class], "val_pixels": int(pixels)})

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
