"""Mid-trial checkpoints: where a trial's go, atomic writes, pruning, finding the newest good one.

A trial (one cell x seed) saves Lightning's full checkpoint every ``train.checkpoint_every``
validation rounds into a folder named by its identity, ``<dir>/<study>/<cell key>-s<seed>/``
(``<dir>``: ``train.checkpoint_dir``, else ``<run folder>/checkpoints``), keeping the newest
``train.checkpoint_keep``; they are deleted when the trial finishes unless
``train.keep_checkpoints``, and the finished model's weights stay in the folder as ``final.pt``
(:func:`save_final`; the report draws its pictures from them). A trial whose worker died is
resumed from the newest checkpoint that loads. Storage records the folder on each attempt, so a
worker on another host finds it.

What Lightning's checkpoint lacks is saved beside it (:class:`TrialCheckpoints`): the per-round
history (the curve before the kill), the compute time so far, the RNG states of python, numpy
and torch, and the data order's position (:class:`ablate.data.lightning.ResumableOrder`, also
in the middle of a pass). A resumed trial then trains exactly as an uninterrupted one, bit for
bit on the CPU (tests/trainer/test_checkpoints.py). Not covered: a real dataset read with
``num_workers > 0`` keeps the batch order but its loader workers' augmentation draws start
again from their seed (their RNG lives in those processes); under DDP rank 0's RNG states are
put back on every rank (the ranks draw alike from the same seed).
"""
from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback


def trial_folder(config, run_dir: Path, study: str, cell_key: str, seed: int) -> str | None:
    """The checkpoint folder of a trial (None when ``train.checkpoint_every`` is 0)."""
    train = config.train
    if train.checkpoint_every <= 0:
        return None
    base = Path(train.checkpoint_dir) if train.checkpoint_dir else Path(run_dir) / "checkpoints"
    return str((base / study / f"{cell_key}-s{seed}").absolute())


PREFIX, SUFFIX = "step-", ".ckpt"  # a finished checkpoint: step-<global step, 10 digits>.ckpt


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The finished checkpoints in ``folder``, newest (highest step) first; temp files are never listed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    named = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
    steps = {p: p.name[len(PREFIX):-len(SUFFIX)] for p in named}
    return sorted((p for p in named if steps[p].isdigit()), key=lambda p: int(steps[p]), reverse=True)


def publish(tmp: Path, final: Path) -> None:
    """Make a written temp file the checkpoint ``final``: fsync it, rename, fsync the folder.
    A kill at any point leaves either no ``final`` or a complete one. A temp file that is not
    there (Lightning's writer swallows a PermissionError) or a failing fsync or rename is a
    :class:`~ablate.config.errors.RetryableError` naming the real cause, the temp file removed."""
    from ..config.atomic import fsync_dir

    try:
        if not tmp.exists():
            _probe_write(tmp)  # Lightning's writer gave up silently: say why
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _save_error(final, e) from None
    fsync_dir(final.parent)


def _probe_write(tmp: Path) -> None:
    """Write ``tmp`` ourselves to raise the OSError that Lightning's writer swallowed."""
    with open(tmp, "wb") as f:
        f.write(b"probe")
        f.flush()
        os.fsync(f.fileno())
    tmp.unlink()
    raise OSError(errno.EIO, "the checkpoint file was not written (Lightning's writer failed without saying why)",
                  str(tmp))


def _save_error(final: Path, e: OSError):
    from ..config.errors import disk_error

    return disk_error(final, e, "write the trial's checkpoint")


