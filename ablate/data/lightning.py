"""The Lightning data modules of a trial: in-memory tensors (synthetic tasks, task plugins) and
real datasets through mmseg, both sharded by rank the same way (see :mod:`ablate.trainer`).

Under DDP every rank draws the single process's seeded batch order and takes its slice of each
global batch (:class:`RankSlices`); validation is split into disjoint shards. The training order
is a :class:`ResumableOrder`: the same batches, plus the state a mid-trial checkpoint needs to
continue the order exactly where it stopped (:mod:`ablate.trainer.checkpoints`).
"""
from __future__ import annotations

import functools

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler, TensorDataset

from ..plugins.mechanisms import is_spec, task_data, task_spec_from_dict
from .real import train_loader, val_loader
from .synthetic import SceneConfig, make_split, num_classes


@functools.lru_cache(maxsize=4)
def dataset(cfg: SceneConfig):
    """Generated once per worker process and configuration."""
    return make_split(cfg, "train"), make_split(cfg, "val")


def tensors(data: dict) -> tuple[tuple, tuple, int, object]:
    """(train, val, class count, spec) of an in-memory task: a synthetic task or a task plugin
    (``data.name`` is ``module:attr``, :mod:`ablate.plugins`)."""
    if is_spec(data.get("name")):
        train, val, classes = task_data(data)
        return train, val, classes, task_spec_from_dict(data)
    spec = SceneConfig(**data)
    train, val = dataset(spec)
    return train, val, num_classes(spec.task), spec



class RankSlices(Sampler):
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


class ResumableOrder(Sampler):
    """The wrapped batch sampler's batches, unchanged, for a sampler whose randomness is the
    torch ``generator`` (drawn when a pass starts). It remembers the generator's state at the
    start of each pass, so :meth:`state` can say where the order stands, and after
    :meth:`resume` the next pass starts from that state and skips the batches already trained:
    a resumed trial sees exactly the batches an uninterrupted one would."""

    def __init__(self, batches, generator: torch.Generator):
        self.batches, self.generator = batches, generator
        self._start = generator.get_state()
        self._resume: dict | None = None

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            self.generator.set_state(self._resume["generator"])
            skip, self._resume = self._resume["batches"], None
        self._start = self.generator.get_state()
        for i, batch in enumerate(self.batches):
            if i >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.batches)

    def state(self, done_in_pass: int) -> dict:
        """Where the order stands after ``done_in_pass`` trained batches of the current pass."""
        if done_in_pass >= len(self):  # the pass is over: the next one starts from the generator as it is
            return {"generator": self.generator.get_state(), "batches": 0}
        return {"generator": self._start, "batches": done_in_pass}

    def resume(self, state: dict) -> None:
        self._resume = state


class _Resumable:
    """The data modules' part in a mid-trial checkpoint (:mod:`ablate.trainer.checkpoints`)."""

    order: ResumableOrder | None = None
    _resume_state: dict | None = None

    def _order(self, sampler, generator) -> ResumableOrder:
        self.order = ResumableOrder(sampler, generator)
        if self._resume_state is not None:
            self.order.resume(self._resume_state)
            self._resume_state = None
        return self.order

    def order_state(self, done_in_pass: int) -> dict:
        return self.order.state(done_in_pass)

    def resume_order(self, state: dict) -> None:
        """Continue the training order from ``state`` (before or after the loader exists)."""
        if self.order is not None:
            self.order.resume(state)
        else:
            self._resume_state = state


class Batches(_Resumable, L.LightningDataModule):
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
        sampler = batches if world == 1 else RankSlices(batches, rank, world)
        return DataLoader(TensorDataset(xt, yt), batch_size=None, sampler=self._order(sampler, gen))

    def val_dataloader(self):
        rank, world = self._rank_world()
        xv, yv = self.val
        if world == 1:
            order, size = SequentialSampler(range(len(xv))), max(64, self.batch_size)
        else:  # disjoint contiguous shards, no padding: each image is scored exactly once
            order, size = torch.arange(len(xv)).tensor_split(world)[rank].tolist(), max(64, self.batch_size // world)
        return DataLoader(TensorDataset(xv, yv), batch_size=None, sampler=BatchSampler(order, size, drop_last=False))


class RealBatches(_Resumable, L.LightningDataModule):
    """A real dataset through mmseg's pipelines, sharded like :class:`Batches`: every rank draws
    the single process's seeded batch order and takes its slice of each global batch (the last
    incomplete batch is dropped when the split holds a full one: BatchNorm needs more than one
    sample); validation is one image per batch, in disjoint contiguous shards."""

    def __init__(self, spec, sets, batch_size: int, seed: int):
        super().__init__()
        self.spec, self.sets, self.batch_size, self.seed = spec, sets, batch_size, seed

    _rank_world = Batches._rank_world

    def train_dataloader(self):
        rank, world = self._rank_world()
        n = len(self.sets.train)
        gen = torch.Generator().manual_seed(self.seed)
        batches = BatchSampler(RandomSampler(range(n), generator=gen), self.batch_size, drop_last=n >= self.batch_size)
        sampler = batches if world == 1 else RankSlices(batches, rank, world)
        return train_loader(self.spec, self.sets.train, seed=self.seed, batch_sampler=self._order(sampler, gen))

    def val_dataloader(self):
        rank, world = self._rank_world()
        n = len(self.sets.val)
        order = list(range(n)) if world == 1 else torch.arange(n).tensor_split(world)[rank].tolist()
        return val_loader(self.spec, self.sets.val, sampler=order)

