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
