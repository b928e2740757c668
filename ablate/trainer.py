"""Train and validate one trial from its resolved configuration."""
from __future__ import annotations

import functools
import logging
import math
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from .costs import forward_flops
from .data.synthetic import SceneConfig, make_split, num_classes
from .models.segmenter import SegmentationModule


def quiet_libraries() -> None:
    """Keep the terminal to ablate's own progress lines: Lightning's banners and tips, and
    known-harmless deprecation warnings from dependencies, are not for the user."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class TrialFailed(Exception):
    """A trial that cannot finish for a reason of its own (NaN loss, out of memory)."""


@functools.lru_cache(maxsize=4)
def _dataset(cfg: SceneConfig):
    """Generated once per worker process and configuration."""
    return make_split(cfg, "train"), make_split(cfg, "val")


class _EpochHook(Callback):
    def __init__(self, on_epoch: Callable[[int, float], None]):
        self.on_epoch = on_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise TrialFailed(f"non-finite training loss ({float(loss)}) at epoch {trainer.current_epoch}, "
                              f"batch {batch_idx}")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and pl_module.history:
            self.on_epoch(trainer.current_epoch, pl_module.history[-1]["val_miou"])


def attention_params(module: SegmentationModule) -> int:
    return sum(p.numel() for p in module.model.attention.parameters())


def run_trial(config: dict, on_epoch: Callable[[int, float], None] = lambda e, m: None,
              logger=None, threads: int | None = None) -> dict:
    """Train one trial; return its metrics. Deterministic for a given config and thread count."""
    wall0 = time.perf_counter()
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    data = SceneConfig(**config["data"])
    (xt, yt), (xv, yv) = _dataset(data)
    seed = int(config["seed"])
    L.seed_everything(seed, workers=False, verbose=False)
    train = config["train"]
    module = SegmentationModule(num_classes(data.task), config["backbone"], config["mechanism"], config["args"],
                                lr=train["lr"], weight_decay=train["weight_decay"], epochs=train["epochs"])
    gen = torch.Generator().manual_seed(seed)
    # whole batches are sliced out of the in-memory tensors (no per-sample collation)
    train_dl = DataLoader(TensorDataset(xt, yt), batch_size=None, sampler=BatchSampler(
        RandomSampler(range(len(xt)), generator=gen), train["batch_size"], drop_last=False))
    val_dl = DataLoader(TensorDataset(xv, yv), batch_size=None, sampler=BatchSampler(
        SequentialSampler(range(len(xv))), max(64, train["batch_size"]), drop_last=False))
    trainer = L.Trainer(
        max_epochs=train["epochs"], accelerator="cpu", devices=1, logger=logger if logger is not None else False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        deterministic=True, num_sanity_val_steps=0, callbacks=[_EpochHook(on_epoch)],
        log_every_n_steps=max(1, math.ceil(len(xt) / train["batch_size"])))
    try:
        trainer.fit(module, train_dl, val_dl)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) and ignores further SIGINTs; give the runner
        # the KeyboardInterrupt back so it records the trial as interrupted and exits 130.
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    except torch.OutOfMemoryError as e:  # pragma: no cover - needs a GPU
        raise TrialFailed(f"out of memory: {e}") from None
    except RuntimeError as e:
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0]}") from None
        raise
    hist = module.history
    if not hist:
        raise TrialFailed("no validation epoch completed")
    curve = [h["val_miou"] for h in hist]
    metric = curve[-1] if config.get("metric", "val_miou") == "val_miou" else max(curve)
    return {
        "value": float(metric),
        "final_val_miou": curve[-1],
        "best_val_miou": max(curve),
        "curve": curve,
        "class_iou": hist[-1]["class_iou"],
        "attention_params": attention_params(module),
        "attention_flops": forward_flops(module.model.attention, (1, module.model.backbone.out_channels,
                                                                  data.size // module.model.backbone.stride,
                                                                  data.size // module.model.backbone.stride)),
        "total_params": sum(p.numel() for p in module.parameters()),
        "compute_s": module.compute_seconds,
        "train_s": time.perf_counter() - wall0,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
