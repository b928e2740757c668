"""Train and validate one trial from its resolved configuration.

One process (the default: ``trainer: {devices: 1, strategy: auto}``) trains in the calling
worker. Anything else (``devices: 2``, ``strategy: ddp``) runs in a fresh process,
``python -m ablate.trainer JOB.json``, because Lightning's DDP launcher starts the other ranks
by re-running the current command: re-running ``python -m ablate.run`` would start more
workers. The worker keeps owning the trial: rank 0 of the trial process sends each epoch's val
mIoU to the worker over a pipe and waits for its answer (continue or prune), then sends the
result; the worker alone writes the trial's record in storage.

Under DDP ``train.batch_size`` is the global batch. Every rank draws the same permutation as a
single process would (the same seeded ``RandomSampler``) and takes its slice of each batch, so
the union of the ranks' batches is the single process's batch, step by step. Validation is
split into disjoint shards (no padding duplicates) and torchmetrics sums the confusion
matrices over ranks, so val mIoU is that of the whole validation set.

Real datasets (``data.name: voc | cityscapes | ade20k``) are read through mmseg's dataset
classes (``ablate/data/real.py``) with the same per-rank slicing of a seeded global batch order;
validation is one image per batch at its original label resolution, in disjoint shards. With
``train.iterations`` the trial runs that many optimiser steps and validates every
``val_interval`` steps: each validation is one "epoch" for the worker (progress, pruning).

Besides the curve, a result holds ``image_counts`` (the last validation's per-image
intersection and union counts per class, every rank's images in order: ``ablate/models/image_counts.py``),
``seed_streams`` (1: backbone, block, head and training each start from a seed stream of their
own, so seed s of every cell shares the shared parts' initialisation: ``ablate/config/seeds.py``) and,
on the synthetic ``global_cue`` task, ``cue_mass`` (per validation, the attention mass on the
cue, None for a block without a map over positions: ``ablate/trainer/probes.py``).

A trial saves a checkpoint every ``train.checkpoint_every`` validations into its folder and
resumes from the newest one when an earlier attempt of it died (``ablate/trainer/checkpoints.py``).
The fit itself is ``ablate/trainer/fit.py``, the trial in its own process
``ablate/trainer/process.py``, the data modules ``ablate/data/lightning.py``.
"""
from __future__ import annotations

from typing import Callable

from .fit import (
    EpochHook,
    HarnessFailed,
    TrialFailed,
    attention_params,
    failure_kind,
    fit,
    quiet_libraries,
    wandb_summary,
)
from .process import run_isolated
from ..config.trial import TrialConfig


def is_isolated(config: TrialConfig | dict) -> bool:
    """Whether this trial runs in a process of its own (DDP, or any strategy but auto)."""
    return TrialConfig.of(config).trainer.isolated


def run_trial(config: TrialConfig | dict, on_epoch: Callable[[int, float], bool | None] = lambda e, m: None,
              logger=None, threads: int | None = None, wandb: dict | None = None) -> dict:
    """Train one trial; return its metrics. Deterministic for a given config and thread count.

    ``threads`` is torch's intra-op thread count unless the config's ``train.threads`` sets one
    (it is part of the cell key: the study's value wins over the runner's default or --threads).
    ``on_epoch(epoch, val_miou)`` is called after every validation epoch (0-based epoch index);
    a True answer stops the trial there (pruned: the result has ``pruned_epoch``). ``logger``
    is a Lightning logger for an in-process trial; ``wandb`` (``make_logger``'s arguments) asks
    a trial that runs in its own process to create its W&B run on rank 0. ``config``: the study's
    :class:`~ablate.config.trial.TrialConfig`, or its stored dict form (read with the records' defaults).

    Mid-trial checkpoints (:mod:`ablate.trainer.checkpoints`) travel on ``on_epoch``, the worker's hook
    for the trial: its ``checkpoint_dir`` attribute (absent or None: none) is the trial's folder,
    resumed from when it holds a checkpoint, and its ``on_resume(info, curve)`` is told where from.
    """
    config = TrialConfig.of(config)
    threads = config.train.threads or threads  # the study's train.threads wins
    folder, on_resume = getattr(on_epoch, "checkpoint_dir", None), getattr(on_epoch, "on_resume", None)
    if config.trainer.isolated:
        return run_isolated(config, on_epoch, threads, wandb, folder, on_resume)
    return fit(config, on_epoch, logger, threads, folder, on_resume)
