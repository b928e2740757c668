"""W&B tracking: offline unless the user is logged in; one group per study; one run per cell x
seed, whatever the attempts (:func:`run_id`: resumed, requeued, on another worker or machine).

The report never reads W&B; tracking is for browsing runs (the factors are top-level config
keys, so W&B's grouping and parallel-coordinates views compare variants directly).
"""
from __future__ import annotations

import hashlib
import netrc
import os
from pathlib import Path


def wandb_mode() -> str:
    """'online' only when the user has credentials (env key or netrc) and did not ask otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        rc = netrc.netrc()
        if any(h for h in rc.hosts if "wandb" in h):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def make_logger(config: dict, run_dir: Path, project: str, entity: str | None, name: str):
    """A Lightning WandbLogger for one trial (the caller finishes the run)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    from lightning.pytorch.loggers import WandbLogger

    import wandb

    flat = dict(config.get("cell", {}))  # factors as top-level keys
    flat.update({"seed": config["seed"], "mechanism": config["mechanism"], "cell_key": config["cell_key"],
                 "config": config})
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, group=config["study"], name=name, config=flat,
                     dir=str(run_dir), mode=wandb_mode(), reinit="finish_previous", id=run_id(config),
                     resume="allow", settings=wandb.Settings(silent=True, console="off"))
    return WandbLogger(experiment=run, log_model=False)


def run_id(config: dict) -> str:
    """The W&B run id of a trial, ``<cell key>-s<seed>-<hash of the study's name>``: the same for
    every attempt of one cell x seed of one study, another when the study's name (overrides add
    a suffix), the cell's key (its whole training configuration) or the seed differ."""
    study = hashlib.sha1(str(config["study"]).encode()).hexdigest()[:8]
    return f"{config['cell_key']}-s{config['seed']}-{study}"


def replay(logger, info: dict, history: list[float]) -> None:
    """A trial resumed from a checkpoint (``info``: its step and epoch): the val mIoU of the epochs
    before it (``history``) logged again at their global steps, so this attempt's record holds the
    trial's whole curve even where the dead attempt's record is torn (kill -9); the attempts,
    synced to the one run id, keep one value a step. Never raises: tracking must not stop a trial."""
    if logger is None or not history:
        return
    try:
        per_round = info["step"] / max(1, info["epoch"])
        for epoch, value in enumerate(history):
            logger.experiment.log({"val_miou": float(value), "epoch": epoch,
                                   "trainer/global_step": round(per_round * (epoch + 1))})
    except Exception:  # noqa: BLE001
        pass


PREDICTION_IMAGES = 4  # the first validation images: the same for every trial of a task


def rgb(image) -> "np.ndarray":
    """An image (3, H, W) float tensor as (H, W, 3) uint8, each channel's 1st-99th percentile
    stretched to 0-255 (the synthetic images are noise around colours, not 0-1 values)."""
    import numpy as np

    x = np.asarray(image.detach().float().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    lo, hi = np.percentile(x, 1, axis=(1, 2), keepdims=True), np.percentile(x, 99, axis=(1, 2), keepdims=True)
    return (np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


def mask_labels(names, n_classes: int, ignore_index: int = 255) -> dict[int, str]:
    """W&B's class labels of a mask: the task's class names (or numbers) and the unscored pixels."""
    names = list(names or [])
    return {**{i: names[i] if i < len(names) else f"class {i}" for i in range(n_classes)},
            ignore_index: "not scored"}


def predict(model, images):
    """(predicted label maps (B, H, W) int64 on the CPU, logits) of ``model`` on ``images``, in
    eval mode without gradients; the model's mode is put back."""
    import torch

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(images.to(device, dtype)).float().cpu()
    finally:
        model.train(was_training)
    return logits.argmax(1), logits


def log_predictions(logger, model, images, labels, names, n_classes: int, ignore_index: int = 255) -> None:
    """The finished trial's predictions on fixed validation images, logged to its W&B run as
    ``predictions``: one ``wandb.Image`` per image with two mask overlays, ``ground_truth`` and
    ``prediction`` (W&B's mask viewer toggles them). Never raises: tracking must not stop a trial."""
    if logger is None:
        return
    try:
        import wandb

        pred, _ = predict(model, images)
        classes = mask_labels(names, n_classes, ignore_index)
        shown = [wandb.Image(rgb(images[i]), caption=f"validation image {i}", masks={
            "ground_truth": {"mask_data": labels[i].numpy().astype("uint8"), "class_labels": classes},
            "prediction": {"mask_data": pred[i].numpy().astype("uint8"), "class_labels": classes}})
            for i in range(len(images))]
        logger.experiment.log({"predictions": shown})
    except Exception:  # noqa: BLE001
        pass
