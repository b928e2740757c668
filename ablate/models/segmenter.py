"""Backbone + attention block + head, and the LightningModule that trains it.

The backbone is ``small_cnn`` (the synthetic task's), ``resnet_d8`` (the papers' dilated
ResNet, ``ablate/models/resnet.py``), both in the one registry :mod:`ablate.models.registry`, or a
plugin's (``module:attr``, :mod:`ablate.plugins`).
``head`` (``model.head`` of a study) optionally puts a 3x3 conv to ``channels`` before the
attention block and adds mmseg's auxiliary FCN head on ResNet stage 3; with the defaults the
model is exactly backbone -> block -> dropout + 1x1 classifier, its logits resized bilinearly to
the input. ``upsample: carafe`` instead runs CARAFE x2 stages on the features before the
dropout and classifier (:mod:`ablate.attention.carafe`). ``style: mmseg`` instead wraps the
block in the convolutions of mmseg's decode head for the mechanism (:mod:`ablate.models.mmseg_heads`).

Given the trial ``seed``, each part is built from its own seed stream (``ablate/config/seeds.py``), so
the backbone, ``reduce`` and head of seed s start from the same weights whatever the block.
"""
from __future__ import annotations

import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.utilities import dim_zero_cat

from ..attention import get_preset
from ..data.real import resize_logits_to
from ..data.synthetic import IGNORE_INDEX
from ..config.evaluation import EvalSpec
from .inference import evaluate
from .image_counts import confusion_counts
from ..plugins.mechanisms import build_backbone as build_plugin_backbone, is_spec
from ..config.seeds import reseed
from ..config.trial import HeadSpec, TrainSpec
from . import registry
from .backbone import conv_bn_relu
from ..attention.carafe import UpsampleSpec, build_upsampler
from .mmseg_heads import build_head, check_style
from .geometry import as_head, feature_geometry, feature_side  # noqa: F401 - re-exported

AUX_CHANNELS = 256  # mmseg's auxiliary FCNHead on a ResNet-D8: 1024 -> 256 -> classes


def build_backbone(spec: dict) -> nn.Module:
    """A backbone from its spec's dict: a plugin's, or a built-in one (:mod:`ablate.models.registry`)."""
    return build_plugin_backbone(spec) if is_spec(spec["name"]) else registry.build(spec)


