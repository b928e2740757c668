"""W&B tracking: offline unless the user is logged in; one group per study.

The report never reads W&B; tracking is for browsing runs (the factors are top-level config
keys, so W&B's grouping and parallel-coordinates views compare variants directly).
"""
from __future__ import annotations

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
                     dir=str(run_dir), mode=wandb_mode(), reinit="finish_previous",
                     settings=wandb.Settings(silent=True, console="off"))
    return WandbLogger(experiment=run, log_model=False)
