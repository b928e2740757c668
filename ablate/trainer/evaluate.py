"""One evaluation: a finished trial's final weights validated under an evaluation-time setting.

A study's ``eval_factors:`` (:mod:`ablate.study.evaluations`) evaluates each training's final
weights (``final.pt``, :func:`ablate.trainer.checkpoints.save_final`) under other block arguments
(EMANet's ``T_eval``) or another ``eval:`` (sliding windows, scales, flip). :func:`evaluate_weights`
builds the model of the evaluation's configuration, loads the weights and runs the same
validation a trial runs after each epoch (Lightning's ``validate`` with the trial's trainer
settings), so an evaluation under the training's own setting gives its last val mIoU exactly.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerStatus

from ..config.seeds import SEED_STREAMS
from ..config.trial import TrialConfig, fields_dict
from ..data.lightning import Batches, RealBatches, tensors
from ..data.real import build_real_datasets, is_real, spec_from_dict
from ..models.image_counts import ATTR as IMAGE_COUNTS, encode as encode_counts
from ..models.segmenter import SegmentationModule
from .fingerprint import fingerprint
from .fit import HarnessFailed, TrialFailed, from_harness, make_trainer, quiet_libraries


def _data(config: TrialConfig):
    """(data module, class count, training images) as the trial's fit builds them."""
    if is_real(config.data):
        data = spec_from_dict(config.data)
        sets = build_real_datasets(data)
        return RealBatches(data, sets, config.train.batch_size, config.seed), sets.num_classes, len(sets.train)
    (xt, yt), (xv, yv), n_classes, _ = tensors(config.data)
    return Batches((xt, yt), (xv, yv), config.train.batch_size, config.seed), n_classes, len(xt)


def evaluate_weights(config: TrialConfig | dict, weights: str, threads: int | None = None) -> dict:
    """Validate ``weights`` (a trial's ``final.pt``) under ``config`` (the training's configuration
    with the evaluation's block arguments and ``eval:``); returns what storage records: the value
    (val mIoU), per-class IoU, pixels, per-image counts and the time it took. A weights file that
    is gone is the harness's failure (:class:`HarnessFailed`), the model's own exception the
    evaluation's (:class:`TrialFailed`)."""
    wall0 = time.perf_counter()
    config = TrialConfig.of(config)
    quiet_libraries()
    threads = config.train.threads or threads
    if threads:
        torch.set_num_threads(threads)
    if not weights or not Path(weights).is_file():
        raise HarnessFailed(f"the training's final weights {weights!r} are gone (the run folder was moved or "
                            "deleted); train the cell again to evaluate it")
    L.seed_everything(config.seed, workers=False, verbose=False)
    datamodule, n_classes, n_train = _data(config)
    train = config.train
    module = SegmentationModule(n_classes, config.backbone, config.mechanism, config.args, lr=train.lr,
                                weight_decay=train.weight_decay, epochs=train.epochs, head=fields_dict(config.head),
                                seed=config.seed, optimizer=train.optimizer, momentum=train.momentum,
                                schedule=train.schedule, poly_power=train.poly_power, min_lr=train.min_lr,
                                evaluation=config.eval.as_dict())
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
        module.model.load_state_dict(state)
    except (OSError, KeyError, RuntimeError) as e:
        raise HarnessFailed(f"the weights {weights} do not load into the evaluated model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    trainer, cuda = make_trainer(config, None, [], n_train)
    _validate(trainer, module, datamodule)
    if not module.history:
        raise TrialFailed("the evaluation completed no validation")
    last = module.history[-1]
    return {"value": float(last["val_miou"]), "final_val_miou": float(last["val_miou"]), "class_iou": last["class_iou"],
            "val_pixels": last["val_pixels"],
            IMAGE_COUNTS: encode_counts(module.image_counts[:, 0].numpy(), module.image_counts[:, 1].numpy()),
            "compute_s": module.compute_seconds, "eval_s": time.perf_counter() - wall0,
            "threads": torch.get_num_threads(), "fingerprint": fingerprint(config.trainer.precision, cuda),
            "pid": os.getpid(), "weights": str(weights), "seed_streams": SEED_STREAMS}


def _validate(trainer, module, datamodule) -> None:
    """``trainer.validate``, its failures sorted as a fit's are: Ctrl-C back as KeyboardInterrupt,
    the harness's re-raised, the model's own as :class:`TrialFailed`."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    except SystemExit as e:
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            signal.signal(signal.SIGINT, sigint if callable(sigint) else signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise TrialFailed(f"the model's code called sys.exit({e.code!r}) in evaluation") from None
    except (TrialFailed, HarnessFailed):
        raise
    except Exception as e:  # noqa: BLE001 - the model's own exceptions are the evaluation's outcome
        if from_harness(e):
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        raise TrialFailed(f"{type(e).__name__} in evaluation (the model's forward): {first}") from e


__all__ = ["evaluate_weights"]