class Segmenter(nn.Module):
    """features = backbone(x); [features = reduce(features)]; features = attention(features);
    logits = head(features), upsampled to the input. ``head`` (optional): ``channels`` > 0 adds
    ``reduce`` (3x3 conv + BN + ReLU to that width); ``aux_weight`` > 0 adds ``aux_head`` on
    ResNet stage 3, whose logits :meth:`forward_train` also returns. ``style: mmseg``: ``head`` is
    an :class:`~ablate.models.mmseg_heads.MMSegHead` that runs ``attention`` between its convs (its
    ``channels`` the head's width; no ``reduce``). ``upsample: carafe`` adds ``upsample``, CARAFE
    stages that bring the classifier's input to the input's resolution (log2 of the backbone's
    stride of them; :mod:`ablate.attention.carafe`); the auxiliary head's logits stay bilinear.

    ``seed`` (the trial seed): reseed the generators with the part's own stream before building
    each part (``backbone``, ``reduce``, ``attention``, ``head``, ``aux_head``, ``upsample``) and with the
    ``train`` stream after the last; None keeps whatever state the generators are in."""

    def __init__(self, num_classes: int, backbone: dict, mechanism: str, mechanism_args: dict,
                 head: HeadSpec | dict | None = None, seed: int | None = None):
        super().__init__()
        head = as_head(head)

        def stream(name: str) -> None:
            if seed is not None:
                reseed(seed, name)

        stream("backbone")
        self.backbone = build_backbone(backbone)
        c = self.backbone.out_channels
        self.reduce = None
        self.mmseg = head.style == "mmseg"  # the block inside mmseg's decode-head convs (mmseg_heads.py)
        if head.channels and not self.mmseg:
            stream("reduce")
            self.reduce = conv_bn_relu(c, head.channels)
        in_channels, c = c, head.channels or c
        self.attention_channels = c
        stream("attention")
        preset = get_preset(mechanism)
        self.attention = preset.build(c, **mechanism_args)
        stream("head")
        if self.mmseg:
            refused = check_style(preset, mechanism_args)
            if refused:
                raise ValueError(refused)
            self.head = build_head(preset, in_channels, c, num_classes)
        else:
            self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(c, num_classes, kernel_size=1))
        self.upsample = None  # bilinear: no module (a model without it has the state dict it always had)
        up = UpsampleSpec.of(head)
        if up.upsample != "bilinear" or up.problem():  # (a bad setting is refused here either way)
            stream("upsample")
            self.upsample = build_upsampler(up, c, feature_geometry(backbone)[1])
        self.aux_head, self.aux_weight = None, float(head.aux_weight)
        if head.aux_weight:
            if not hasattr(self.backbone, "forward_stages"):
                raise ValueError(f"an auxiliary head needs a backbone with stages (resnet_d8), not {backbone['name']}")
            stream("aux_head")
            self.aux_head = nn.Sequential(conv_bn_relu(self.backbone.aux_channels, AUX_CHANNELS), nn.Dropout2d(0.1),
                                          nn.Conv2d(AUX_CHANNELS, num_classes, kernel_size=1))
        stream("train")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the attention block sees: backbone features, through ``reduce`` (or the mmseg
        head's conv before the block) when present."""
        f = self.backbone(x)
        if self.mmseg:
            return self.head.block_input(f)
        return f if self.reduce is None else self.reduce(f)

    def _logits(self, f: torch.Tensor, size) -> torch.Tensor:
        if self.mmseg:
            logits = self.head(f, self.attention, self.upsample)
        else:
            if self.reduce is not None:
                f = self.reduce(f)
            f = self.attention(f)
            logits = self.head(f if self.upsample is None else self.upsample(f))
        return self._up(logits, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(self.backbone(x), x.shape[-2:])

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[float, torch.Tensor]]]:
        """(logits, [(loss weight, further logits), ...]), all at the input's size: the auxiliary
        FCN head's (``aux_weight``) and an mmseg head's own training outputs (DAHead's branches, 1)."""
        size, extras = x.shape[-2:], []
        if self.aux_head is None:
            f = self.backbone(x)
        else:
            c3, f = self.backbone.forward_stages(x)
            extras.append((self.aux_weight, self._up(self.aux_head(c3), size)))
        if not self.mmseg:
            return self._logits(f, size), extras
        logits, more = self.head.forward_all(f, self.attention, self.upsample)
        return self._up(logits, size), extras + [(1.0, self._up(m, size)) for m in more]

    @staticmethod
    def _up(logits: torch.Tensor, size) -> torch.Tensor:
        """``logits`` resized bilinearly to ``size`` (as they are when CARAFE already brought them there)."""
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def loss(self, x: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """The training loss: cross-entropy of the logits plus each further output's, weighted."""
        logits, extras = self.forward_train(x)
        loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
        for weight, more in extras:
            loss = loss + weight * F.cross_entropy(more, y, ignore_index=ignore_index)
        return loss


class ImageCounts(Metric):
    """Per-image (intersection, union) pixel counts per class, rows (B, 2, C) concatenated over
    batches and, under DDP, over ranks in rank order. The trainer gives each rank a contiguous
    shard of the validation set in order (``ablate/trainer/trial.py``), so the rows are in the split's
    image order. Integer states: the counts are exact (torchmetrics' CatMetric casts to float)."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int):
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        inter, union = confusion_counts(pred, target, self.num_classes, self.ignore_index)
        self.rows.append(torch.stack([inter, union], dim=1))

    def compute(self) -> torch.Tensor:
        rows = self.rows  # a list of batches; after a DDP sync, one tensor already concatenated
        if isinstance(rows, list):
            return dim_zero_cat(rows) if rows else torch.zeros(0, 2, self.num_classes, dtype=torch.long)
        return rows


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

    ``image_counts`` holds the last validation epoch's per-image (intersection, union) counts,
    (n_images, 2, C) int64 over every rank (:class:`ImageCounts`). ``probe`` (optional): a
    callable ``probe(model) -> float | None`` run once after each validation epoch (in eval mode,
    without gradients); its value goes to the epoch's ``history`` entry as ``cue_mass``.
    ``seed``: the trial seed, for :class:`Segmenter`'s seed streams. ``evaluation``: the study's
    ``eval:`` (an :class:`~ablate.config.evaluation.EvalSpec` or its dict; None: whole image), which every
    validation uses: sliding windows and multi-scale + flip as mmseg's test time (with views
    averaged, the loss is the cross-entropy of the averaged prediction).
    """

    def __init__(self, num_classes: int, backbone: dict, mechanism: str, mechanism_args: dict,
                 lr: float = TrainSpec.lr, weight_decay: float = TrainSpec.weight_decay,
                 epochs: int = TrainSpec.epochs, ignore_index: int = IGNORE_INDEX, head: dict | None = None,
                 optimizer: str = TrainSpec.optimizer, momentum: float = TrainSpec.momentum,
                 schedule: str = TrainSpec.schedule, poly_power: float = TrainSpec.poly_power,
                 min_lr: float = TrainSpec.min_lr, seed: int | None = None,
                 evaluation: EvalSpec | dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.eval_spec = EvalSpec.from_dict(evaluation)
        self.model = Segmenter(num_classes, backbone, mechanism, mechanism_args, head, seed=seed)
        self.miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)
        self.class_iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index)
        self.val_pixels = SumMetric()  # pixels scored (ignore_index excluded), over every rank
        self.val_image_counts = ImageCounts(num_classes, ignore_index)
        self.image_counts: torch.Tensor | None = None
        self.probe = None
        self.compute_seconds = 0.0
        self._t0 = 0.0
        self.history: list[dict] = []

    def forward(self, x):
        return self.model(x)

    def on_fit_start(self):
        """Training's draws (dropout, augmentations) start from the ``train`` stream. Again here,
        not only after building: Lightning's DDP setup reseeds every rank with the trial seed."""
        if self.hparams.seed is not None:
            reseed(self.hparams.seed, "train")

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
        loss = self.model.loss(x, y, self.hparams.ignore_index)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if self.eval_spec == EvalSpec():
            logits = resize_logits_to(self(x), y)
        else:  # windows / views, at the label's size (ablate/models/inference.py)
            logits = evaluate(self, x, self.hparams.num_classes, self.eval_spec, out_size=tuple(y.shape[-2:]))
        loss = F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index)
        pred = logits.argmax(1)
        self.miou.update(pred, y)
        self.class_iou.update(pred, y)
        self.val_pixels.update((y != self.hparams.ignore_index).sum())
        self.val_image_counts.update(pred, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self):
        miou = self.miou.compute()
        per_class = self.class_iou.compute()
        pixels = self.val_pixels.compute()
        counts = self.val_image_counts.compute()
        for metric in (self.miou, self.class_iou, self.val_pixels, self.val_image_counts):
            metric.reset()
        self.log("val_miou", miou, sync_dist=True)  # already global: torchmetrics syncs on compute
        if not self.trainer.sanity_checking:
            self.image_counts = counts.detach().cpu()
            self.history.append({"epoch": self.current_epoch, "val_miou": float(miou),
                                 "class_iou": [float(v) for v in per_class], "val_pixels": int(pixels),
                                 "cue_mass": self._run_probe()})

    def _run_probe(self) -> float | None:
        """The probe's value, or None: a probe that fails is a measurement missing (with a
        warning), never the trial's failure."""
        if self.probe is None:
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.probe(self.model)
        except Exception as e:  # noqa: BLE001 - see the docstring
            warnings.warn(f"cue probe failed, cue_mass recorded as None: {type(e).__name__}: {e}", stacklevel=2)
            return None
        finally:
            self.model.train(was_training)

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
