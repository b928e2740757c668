"""The typed configuration of one trial (:class:`TrialConfig`): what the study hands the worker
and the trainer, and what storage keeps as the trial's ``config`` attribute (:meth:`TrialConfig.to_json`).

The records of the settings a trial runs with live here, with their defaults, once: the
training settings (:class:`TrainSpec`), Lightning's Trainer (:class:`TrainerSpec`) and the head
(:class:`HeadSpec`). A config read back from an older journal that lacks a newer key gets these
defaults; nothing downstream (the trainer, the segmenter) supplies its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .evaluation import EvalSpec

MAX_THREADS = 1024  # train.threads


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 0  # torch threads per worker; 0 = cores / workers
    # added with the real datasets; at their defaults they stay out of the cell key
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # sgd only
    schedule: str = "onecycle"  # onecycle | poly
    poly_power: float = 0.9  # poly only
    min_lr: float = 0.0  # poly only: the floor the lr decays to
    iterations: int = 0  # > 0: train this many optimiser steps; epochs = validation rounds
    val_interval: int = 0  # steps between validations with iterations (0: once, at the end)
    # mid-trial checkpoints (ablate/trainer/checkpoints.py); how a trial is saved never changes what it
    # computes, so these never enter a cell key
    checkpoint_every: int = 1  # validation rounds between checkpoints; 0: none
    checkpoint_keep: int = 2  # the newest N checkpoints of a running trial are kept
    checkpoint_dir: str = ""  # "": <run folder>/checkpoints; or a shared path (cluster storage)
    keep_checkpoints: bool = False  # keep a finished trial's last checkpoint (else deleted)

    # key -> (kind, minimum[, strict[, maximum]]): strict means the minimum itself is out of range
    _rules = {"epochs": ("int", 1), "batch_size": ("int", 1), "lr": ("float", 0.0, True),
              "weight_decay": ("float", 0.0), "threads": ("int", 0, False, MAX_THREADS), "momentum": ("float", 0.0),
              "poly_power": ("float", 0.0, True), "min_lr": ("float", 0.0), "iterations": ("int", 0),
              "val_interval": ("int", 0), "checkpoint_every": ("int", 0), "checkpoint_keep": ("int", 1)}
    # the fields every cell key has always held; the others enter a key only when not at default
    _keyed = ("epochs", "batch_size", "lr", "weight_decay", "threads")
    # the fields that never enter a key: where and how often a trial is checkpointed
    _unkeyed = ("checkpoint_every", "checkpoint_keep", "checkpoint_dir", "keep_checkpoints")

    def identity(self) -> dict:
        """What of the training settings enters the cell key."""
        default = TrainSpec()
        return {k: v for k, v in fields_dict(self).items()
                if k not in self._unkeyed and (k in self._keyed or v != getattr(default, k))}


@dataclass(frozen=True)
class TrainerSpec:
    """What Lightning's Trainer gets; the defaults are one CPU process."""

    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    sync_batchnorm: bool = True  # BN statistics over the global batch when devices > 1 (CUDA only)
    precision: str = "32-true"  # Lightning's precision: 32-true, 16-mixed, bf16-mixed, ...

    _rules = {"devices": ("int", 1), "num_nodes": ("int", 1)}

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def isolated(self) -> bool:
        """Whether a trial runs in a process of its own (Lightning's DDP launcher re-runs it)."""
        return self.world_size > 1 or self.strategy != "auto"


@dataclass(frozen=True)
class HeadSpec:
    """``model.head``: a 3x3 conv to ``channels`` before the attention block (0: none) and the
    weight of the auxiliary FCN head's loss (0: none; ResNet-D8 only). ``style: mmseg`` wraps the
    block in the convolutions of mmseg's decode head for that mechanism (ablate/models/mmseg_heads.py),
    ``channels`` being that head's width (0: the backbone's). ``upsample``: how the head reaches the
    input's resolution, ``bilinear`` (the logits resized) or ``carafe`` (CARAFE x2 stages on the
    features before the classifier, ablate/attention/carafe.py, with reassembly kernel ``k_up``,
    encoder kernel ``k_enc`` and ``compressed`` channels; the paper's defaults)."""

    channels: int = 0
    aux_weight: float = 0.0
    style: str = "plain"  # plain | mmseg; at the default it is absent from keys and stored configs
    upsample: str = "bilinear"  # bilinear | carafe; like the CARAFE settings below, absent at its default
    k_up: int = 5
    k_enc: int = 3
    compressed: int = 64

    _rules = {"channels": ("int", 0), "aux_weight": ("float", 0.0), "k_up": ("int", 1), "k_enc": ("int", 1),
              "compressed": ("int", 1)}
    _optional = ("style", "upsample", "k_up", "k_enc", "compressed")  # absent from stored configs at their defaults


