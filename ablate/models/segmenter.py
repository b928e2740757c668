"""Backbone + attention block + head, and the LightningModule that trains it.

The backbone is ``small_cnn`` (the synthetic task's) or ``resnet_d8`` (the papers' dilated
ResNet, ``ablate/models/resnet.py``). ``head`` (``model.head`` of a study) optionally puts a 3x3
conv to ``channels`` before the attention block and adds mmseg's auxiliary FCN head on ResNet
stage 3; with the defaults the model is exactly backbone -> block -> dropout + 1x1 classifier.
"""
from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassJaccardIndex

from ..attention import get_preset
from ..data.real import resize_logits_to
from ..data.synthetic import IGNORE_INDEX
from .backbone import BACKBONES as _SMALL, SmallCNN, conv_bn_relu
from .resnet import BACKBONES as _RESNET

BACKBONES = {**_SMALL, **_RESNET}
AUX_CHANNELS = 256  # mmseg's auxiliary FCNHead on a ResNet-D8: 1024 -> 256 -> classes


def build_backbone(spec: dict) -> nn.Module:
    bb = dict(spec)
    return BACKBONES[bb.pop("name")](**bb)


def feature_geometry(backbone: dict, head: dict | None = None) -> tuple[int, int]:
    """(channels the attention block sees, the backbone's output stride), without building
    anything (a ResNet would load its weights)."""
    if backbone["name"] == "resnet_d8":
        channels, stride = (2048 if backbone["depth"] >= 50 else 512), 8
    else:
        channels, stride = backbone["width"], SmallCNN.stride
    return (head or {}).get("channels") or channels, stride


def feature_side(side: int, stride: int) -> int:
    """The feature map's side for an input side (the backbones' stride-2 convs round up)."""
    return -(-side // stride)


class Segmenter(nn.Module):
    """features = backbone(x); [features = reduce(features)]; features = attention(features);
    logits = head(features), upsampled to the input. ``head`` (optional): ``channels`` > 0 adds
    ``reduce`` (3x3 conv + BN + ReLU to that width); ``aux_weight`` > 0 adds ``aux_head`` on
    ResNet stage 3, whose logits :meth:`forward_train` also returns."""

    def __init__(self, num_classes: int, backbone: dict, mechanism: str, mechanism_args: dict,
                 head: dict | None = None):
        super().__init__()
        head = head or {}
        self.backbone = build_backbone(backbone)
        c = self.backbone.out_channels
        self.reduce = None
        if head.get("channels"):
            self.reduce = conv_bn_relu(c, head["channels"])
            c = head["channels"]
        self.attention_channels = c
        self.attention = get_preset(mechanism).build(c, **mechanism_args)
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(c, num_classes, kernel_size=1))
        self.aux_head = None
        if head.get("aux_weight"):
            if not hasattr(self.backbone, "forward_stages"):
                raise ValueError(f"an auxiliary head needs a backbone with stages (resnet_d8), not {backbone['name']}")
            self.aux_head = nn.Sequential(conv_bn_relu(self.backbone.aux_channels, AUX_CHANNELS), nn.Dropout2d(0.1),
                                          nn.Conv2d(AUX_CHANNELS, num_classes, kernel_size=1))

    def _logits(self, f: torch.Tensor, size) -> torch.Tensor:
        if self.reduce is not None:
            f = self.reduce(f)
        f = self.attention(f)
        return F.interpolate(self.head(f), size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.backbone(x), x.shape[-2:])

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits or None), both at the input's size."""
        if self.aux_head is None:
            return self(x), None
        c3, c4 = self.backbone.forward_stages(x)
        aux = F.interpolate(self.aux_head(c3), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self._logits(c4, x.shape[-2:]), aux


class SegmentationModule(L.LightningModule):
    """Cross-entropy with an ignore index; val mIoU and per-class IoU from torchmetrics.

    ``compute_seconds`` accumulates the wall time of forward, backward and optimiser steps
    (training) and of validation forwards, so the harness can report its own overhead.

    Under DDP the metrics' ``compute()`` sums the confusion matrices over ranks (torchmetrics'
    sync on compute), so ``history`` holds the whole validation set's IoU on every rank; the
    logged losses are averaged over ranks (``sync_dist``). ``compute_seconds`` is this rank's
    own time (its steps include waiting for the gradient all-reduce).

    Validation scores at the label's resolution: real datasets keep the label at its original
    size while the image is resized, so the logits are resized to the label first (mmseg's
    protocol); on the synthetic task the two already agree.

    ``optimizer``: ``adamw`` or ``sgd`` (with ``momentum``); ``schedule``: ``onecycle`` (15%
    warm-up) or ``poly`` (mmseg's PolyLR with ``poly_power`` and floor ``min_lr``), both stepped
    every optimiser step over Lightning's estimate of the run's steps.
    """

    def __init__(self, num_classes: int, backbone: dict, mechanism: str, mechanism_args: dict,
                 lr: float = 3e-3, weight_decay: float = 1e-4, epochs: int = 10,
                 ignore_index: int = IGNORE_INDEX, head: dict | None = None, optimizer: str = "adamw",
                 momentum: float = 0.9, schedule: str = "onecycle", poly_power: float = 0.9, min_lr: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.model = Segmenter(num_classes, backbone, mechanism, mechanism_args, head)
        self.aux_weight = float((head or {}).get("aux_weight") or 0.0)
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
        logits, aux = self.model.forward_train(x)
        loss = F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index)
        if aux is not None:
            loss = loss + self.aux_weight * F.cross_entropy(aux, y, ignore_index=self.hparams.ignore_index)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = resize_logits_to(self(x), y)
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
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.schedule == "poly":  # mmseg's PolyLR: (lr - min_lr) * (1 - step / total) ** power + min_lr
            floor, steps = hp.min_lr / hp.lr, max(1, int(total))
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: (1 - floor) * (1 - min(step, steps) / steps) ** hp.poly_power + floor)
        else:
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=total, pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