def prune(folder: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and temp files left by a killed writer);
    returns what was deleted."""
    folder = Path(folder)
    gone = checkpoint_files(folder)[max(1, keep):]
    gone += [p for p in folder.glob(f".{PREFIX}*.tmp*")] if folder.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


FINAL = "final.pt"  # a finished trial's model weights, kept for the report's pictures (:func:`save_final`)
FINAL_FORMAT = 1


def save_final(folder: str | Path, model) -> str:
    """Write ``model``'s state dict (on the CPU) as ``<folder>/final.pt``, atomically; returns its
    absolute path. The report rebuilds the trial's model from its stored configuration and these
    weights to draw attention maps and predictions (:mod:`ablate.report.pictures`)."""
    import torch

    from ..config.atomic import make_folder, replacing

    path = Path(folder).absolute() / FINAL
    make_folder(path.parent)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with replacing(path, "write the trial's final weights") as f:
        torch.save({"format": FINAL_FORMAT, "state_dict": state}, f)
    return str(path)


def remove(folder: str | Path, keep_last: bool = False) -> None:
    """A finished trial's checkpoints: all deleted (and its folder, unless it holds the trial's
    final weights, which stay), or with ``keep_last`` the newest kept."""
    folder = Path(folder)
    if keep_last:
        prune(folder, 1)
        return
    if (folder / FINAL).is_file():
        for p in folder.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.name != FINAL:
                p.unlink(missing_ok=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # the study's folder, once its last trial is gone


def load_newest(folder: str | Path, say=None) -> tuple[Path, dict] | tuple[None, None]:
    """The newest checkpoint of ``folder`` that loads and holds what a resume needs, and its
    content; a newer one that does not (cut short, corrupt) is skipped with a warning. (None,
    None): start from zero (said too when checkpoints were there)."""
    import torch

    say = say or (lambda msg: print(f"ablate: {msg}", file=sys.stderr, flush=True))
    files = checkpoint_files(folder)
    for path in files:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(ckpt, dict) or STATE not in ckpt or "state_dict" not in ckpt:
                raise ValueError("not a complete trial checkpoint")
            return path, ckpt
        except Exception as e:  # noqa: BLE001 - any unreadable file: try the previous one
            say(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); trying the previous one")
    if files:
        say(f"no checkpoint in {folder} can be read; the trial starts from zero")
    return None, None


STATE = "ablate"  # the checkpoint's key for what Lightning does not save: history, RNG, data order


def rng_states() -> dict:
    import numpy as np
    import torch

    out = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class TrialCheckpoints(Callback):
    """Saves a trial's checkpoint every ``every`` validation rounds (rank 0 writes, atomically;
    all ranks take part in Lightning's save), keeps the newest ``keep``, and on a resume puts
    back what Lightning's own checkpoint lacks: the per-round history (so the curve is whole),
    the compute time so far, the RNG states of python / numpy / torch and the position in the
    training order. ``rounds``: the trial's validation rounds; the last is saved only with
    ``keep_final`` (else the finished trial's folder is deleted anyway). ``on_resume(info,
    curve)`` is told once, on rank 0, where the trial resumed from."""

    def __init__(self, folder: str, every: int, keep: int, rounds: int, keep_final: bool = False, on_resume=None):
        self.folder, self.every, self.keep, self.rounds = Path(folder), every, keep, rounds
        self.keep_final, self.on_resume = keep_final, on_resume
        self._rng = None  # RNG states to put back when training starts (after the module reseeds)
        self.resumed: dict | None = None
        self._path: str | None = None

    def resume_path(self) -> str | None:
        """The checkpoint to resume from (the newest that loads), or None."""
        path, _ = load_newest(self.folder)
        self._path = None if path is None else str(path)
        return self._path

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not pl_module.history or trainer.should_stop:
            return
        done = len(pl_module.history)
        if done >= self.rounds:
            if self.keep_final:
                self.save(trainer)
            return
        if done % self.every == 0:
            self.save(trainer)

    def save(self, trainer) -> Path:
        name = f"{PREFIX}{trainer.global_step:010d}{SUFFIX}"
        final = self.folder / name
        tmp = self.folder / f".{name}.tmp-{os.getpid()}"
        if trainer.is_global_zero:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _save_error(final, e) from None
        try:
            trainer.save_checkpoint(tmp)  # every rank; rank 0 writes
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _save_error(final, e) from None
        if trainer.is_global_zero:
            publish(tmp, final)
            prune(self.folder, self.keep)
        trainer.strategy.barrier("ablate.trainer.checkpoints.save")
        return final

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        done_in_pass = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        checkpoint[STATE] = {"history": list(pl_module.history), "compute_seconds": pl_module.compute_seconds,
                             "rng": rng_states(), "order": trainer.datamodule.order_state(done_in_pass)}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint[STATE]
        pl_module.history = list(state["history"])
        pl_module.compute_seconds = state["compute_seconds"]
        trainer.datamodule.resume_order(state["order"])
        self._rng = state["rng"]
        self.resumed = {"step": int(checkpoint["global_step"]), "epoch": len(state["history"]),
                        "file": self._path}
        if self.on_resume is not None and trainer.is_global_zero:
            self.on_resume(self.resumed, [h["val_miou"] for h in pl_module.history])

    def on_train_start(self, trainer, pl_module):
        if self._rng is not None:  # after the module's on_fit_start reseeded the "train" stream
            set_rng_states(self._rng)
            self._rng = None

    def save_final(self, trainer, model) -> str | None:
        """The finished trial's weights as ``final.pt`` in its folder (rank 0; None elsewhere)."""
        if trainer is not None and not trainer.is_global_zero:
            return None
        return save_final(self.folder, model)

    def finish(self, trainer) -> None:
        """The trial ended for good (complete, pruned, or failed for a reason of its own)."""
        if trainer is None or trainer.is_global_zero:
            remove(self.folder, keep_last=self.keep_final)