def _unless_default(spec, optional: tuple) -> dict:
    """``spec``'s fields, leaving out each of ``optional`` that is at its default (settings added
    later stay out of stored configs written without them)."""
    return {k: v for k, v in fields_dict(spec).items() if k not in optional or v != getattr(type(spec), k)}


def fields_dict(obj) -> dict:
    """A dataclass's fields as a flat dict (not recursing, unlike ``dataclasses.asdict``)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}



def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists): a config compares equal after a round trip."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class TrialConfig:
    """One trial, fully resolved: its study, cell (label and key), seed, the block and its
    arguments, the backbone's and the data's specs (as their records' dicts), and the typed
    training, head and Trainer settings. ``from_json(to_json(c)) == c``."""

    study: str
    cell: dict  # factor -> value: what the study varied
    cell_key: str
    seed: int
    mechanism: str
    args: dict  # the block's resolved arguments
    backbone: dict  # the backbone's spec (small_cnn, resnet_d8 or a plugin's), as a dict
    data: dict  # the data spec (synthetic, real or a task plugin's), as a dict
    train: TrainSpec = field(default_factory=TrainSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    metric: str = "val_miou"  # val_miou (last epoch) or best_val_miou
    overrides: tuple = ()  # KEY=VALUE command-line overrides the study was loaded with
    eval: EvalSpec = field(default_factory=EvalSpec)  # test-time evaluation (ablate/models/inference.py)

    def __post_init__(self):
        for name in ("cell", "args", "backbone", "data"):
            object.__setattr__(self, name, _plain(dict(getattr(self, name))))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "eval", EvalSpec.from_dict(self.eval))

    def as_dict(self) -> dict:
        """The dict storage keeps (keys in this order; ``trainer.precision`` only when not 32-true,
        the checkpoint settings of ``train``, ``head.style`` and ``eval`` only when not at their
        defaults and ``overrides`` only when some were given, so configs read as they did before
        these existed)."""
        trainer = _unless_default(self.trainer, ("precision",))
        train = _unless_default(self.train, TrainSpec._unkeyed)
        head = _unless_default(self.head, HeadSpec._optional)
        return {"study": self.study, "cell": _plain(self.cell), "cell_key": self.cell_key, "seed": self.seed,
                "mechanism": self.mechanism, "args": _plain(self.args), "backbone": _plain(self.backbone),
                "data": _plain(self.data), "train": train, "head": head,
                "trainer": trainer, "metric": self.metric,
                **({"eval": self.eval.as_dict()} if self.eval != EvalSpec() else {}),
                **({"overrides": list(self.overrides)} if self.overrides else {})}

    def to_json(self) -> str:
        """The trial's ``config`` attribute in storage: ``json.dumps`` of :meth:`as_dict`."""
        return json.dumps(self.as_dict())

    @classmethod
    def from_json(cls, config: str | Mapping) -> TrialConfig:
        """A config from :meth:`to_json`'s text or :meth:`as_dict`'s dict, also one an older version
        wrote (no ``head``, ``trainer``, ``metric``, ``eval`` or newer ``train`` keys: their defaults) or a
        hand-written one that names no study or cell (a test's: seed, mechanism, backbone, data, train)."""
        d = json.loads(config) if isinstance(config, str) else dict(config)
        return cls(d.get("study", ""), d.get("cell") or {}, d.get("cell_key", ""), d["seed"], d["mechanism"],
                   d.get("args") or {}, d["backbone"],
                   d["data"], TrainSpec(**(d.get("train") or {})), HeadSpec(**(d.get("head") or {})),
                   TrainerSpec(**(d.get("trainer") or {})), d.get("metric", cls.metric),
                   tuple(d.get("overrides") or ()), EvalSpec.from_dict(d.get("eval")))

    @classmethod
    def of(cls, config: TrialConfig | str | Mapping) -> TrialConfig:
        """``config`` as a TrialConfig (the runner hands the trainer a dict or a TrialConfig)."""
        return config if isinstance(config, TrialConfig) else cls.from_json(config)
