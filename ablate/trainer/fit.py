"""One trial's Lightning fit in this process: the model, the data module, the epoch hook, the
failure mapping (the trial's own failures are final, the harness's are retried) and the result.

:func:`ablate.trainer.run_trial` calls :func:`fit` in the worker, or through
:mod:`ablate.trainer.process` in a process of its own (DDP); mid-trial checkpoints and resume
are :mod:`ablate.trainer.checkpoints`.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import time
import traceback
import warnings
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus

from .checkpoints import TrialCheckpoints
from ..costs.blocks import forward_flops, param_count
from ..data.lightning import Batches, RealBatches, tensors
from ..data.real import build_real_datasets, is_real, spec_from_dict
from ..config.errors import RetryableError
from .fingerprint import fingerprint
from ..models.pretext import provenance as backbone_provenance
from ..models.image_counts import ATTR as IMAGE_COUNTS, encode as encode_counts
from ..models.resnet import PretrainedWeightsError
from ..models.segmenter import SegmentationModule, feature_side
from .probes import PROBE_IMAGES, make_cue_probe
from .tracking import PREDICTION_IMAGES, log_predictions
from ..config.seeds import SEED_STREAMS
from ..config.trial import TrialConfig, fields_dict


def quiet_libraries() -> None:
    """Keep the terminal to ablate's own progress lines: Lightning's banners and tips, and
    known-harmless deprecation warnings from dependencies, are not for the user; nor is Lightning's
    hint to launch with ``srun`` where srun is installed, unless the process runs in a SLURM job
    (``SLURM_JOB_ID`` set), where launching without it can hang."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # a mid-pass resume is exact: the data modules' ResumableOrder skips the batches already trained
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    if not os.environ.get("SLURM_JOB_ID"):  # outside a SLURM job, an installed srun is no hint for the user
        warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


class TrialFailed(Exception):
    """A trial that cannot finish for a reason of its own (NaN loss, out of memory, an exception
    in the model's forward or backward): final, the next run does not repeat it."""


class HarnessFailed(Exception):
    """A trial stopped by the harness or its environment (tracking, storage, files, missing
    weights, a setting that validation should have refused): the next run tries it again."""


# code that is the harness's, not the trial's: an exception raised with one of these modules on
# its stack (W&B, the storage, our own runner) is the harness's even when it surfaces in a fit
_HARNESS_MODULES = ("wandb", "optuna", "sqlalchemy", "psycopg", "psycopg2", "pymysql", "lightning.pytorch.loggers",
                    "lightning.fabric.loggers", "ablate.run", "ablate.run.worker", "ablate.run.claims", "ablate.storage",
                    "ablate.storage.states", "ablate.storage.journal", "ablate.trainer.tracking", "ablate.trainer.checkpoints")


def from_harness(e: BaseException) -> bool:
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



class EpochHook(Callback):
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
            # both 1-based, as the progress lines count epochs ("epoch 1/2")
            raise TrialFailed(f"non-finite training loss ({float(loss)}) at epoch {trainer.current_epoch + 1}, "
                              f"batch {batch_idx + 1}")

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



def attention_params(module: SegmentationModule) -> int:
    return param_count(module.model.attention)



def fit(config: TrialConfig, on_epoch, logger=None, threads: int | None = None, checkpoint_dir: str | None = None,
        on_resume=None) -> dict:
    """Train and validate the trial here. ``checkpoint_dir``: its mid-trial checkpoints' folder
    (:mod:`ablate.trainer.checkpoints`; resumed from when it holds one); ``on_resume(info, curve)``."""
    wall0 = time.perf_counter()
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    seed, train = config.seed, config.train
    L.seed_everything(seed, workers=False, verbose=False)
    if is_real(config.data):
        data = spec_from_dict(config.data)
        sets = build_real_datasets(data)
        n_classes, n_train, crop = sets.num_classes, len(sets.train), tuple(data.crop_size)
        datamodule = RealBatches(data, sets, train.batch_size, seed)
    else:
        (xt, yt), (xv, yv), n_classes, data = tensors(config.data)
        n_train, crop = len(xt), (data.size, data.size)
        datamodule = Batches((xt, yt), (xv, yv), train.batch_size, seed)
    try:  # each part from its own seed stream (ablate/config/seeds.py), then the "train" stream
        module = SegmentationModule(n_classes, config.backbone, config.mechanism, config.args, lr=train.lr,
                                    weight_decay=train.weight_decay, epochs=train.epochs,
                                    head=fields_dict(config.head), seed=seed, optimizer=train.optimizer,
                                    momentum=train.momentum, schedule=train.schedule, poly_power=train.poly_power,
                                    min_lr=train.min_lr, evaluation=config.eval.as_dict())
    except PretrainedWeightsError as e:  # a URL that cannot be fetched here: say where to put the file
        raise HarnessFailed(str(e)) from None
    probing = not is_real(config.data) and getattr(data, "task", None) == "global_cue"
    if probing:  # the attention mass on the cue, once per validation epoch (ablate/trainer/probes.py)
        module.probe = make_cue_probe(xv[:PROBE_IMAGES], yv[:PROBE_IMAGES], seed)
    hook = EpochHook(on_epoch, rounds=train.epochs if train.iterations else None)
    saver = None
    if checkpoint_dir and train.checkpoint_every > 0:
        saver = TrialCheckpoints(checkpoint_dir, train.checkpoint_every, train.checkpoint_keep, train.epochs,
                                 train.keep_checkpoints, on_resume)
    trainer, cuda = make_trainer(config, logger, [hook] + ([saver] if saver else []), n_train)
    try:
        fit_mapping_failures(trainer, module, datamodule, saver.resume_path() if saver else None)
    except TrialFailed:  # final: nothing will resume it
        if saver:
            saver.finish(trainer)
        raise
    if not module.history:
        raise TrialFailed("no validation epoch completed")
    if logger is not None and not is_real(config.data):  # fixed validation images with mask overlays, in W&B
        log_predictions(logger, module.model, xv[:PREDICTION_IMAGES], yv[:PREDICTION_IMAGES],
                        _class_names(data), n_classes)
    weights = saver.save_final(trainer, module.model) if saver else None  # kept for the report's pictures
    if saver:
        saver.finish(trainer)
    result = result_of(config, module, hook, crop, cuda, wall0, probing)
    return {**result, "final_weights": weights} if weights else result


