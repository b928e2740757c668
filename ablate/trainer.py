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
intersection and union counts per class, every rank's images in order: ``ablate/image_counts.py``),
``seed_streams`` (1: backbone, block, head and training each start from a seed stream of their
own, so seed s of every cell shares the shared parts' initialisation: ``ablate/seeds.py``) and,
on the synthetic ``global_cue`` task, ``cue_mass`` (per validation, the attention mass on the
cue, None for a block without a map over positions: ``ablate/probes.py``).
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler, TensorDataset

from .costs import forward_flops
from .data.real import build_real_datasets, is_real, spec_from_dict, train_loader, val_loader
from .data.synthetic import SceneConfig, make_split, num_classes
from .fingerprint import fingerprint
from .image_counts import ATTR as IMAGE_COUNTS, encode as encode_counts
from .models.resnet import PretrainedWeightsError
from .models.segmenter import SegmentationModule, feature_side
from .plugins import is_spec, task_data, task_spec_from_dict
from .probes import PROBE_IMAGES, make_cue_probe
from .seeds import SEED_STREAMS
from .trial_config import TrialConfig, fields_dict


def quiet_libraries() -> None:
    """Keep the terminal to ablate's own progress lines: Lightning's banners and tips, and
    known-harmless deprecation warnings from dependencies, are not for the user."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class TrialFailed(Exception):
    """A trial that cannot finish for a reason of its own (NaN loss, out of memory, an exception
    in the model's forward or backward): final, the next run does not repeat it."""


class HarnessFailed(Exception):
    """A trial stopped by the harness or its environment (tracking, storage, files, missing
    weights, a setting that validation should have refused): the next run tries it again."""


# code that is the harness's, not the trial's: an exception raised with one of these modules on
# its stack (W&B, the storage, our own runner) is the harness's even when it surfaces in a fit
_HARNESS_MODULES = ("wandb", "optuna", "sqlalchemy", "psycopg", "psycopg2", "pymysql", "lightning.pytorch.loggers",
                    "lightning.fabric.loggers", "ablate.run", "ablate.storage", "ablate.tracking")


def _from_harness(e: BaseException) -> bool:
    """Whether an exception raised during a fit came from the harness (I/O, tracking, storage)."""
    if isinstance(e, OSError):
        return True
    for frame, _ in traceback.walk_tb(e.__traceback__):
        name = frame.f_globals.get("__name__", "")
        if any(name == m or name.startswith(m + ".") for m in _HARNESS_MODULES):
            return True
    return False


def failure_kind(e: BaseException) -> str:
    """'error' (the trial's own, final) or 'harness' (retried by the next run) for an exception
    out of :func:`run_trial`. Outside the fit (building the model, data, logger) every failure is
    the harness's: it costs nothing to try again, and a final mark would keep a fixed setting
    from ever running (the cell key does not hold every setting)."""
    if isinstance(e, TrialFailed):
        return "error"
    return "harness"


@functools.lru_cache(maxsize=4)
def _dataset(cfg: SceneConfig):
    """Generated once per worker process and configuration."""
    return make_split(cfg, "train"), make_split(cfg, "val")


def _tensors(data: dict) -> tuple[tuple, tuple, int, object]:
    """(train, val, class count, spec) of an in-memory task: a synthetic task or a task plugin
    (``data.name`` is ``module:attr``, :mod:`ablate.plugins`)."""
    if is_spec(data.get("name")):
        train, val, classes = task_data(data)
        return train, val, classes, task_spec_from_dict(data)
    spec = SceneConfig(**data)
    train, val = _dataset(spec)
    return train, val, num_classes(spec.task), spec


class _EpochHook(Callback):
    """Checks the training loss, hands each epoch's val mIoU to ``on_epoch`` (rank 0) and stops
    the fit when it answers True (pruned). The last epoch is never pruned: it is the result.

    ``on_validation_end`` runs after the module's ``on_validation_epoch_end`` has appended the
    epoch's metrics (``on_validation_epoch_end`` of a callback runs *before* the module's).

    With ``rounds`` (step-based training) the "epoch" is the index of the validation round and
    the last of the ``rounds`` is never pruned.
    """

    def __init__(self, on_epoch: Callable[[int, float], bool | None], rounds: int | None = None):
        self.on_epoch = on_epoch
        self.rounds = rounds
        self.pruned_epoch: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = loss is not None and not torch.isfinite(loss).all()
        if trainer.world_size > 1:  # every rank must stop together, or the others wait forever
            bad = trainer.strategy.reduce_boolean_decision(bool(bad), all=False)
        if bad:
            raise TrialFailed(f"non-finite training loss ({float(loss)}) at epoch {trainer.current_epoch}, "
                              f"batch {batch_idx}")

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not pl_module.history:
            return
        epoch = trainer.current_epoch if self.rounds is None else len(pl_module.history) - 1
        last = trainer.max_epochs if self.rounds is None else self.rounds
        stop = bool(self.on_epoch(epoch, pl_module.history[-1]["val_miou"])) if trainer.is_global_zero else False
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop, src=0)
        if stop and epoch + 1 < last:
            self.pruned_epoch = epoch
            trainer.should_stop = True


class _RankSlices(Sampler):
    """Batches of indices for one rank: the single-process batch sampler's batches, each split
    into ``world`` contiguous slices of which this rank takes number ``rank``.

    With ``world == 1`` it yields exactly the wrapped sampler's batches. A final batch smaller
    than ``world`` is dropped (a rank without samples would stall DDP's gradient all-reduce).
    """

    def __init__(self, batches: BatchSampler, rank: int = 0, world: int = 1):
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self):
        for batch in self.batches:
            if len(batch) < self.world:
                continue
            yield list(torch.tensor(batch).tensor_split(self.world)[self.rank].tolist())

    def __len__(self) -> int:
        full, tail = divmod(len(self.batches.sampler), self.batches.batch_size)
        return full + (1 if not self.batches.drop_last and tail >= self.world else 0)


