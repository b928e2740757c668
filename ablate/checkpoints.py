"""Mid-trial checkpoints: where a trial's go, atomic writes, pruning, finding the newest good one.

A trial (one cell x seed) saves Lightning's full checkpoint every ``train.checkpoint_every``
validation rounds into a folder named by its identity, ``<dir>/<study>/<cell key>-s<seed>/``
(``<dir>``: ``train.checkpoint_dir``, else ``<run folder>/checkpoints``), keeping the newest
``train.checkpoint_keep``; the folder is deleted when the trial finishes unless
``train.keep_checkpoints``. A trial whose worker died is resumed from the newest checkpoint that
loads. Storage records the folder on each attempt, so a worker on another host finds it.
"""
from __future__ import annotations

from pathlib import Path


def trial_folder(config, run_dir: Path, study: str, cell_key: str, seed: int) -> str | None:
    """The checkpoint folder of a trial (None when ``train.checkpoint_every`` is 0)."""
    train = config.train
    if train.checkpoint_every <= 0:
        return None
    base = Path(train.checkpoint_dir) if train.checkpoint_dir else Path(run_dir) / "checkpoints"
    return str((base / study / f"{cell_key}-s{seed}").absolute())