def _class_names(data) -> tuple:
    """The synthetic task's class names (none for a plugin's task)."""
    from ..data.synthetic import CLASS_NAMES

    return CLASS_NAMES.get(getattr(data, "task", None), ())


def make_trainer(config: TrialConfig, logger, callbacks: list, n_train: int) -> tuple[L.Trainer, bool]:
    """The trial's Lightning trainer (epoch- or step-based), and whether it trains on CUDA."""
    train, spec = config.train, config.trainer
    if train.iterations:  # step-based: validation every val_interval steps, across epochs of the loader
        length = dict(max_steps=train.iterations, max_epochs=-1, check_val_every_n_epoch=None,
                      val_check_interval=train.val_interval or train.iterations)
    else:
        length = dict(max_epochs=train.epochs)
    world = spec.world_size
    # torch's SyncBatchNorm runs on CUDA only; on the CPU each rank normalises over its own slice
    cuda = spec.accelerator in ("gpu", "cuda") or (spec.accelerator == "auto" and torch.cuda.is_available())
    trainer = L.Trainer(
        **length, accelerator=spec.accelerator, devices=spec.devices,
        num_nodes=spec.num_nodes, strategy=spec.strategy, precision=spec.precision,
        sync_batchnorm=spec.sync_batchnorm and world > 1 and cuda, use_distributed_sampler=False,
        logger=logger if logger is not None else False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        deterministic=True, num_sanity_val_steps=0, callbacks=callbacks,
        log_every_n_steps=max(1, math.ceil(n_train / train.batch_size)))
    return trainer, cuda


def fit_mapping_failures(trainer, module, datamodule, ckpt_path: str | None = None) -> None:
    """``trainer.fit`` (from ``ckpt_path`` when given), its failures sorted: Ctrl-C back as
    KeyboardInterrupt, out of memory and the model's own exceptions as :class:`TrialFailed`, the
    harness's re-raised."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    except SystemExit as e:
        # Lightning turns Ctrl-C (and the runner's SIGTERM, raised as one) into sys.exit(1) and
        # ignores further SIGINTs; give the runner the KeyboardInterrupt back (and its SIGINT
        # handler) so it records the trial as interrupted and exits 130 or 143.
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            signal.signal(signal.SIGINT, sigint if callable(sigint) else signal.default_int_handler)
            raise KeyboardInterrupt from None
        # anything else is the model's code (a plugin calling sys.exit): the trial's own failure,
        # never the end of the worker
        raise TrialFailed(f"the model's code called sys.exit({e.code!r}) in training") from None
    except RetryableError:  # a checkpoint that could not be written: the disk, not the trial
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
        if from_harness(e):
            raise
        raise TrialFailed(f"{type(e).__name__} in training (the model's forward or backward): {first}") from e


def result_of(config: TrialConfig, module, hook, crop: tuple, cuda: bool, wall0: float, probing: bool) -> dict:
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
        "total_params": param_count(module),
        **upsample_costs(model, fh, fw),
        "compute_s": module.compute_seconds,
        "train_s": time.perf_counter() - wall0,
        "threads": torch.get_num_threads(),
        "fingerprint": fingerprint(spec.precision, cuda),
        **backbone_provenance(model.backbone),  # a pretext init or a frozen backbone: its init and checkpoint key
        "world_size": world,
        "pid": os.getpid(),
        "seed_streams": SEED_STREAMS,  # backbone, block, head and training draw from their own streams
        **({"cue_mass": [h["cue_mass"] for h in hist]} if probing else {}),  # per epoch; None: no map
    }



def upsample_costs(model, fh: int, fw: int) -> dict:
    """A CARAFE head's upsampler (``model.head.upsample: carafe``): its parameters and forward
    FLOPs per image from the block's training input (as ``attention_flops`` counts the block);
    {} for the bilinear resize, which has neither."""
    if getattr(model, "upsample", None) is None:
        return {}
    return {"upsample_params": param_count(model.upsample),
            "upsample_flops": forward_flops(model.upsample, (1, model.attention_channels, fh, fw))}


def wandb_summary(result: dict) -> dict:
    """What a trial's W&B run keeps as its summary."""
    out = {k: result[k] for k in ("final_val_miou", "best_val_miou", "attention_params")}
    if result.get("pruned_epoch") is not None:
        out["pruned_after_epoch"] = result["pruned_epoch"] + 1
    return out