class _Batches(L.LightningDataModule):
    """Whole batches sliced out of in-memory tensors (no per-sample collation), sharded by rank
    once Lightning knows the rank (the dataloader hooks run after the process group is up)."""

    def __init__(self, train: tuple, val: tuple, batch_size: int, seed: int):
        super().__init__()
        self.train, self.val, self.batch_size, self.seed = train, val, batch_size, seed

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def train_dataloader(self):
        rank, world = self._rank_world()
        xt, yt = self.train
        gen = torch.Generator().manual_seed(self.seed)
        batches = BatchSampler(RandomSampler(range(len(xt)), generator=gen), self.batch_size, drop_last=False)
        sampler = batches if world == 1 else _RankSlices(batches, rank, world)
        return DataLoader(TensorDataset(xt, yt), batch_size=None, sampler=sampler)

    def val_dataloader(self):
        rank, world = self._rank_world()
        xv, yv = self.val
        if world == 1:
            order, size = SequentialSampler(range(len(xv))), max(64, self.batch_size)
        else:  # disjoint contiguous shards, no padding: each image is scored exactly once
            order, size = torch.arange(len(xv)).tensor_split(world)[rank].tolist(), max(64, self.batch_size // world)
        return DataLoader(TensorDataset(xv, yv), batch_size=None, sampler=BatchSampler(order, size, drop_last=False))


class _RealBatches(L.LightningDataModule):
    """A real dataset through mmseg's pipelines, sharded like :class:`_Batches`: every rank draws
    the single process's seeded batch order and takes its slice of each global batch (the last
    incomplete batch is dropped when the split holds a full one: BatchNorm needs more than one
    sample); validation is one image per batch, in disjoint contiguous shards."""

    def __init__(self, spec, sets, batch_size: int, seed: int):
        super().__init__()
        self.spec, self.sets, self.batch_size, self.seed = spec, sets, batch_size, seed

    _rank_world = _Batches._rank_world

    def train_dataloader(self):
        rank, world = self._rank_world()
        n = len(self.sets.train)
        gen = torch.Generator().manual_seed(self.seed)
        batches = BatchSampler(RandomSampler(range(n), generator=gen), self.batch_size, drop_last=n >= self.batch_size)
        sampler = batches if world == 1 else _RankSlices(batches, rank, world)
        return train_loader(self.spec, self.sets.train, seed=self.seed, batch_sampler=sampler)

    def val_dataloader(self):
        rank, world = self._rank_world()
        n = len(self.sets.val)
        order = list(range(n)) if world == 1 else torch.arange(n).tensor_split(world)[rank].tolist()
        return val_loader(self.spec, self.sets.val, sampler=order)


def attention_params(module: SegmentationModule) -> int:
    return sum(p.numel() for p in module.model.attention.parameters())


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
    :class:`~ablate.trial_config.TrialConfig`, or its stored dict form (read with the records' defaults).
    """
    config = TrialConfig.of(config)
    threads = config.train.threads or threads  # the study's train.threads wins
    if config.trainer.isolated:
        return _run_isolated(config, on_epoch, threads, wandb)
    return _fit(config, on_epoch, logger, threads)


def _fit(config: TrialConfig, on_epoch, logger=None, threads: int | None = None) -> dict:
    wall0 = time.perf_counter()
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    seed, train, spec = config.seed, config.train, config.trainer
    L.seed_everything(seed, workers=False, verbose=False)
    if is_real(config.data):
        data = spec_from_dict(config.data)
        sets = build_real_datasets(data)
        n_classes, n_train, crop = sets.num_classes, len(sets.train), tuple(data.crop_size)
        datamodule = _RealBatches(data, sets, train.batch_size, seed)
    else:
        (xt, yt), (xv, yv), n_classes, data = _tensors(config.data)
        n_train, crop = len(xt), (data.size, data.size)
        datamodule = _Batches((xt, yt), (xv, yv), train.batch_size, seed)
    try:  # each part from its own seed stream (ablate/seeds.py), then the "train" stream
        module = SegmentationModule(n_classes, config.backbone, config.mechanism, config.args, lr=train.lr,
                                    weight_decay=train.weight_decay, epochs=train.epochs,
                                    head=fields_dict(config.head), seed=seed, optimizer=train.optimizer,
                                    momentum=train.momentum, schedule=train.schedule, poly_power=train.poly_power,
                                    min_lr=train.min_lr)
    except PretrainedWeightsError as e:  # a URL that cannot be fetched here: say where to put the file
        raise HarnessFailed(str(e)) from None
    probing = not is_real(config.data) and getattr(data, "task", None) == "global_cue"
    if probing:  # the attention mass on the cue, once per validation epoch (ablate/probes.py)
        module.probe = make_cue_probe(xv[:PROBE_IMAGES], yv[:PROBE_IMAGES], seed)
    iterations = train.iterations
    if iterations:  # step-based: validation every val_interval steps, across epochs of the loader
        length = dict(max_steps=iterations, max_epochs=-1, check_val_every_n_epoch=None,
                      val_check_interval=train.val_interval or iterations)
    else:
        length = dict(max_epochs=train.epochs)
    hook = _EpochHook(on_epoch, rounds=train.epochs if iterations else None)
    world = spec.world_size
    # torch's SyncBatchNorm runs on CUDA only; on the CPU each rank normalises over its own slice
    cuda = spec.accelerator in ("gpu", "cuda") or (spec.accelerator == "auto" and torch.cuda.is_available())
    trainer = L.Trainer(
        **length, accelerator=spec.accelerator, devices=spec.devices,
        num_nodes=spec.num_nodes, strategy=spec.strategy, precision=spec.precision,
        sync_batchnorm=spec.sync_batchnorm and world > 1 and cuda, use_distributed_sampler=False,
        logger=logger if logger is not None else False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        deterministic=True, num_sanity_val_steps=0, callbacks=[hook],
        log_every_n_steps=max(1, math.ceil(n_train / train.batch_size)))
    _fit_mapping_failures(trainer, module, datamodule)
    hist = module.history
    if not hist:
        raise TrialFailed("no validation epoch completed")
    return _result(config, module, hook, crop, cuda, wall0, probing)


def _fit_mapping_failures(trainer, module, datamodule) -> None:
    """``trainer.fit``, its failures sorted: Ctrl-C back as KeyboardInterrupt, out of memory and
    the model's own exceptions as :class:`TrialFailed`, the harness's re-raised."""
    try:
        trainer.fit(module, datamodule=datamodule)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) and ignores further SIGINTs; give the runner
        # the KeyboardInterrupt back so it records the trial as interrupted and exits 130.
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    except torch.OutOfMemoryError as e:  # pragma: no cover - needs a GPU
        raise TrialFailed(f"out of memory: {e}") from None
    except (TrialFailed, HarnessFailed):
        raise
    except MemoryError:
        raise TrialFailed("out of memory (MemoryError)") from None
    except Exception as e:  # noqa: BLE001 - the model's own exceptions are the trial's outcome
        first = (str(e).splitlines() or [""])[0][:300]
        if "out of memory" in first.lower() or "can't allocate memory" in first.lower():
            raise TrialFailed(f"out of memory: {first}") from None
        if _from_harness(e):
            raise
        raise TrialFailed(f"{type(e).__name__} in training (the model's forward or backward): {first}") from e


def _result(config: TrialConfig, module, hook, crop: tuple, cuda: bool, wall0: float, probing: bool) -> dict:
    """A finished trial's metrics and measurements (what storage records)."""
    hist, spec = module.history, config.trainer
    world = spec.world_size
    curve = [h["val_miou"] for h in hist]
    metric = curve[-1] if config.metric == "val_miou" else max(curve)
    model = module.model.cpu()
    stride = model.backbone.stride
    fh, fw = feature_side(crop[0], stride), feature_side(crop[1], stride)  # the block's training input
    return {
        "value": float(metric),
        "final_val_miou": curve[-1],
        "best_val_miou": max(curve),
        "curve": curve,
        "class_iou": hist[-1]["class_iou"],
        "val_pixels": hist[-1]["val_pixels"],  # every rank's pixels: the whole validation set
        # the last epoch's per-image intersection/union counts, every rank's images in order
        IMAGE_COUNTS: encode_counts(module.image_counts[:, 0].numpy(), module.image_counts[:, 1].numpy()),
        "pruned_epoch": hook.pruned_epoch,  # None, or the 0-based epoch after which the trial stopped
        "attention_params": attention_params(module),
        "attention_flops": forward_flops(model.attention, (1, model.attention_channels, fh, fw)),
        "total_params": sum(p.numel() for p in module.parameters()),
        "compute_s": module.compute_seconds,
        "train_s": time.perf_counter() - wall0,
        "threads": torch.get_num_threads(),
        "fingerprint": fingerprint(spec.precision, cuda),
        "world_size": world,
        "pid": os.getpid(),
        "seed_streams": SEED_STREAMS,  # backbone, block, head and training draw from their own streams
        **({"cue_mass": [h["cue_mass"] for h in hist]} if probing else {}),  # per epoch; None: no map
    }


# --------------------------------------------------------------------------------------
# a trial in a process of its own (DDP): the worker side and the trial process side
# --------------------------------------------------------------------------------------

_RANK_ENV = ("LOCAL_RANK", "NODE_RANK", "GLOBAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "LOCAL_WORLD_SIZE", "GROUP_RANK", "RANK")


def _run_isolated(config: TrialConfig, on_epoch, threads: int | None, wandb: dict | None) -> dict:
    """Run the trial in ``python -m ablate.trainer``; answer its epoch messages with ``on_epoch``."""
    evt_r, evt_w = os.pipe()
    ans_r, ans_w = os.pipe()
    tmp = Path(tempfile.mkdtemp(prefix="ablate-trial-"))
    job = tmp / "job.json"
    job.write_text(json.dumps({"config": config.as_dict(), "threads": threads, "wandb": wandb,
                               "events_fd": evt_w, "answers_fd": ans_r}))
    env = {k: v for k, v in os.environ.items() if k not in _RANK_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "ablate.trainer", str(job)], pass_fds=(evt_w, ans_r), env=env)
    os.close(evt_w)
    os.close(ans_r)
    result, failed = None, None
    try:
        with os.fdopen(evt_r, "r") as events, os.fdopen(ans_w, "w") as answers:
            for line in events:
                kind, _, payload = line.rstrip("\n").partition(" ")
                msg = json.loads(payload) if payload else {}
                if kind == "epoch":
                    prune = bool(on_epoch(msg["epoch"], msg["val_miou"]))
                    answers.write("prune\n" if prune else "go\n")
                    answers.flush()
                elif kind == "result":
                    result = msg
                elif kind == "failed":
                    failed = msg
        code = proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    finally:
        job.unlink(missing_ok=True)
        tmp.rmdir()
    if code in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    if failed is not None:
        raise (TrialFailed if failed.get("kind", "error") == "error" else HarnessFailed)(failed["reason"])
    if result is None or code != 0:  # killed, or crashed below Python: not known to be the trial's own
        raise HarnessFailed(f"the trial process (python -m ablate.trainer, {config.as_dict()['trainer']}) exited "
                            f"with code {code} without a result; its output is above")
    return result


def _trial_process(job_path: str) -> int:
    """Entry point of ``python -m ablate.trainer JOB.json``: every rank runs this; rank 0 talks to
    the worker (epoch messages, the result) and owns the W&B run."""
    job = json.loads(Path(job_path).read_text())
    config = TrialConfig.from_json(job["config"])
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    threads = job.get("threads")
    if threads:
        threads = max(1, threads // config.trainer.devices)  # the worker's share of cores, split over its ranks
    if not rank0:
        return _rank_n(config, threads)
    events = os.fdopen(job["events_fd"], "w")
    answers = os.fdopen(job["answers_fd"], "r")

    def send(kind: str, msg: dict) -> None:
        events.write(f"{kind} {json.dumps(msg)}\n")
        events.flush()

    def on_epoch(epoch: int, miou: float) -> bool:
        send("epoch", {"epoch": epoch, "val_miou": miou})
        return answers.readline().strip() == "prune"

    logger = None
    code = 0
    try:
        if job.get("wandb"):
            from .tracking import make_logger

            w = job["wandb"]
            logger = make_logger(config.as_dict(), Path(w["run_dir"]), w["project"], w.get("entity"), w["name"])
        result = _fit(config, on_epoch, logger, threads)
        if logger is not None:
            logger.experiment.summary.update(wandb_summary(result))
        send("result", result)
    except TrialFailed as e:
        send("failed", {"reason": str(e), "kind": "error"})
        code = 1
    except Exception as e:  # noqa: BLE001 - the worker records it; the traceback goes to the log
        traceback.print_exc()
        send("failed", {"reason": f"{type(e).__name__}: {e}"[:500], "kind": failure_kind(e)})
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        if logger is not None:
            try:
                logger.experiment.finish(exit_code=code)
            except Exception:  # noqa: BLE001 - tracking must never break a study
                pass
    return code


def _rank_n(config: TrialConfig, threads: int | None) -> int:
    try:
        _fit(config, lambda e, m: False, None, threads)
    except KeyboardInterrupt:
        return 130
    except TrialFailed:
        return 1
    return 0


def wandb_summary(result: dict) -> dict:
    """What a trial's W&B run keeps as its summary."""
    out = {k: result[k] for k in ("final_val_miou", "best_val_miou", "attention_params")}
    if result.get("pruned_epoch") is not None:
        out["pruned_after_epoch"] = result["pruned_epoch"] + 1
    return out


if __name__ == "__main__":
    sys.exit(_trial_process(sys.argv[1]))
