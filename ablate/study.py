"""Study files: schema, validation and expansion into trials.

A study file is the whole truth of a run. It is parsed into a frozen :class:`Study`, every
key checked before anything runs, and expanded into cells (one assignment of the factors)
times seeds. ``Study.trial_config(cell, seed)`` is the fully resolved configuration of one
trial, which the runner prints with ``--print-config`` and hands, unchanged, to the trainer.

Schema (every key but ``model.mechanism`` and ``factors`` has a default)::

    name: gcn_effect                 # default: the file's stem, other characters than letters,
                                     # digits, '-' and '_' made '_' (my.study.yaml -> my_study)
    question: "Does GloRe's GCN step help?"
    model:
      backbone: {name: small_cnn, width: 32, depth: 3}
      mechanism: glore               # a preset name (python -m ablate list), or a plugin: module:attr
      args: {K: 16}                  # overrides of the preset's factors
      head: {channels: 0, aux_weight: 0.0}   # optional, see below
    data: {name: synthetic, task: global_cue, size: 32, ...}
    train: {epochs: 12, batch_size: 32, lr: 0.003, weight_decay: 0.0001, threads: 0,
            optimizer: adamw, schedule: onecycle}
    factors:                         # grid: factor -> list of values
      gcn: [on, off]                 # a mechanism factor, 'mechanism', or train.X / data.X / backbone.X
    references:                      # extra cells outside the grid (optional)
      - {mechanism: none}
    seeds: [0, 1, 2]                 # or a count: 3 -> [0, 1, 2]; at most 1,000 seeds, each < 2**31;
                                     # or {start: 3, max: 10}: sequential seeds (below)
    metric: val_miou                 # val_miou (last epoch) or best_val_miou
    baseline: {gcn: on}              # the cell the deltas are taken against (default: first); naming
                                     # only some factors ({mechanism: none} in a mechanism x task grid)
                                     # gives a baseline per group: none on the same task
    search: {n_trials: 20, sampler: tpe}   # only with range factors: {low, high, log | step} / {choices}
    pruner: {name: median, n_startup_trials: 4, n_warmup_steps: 1}   # default: none
    trainer: {accelerator: cpu, devices: 1, strategy: auto, num_nodes: 1, sync_batchnorm: true,
              precision: 32-true}
    tracking: {wandb: true, project: ablate}
    margin: 1.0                      # mIoU points: a smaller |difference| counts as equivalent (> 0)
    correction: holm                 # none | holm | bonferroni, over all comparisons of the study

Limits (each an exit-2 error naming the key): the file is read by :mod:`ablate.study_text`
(UTF-8, at most 256 KiB, 5,000 values after alias expansion, no key twice, no .nan/.inf); a grid
has at most 1,000 cells; ``train.threads`` is 0 (cores / workers) to 1,024. A search's ranges and
choices are checked against each factor when the study is loaded: its kind (an integer factor
takes integer bounds and step and is sampled as integers; a number factor is sampled as floats,
even from integer bounds), its minimum, its choices, and the combinations the block's
``check_args`` refuses (at the range's ends; an integer range of at most 64 values at every one).

Real data and the papers' backbone (see ``ablate/data/real.py`` and ``ablate/models/resnet.py``)::

    data: {name: voc | cityscapes | ade20k, data_root: DIR, crop_size: [512, 512], scale: [2048, 512],
           ratio_range: [0.5, 2.0], num_workers: 4, train_images: 0, val_images: 0, ...}
    model:
      backbone: {name: resnet_d8, depth: 50 | 101, pretrained: PATH | URL | none, norm: bn}
      head: {channels: 512, aux_weight: 0.4}

The layout under ``data_root`` is checked when the study is loaded (a missing folder or file
names the path and the expected layout), and so is a ``pretrained`` file path (URLs are fetched
when the backbone is built). ``data.X`` factors override the dataset's settings (not its name);
``backbone.X`` factors the backbone's. The class count comes from the dataset; validation scores
every val image at its original label resolution (the logits are resized to it).

Plugins (``ablate/plugins.py``, contracts in ``examples/my_attention/README.md``): a mechanism,
task or backbone of one's own, named by ``module:attr`` (the study file's folder and the current
directory are importable) -- ``model.mechanism: pkg.blocks:MyAttention`` (or a name an installed
package declares under the entry-point group ``ablate.mechanisms``), ``data: {name: pkg.tasks:make,
size, train_images, val_images, seed, <its options>}``, ``model.backbone: {name: pkg.nets:Net,
<its options>}``. Options and factors come from the plugin's annotated keyword arguments (or a
block's ``FACTORS``) and may be varied like the built-ins' (``data.X``, ``backbone.X``).

``model.head``: ``channels > 0`` puts a 3x3 conv + BN + ReLU from the backbone's channels to
``channels`` before the attention block (mmseg's heads do: 2048 -> 512 on a ResNet-D8), so the
block works at ``channels``; ``aux_weight > 0`` adds mmseg's auxiliary FCN head on ResNet stage 3
(1024 channels -> 256 -> classes) whose cross-entropy is added with that weight (training only).
Defaults (0, 0): the backbone feeds the block directly, as on the synthetic task.

``train`` beyond the basics: ``optimizer: adamw`` (default) or ``sgd`` (with ``momentum``,
default 0.9); ``schedule: onecycle`` (default, 15% warm-up) or ``poly`` (mmseg's PolyLR: lr
decays as ``(lr - min_lr) * (1 - step / total) ** poly_power + min_lr`` every step);
``iterations: N`` trains N optimiser steps instead of epochs and validates every
``val_interval`` steps (default: once, at the end; it must divide N). With ``iterations`` an
"epoch" in progress lines, pruning and reports is one validation round, and ``train.epochs`` is
set to their number (``iterations / val_interval``); give ``epochs`` or ``iterations``, not both.
Every new setting at its default is left out of the cell key, so the keys of studies that do not
use them are those they always had.

``margin`` and ``correction`` only change how the report judges the comparisons (see
:mod:`ablate.report`): a difference inside ±margin points can be called equivalent, and every
comparison of the study is corrected together. They are never part of a cell key, so changing
them re-judges the finished trials instead of starting new ones.

``seeds: {start: S, max: M, step: k}`` (k defaults to 1) runs seeds 0..S-1 in every cell, then
looks at the verdicts: each comparison with its baseline that is still undecided (neither
better/worse nor equivalent, and its interval's half-width not yet below the margin) gets k more
seeds in both cells (seeds S, S+1, ... in order, so seeds stay paired), up to M, one look at a
time (see :func:`ablate.stats.sequential_look`). Every verdict of such a study, the runner's and
the report's, is taken at alpha / K over its K possible looks (:func:`ablate.stats.verdict_alpha`).
It works with grids only (not with ``search:``) and without a pruner (a pruned trial has no value).

``pruner`` stops a trial early when its val mIoU after an epoch is poor next to the trials
finished before it (Optuna's pruners; the step is Lightning's 0-based epoch index, and a
trial's last epoch is never pruned). A pruned trial is final: it is recorded as PRUNED,
listed in the report with the epoch it reached, never counted in a mean and never run again.
Names and options (defaults are Optuna's, except hyperband's ``max_resource``, which defaults
to the study's epochs)::

    none
    median              n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1
    percentile          percentile: 25.0 (the top share kept), and the median's options
    successive_halving  min_resource: auto, reduction_factor: 4, min_early_stopping_rate: 0, bootstrap_count: 0
    hyperband           min_resource: 1, max_resource: <epochs>, reduction_factor: 3, bootstrap_count: 0

``trainer`` is passed to Lightning's Trainer. ``train.batch_size`` is the global batch: with
``devices: 2`` each process trains on half of every batch, so the run sees the same samples in
the same order as one process would (it needs a batch size divisible by the device count). A
trial with more than one device, or a strategy other than ``auto``, runs in a fresh process of
its own (``python -m ablate.trainer``) so that Lightning's DDP launcher can start its ranks;
the worker keeps owning the trial, and rank 0 reports to storage, W&B and the pruner. Settings
that differ from the defaults are part of the cell key (DDP changes the numerics: per-device
dropout masks, buffer updates), so changing them starts fresh trials. ``sync_batchnorm``
normalises over the global batch on CUDA; torch's SyncBatchNorm refuses CPU modules, so DDP on
the CPU normalises each rank's slice on its own.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .attention import MECHANISMS, resolve_mechanism
from .data.real import REAL_DATASETS, RealDataSpec, validate_real_data
from .data.synthetic import TASKS, SceneConfig
from .errors import StudyError, brief
from .models.backbone import BACKBONES
from .models.resnet import ResNetSpec, validate_resnet
from .plugins import BackboneSpec as PluginBackbone, PluginError, TaskSpec, backbone_spec, is_spec, task_spec
from .study_text import read_study

DATASETS = ("synthetic", *REAL_DATASETS)
ALL_BACKBONES = (*BACKBONES, "resnet_d8")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "poly")
# Lightning's precision settings, canonical name -> the spellings accepted for it
PRECISIONS = {"32-true": (32, "32", "32-true"), "16-mixed": (16, "16", "16-mixed"),
              "bf16-mixed": ("bf16", "bf16-mixed"), "16-true": ("16-true",), "bf16-true": ("bf16-true",),
              "64-true": (64, "64", "64-true")}

TOP_KEYS = ("name", "question", "model", "data", "train", "factors", "references", "seeds", "metric",
            "baseline", "search", "pruner", "trainer", "tracking", "margin", "correction")
METRICS = ("val_miou", "best_val_miou")
SAMPLERS = ("tpe", "random", "grid")
CORRECTIONS = ("none", "holm", "bonferroni")  # as ablate.stats.CORRECTIONS

# pruner name -> {option: (kind, minimum, maximum, default)}; kind "int", "float" or "int|auto"
_STARTUP = {"n_startup_trials": ("int", 0, None, 5), "n_warmup_steps": ("int", 0, None, 0),
            "interval_steps": ("int", 1, None, 1), "n_min_trials": ("int", 1, None, 1)}
PRUNERS = {
    "none": {},
    "median": dict(_STARTUP),
    "percentile": {"percentile": ("float", 0.0, 100.0, 25.0), **_STARTUP},
    "successive_halving": {"min_resource": ("int|auto", 1, None, "auto"), "reduction_factor": ("int", 2, None, 4),
                           "min_early_stopping_rate": ("int", 0, None, 0), "bootstrap_count": ("int", 0, None, 0)},
    "hyperband": {"min_resource": ("int", 1, None, 1), "max_resource": ("int|auto", 1, None, "auto"),
                  "reduction_factor": ("int", 2, None, 3), "bootstrap_count": ("int", 0, None, 0)},
}
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# bounds on what a study may ask for (the file itself is bounded in study_text.py)
MAX_SEEDS = 1000  # seeds per study
MAX_SEED = 2 ** 31 - 1  # the largest seed value (the runner offsets seeds; Lightning takes < 2**32)
MAX_CELLS = 1000  # cells of a grid (factor values multiplied, plus references)
MAX_NAME_CHARS = 100  # a study name names a folder and a report file
MAX_THREADS = 1024  # train.threads
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")


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

    # key -> (kind, minimum[, strict[, maximum]]): strict means the minimum itself is out of range
    _rules = {"epochs": ("int", 1), "batch_size": ("int", 1), "lr": ("float", 0.0, True),
              "weight_decay": ("float", 0.0), "threads": ("int", 0, False, MAX_THREADS), "momentum": ("float", 0.0),
              "poly_power": ("float", 0.0, True), "min_lr": ("float", 0.0), "iterations": ("int", 0),
              "val_interval": ("int", 0)}
    # the fields every cell key has always held; the others enter a key only when not at default
    _keyed = ("epochs", "batch_size", "lr", "weight_decay", "threads")

    def identity(self) -> dict:
        """What of the training settings enters the cell key."""
        default = TrainSpec()
        return {k: v for k, v in _asdict(self).items() if k in self._keyed or v != getattr(default, k)}


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
class BackboneSpec:
    name: str = "small_cnn"
    width: int = 32
    depth: int = 3

    _rules = {"width": ("int", 1), "depth": ("int", 2)}


@dataclass(frozen=True)
class HeadSpec:
    """``model.head``: a 3x3 conv to ``channels`` before the attention block (0: none) and the
    weight of the auxiliary FCN head's loss (0: none; ResNet-D8 only)."""

    channels: int = 0
    aux_weight: float = 0.0

    _rules = {"channels": ("int", 0), "aux_weight": ("float", 0.0)}


@dataclass(frozen=True)
class Cell:
    """One assignment of the factors: ``label`` is what the study varied, ``key`` a stable hash."""

    label: tuple  # ((factor, value), ...) in the study's order
    mechanism: str
    args: tuple  # resolved mechanism arguments ((name, value), ...)
    backbone: BackboneSpec | ResNetSpec
    data: SceneConfig | RealDataSpec
    train: TrainSpec
    key: str = ""

    @property
    def label_dict(self) -> dict:
        return dict(self.label)

    def title(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.label) or "(base)"


@dataclass(frozen=True)
class Study:
    path: str
    name: str
    question: str
    mechanism: str
    args: dict
    backbone: BackboneSpec | ResNetSpec
    data: SceneConfig | RealDataSpec
    train: TrainSpec
    factors: dict  # factor -> list of values (grid) or dict (search range)
    references: tuple
    seeds: tuple
    metric: str
    baseline: dict
    search: dict | None
    tracking: dict = field(default_factory=dict)
    pruner: dict = field(default_factory=lambda: {"name": "none"})  # name + every option resolved
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    check_files: bool = True  # check real-data layouts and weight files on disk (off: schema only)
    margin: float = 1.0  # mIoU points; the report's equivalence margin (never in a cell key)
    correction: str = "holm"  # the report's multiple-comparison correction (never in a cell key)
    # seeds: {start, max, step}: {"start": S, "max": M, "step": k}; seeds is then 0..M-1 (None: fixed seeds)
    sequential: dict | None = None
    overrides: tuple = ()  # KEY=VALUE command-line overrides this study was loaded with (ablate.overrides)

    # ----------------------------------------------------------------------------------
    def cells(self) -> list[Cell]:
        if self.search:
            return []
        names = list(self.factors)
        combos = [dict(zip(names, vals)) for vals in itertools.product(*(self.factors[n] for n in names))]
        combos += [dict(r) for r in self.references]
        return [self._cell(c) for c in combos]

    def _cell(self, assignment: dict, key_prefix: str = "factors") -> Cell:
        return build_cell(self, assignment, key_prefix)

    def trials(self) -> list[tuple[Cell, int]]:
        """The grid plan: every cell times every seed, cells outermost. With sequential seeds, the
        first ``start`` seeds of every cell: the runner adds the rest as the verdicts ask."""
        seeds = self.seeds[:self.sequential["start"]] if self.sequential else self.seeds
        return [(c, s) for c in self.cells() for s in seeds]

    def _is_baseline(self, c: Cell) -> bool:
        preset = MECHANISMS[c.mechanism]
        return all(k in c.label_dict and c.label_dict[k] == _canon(preset, k, v) for k, v in self.baseline.items())

    def baseline_cell(self, cells: list | None = None) -> Cell | None:
        """The first cell that matches ``baseline:`` (the first cell when there is none).
        ``cells``: the study's cells when the caller has them already."""
        cells = self.cells() if cells is None else cells
        if not cells:
            return None
        if not self.baseline:
            return cells[0]
        return next((c for c in cells if self._is_baseline(c)), None)

    def baseline_for(self, cell: Cell, cells: list | None = None) -> Cell | None:
        """The cell ``cell`` is compared with. A ``baseline:`` that names only some of the grid's
        factors (``{mechanism: none}`` in a mechanism x task grid) is a baseline per group: the
        matching cell that shares ``cell``'s values of the other factors (none on the same task).
        A cell with no such partner (a reference, or a full baseline) gets ``baseline_cell()``."""
        cells = self.cells() if cells is None else cells
        if self.baseline and self.factors and not self.search:
            rest = {f: cell.label_dict[f] for f in self.factors if f not in self.baseline and f in cell.label_dict}
            if rest:
                partner = next((c for c in cells if self._is_baseline(c)
                                and all(c.label_dict.get(f) == v for f, v in rest.items())), None)
                if partner is not None:
                    return partner
        return self.baseline_cell(cells)

    def baseline_cells(self) -> list[Cell]:
        """Every cell that is some cell's baseline, in the study's order."""
        cells = self.cells()
        keys = {b.key for b in (self.baseline_for(c, cells) for c in cells) if b is not None}
        return [c for c in cells if c.key in keys]

    def distributions(self) -> dict:
        """Optuna distributions of a search study's factors: integers for a factor that takes
        integers, floats for one that takes numbers (also when the bounds are written 0 and 1)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for k, spec in self.factors.items():
            if isinstance(spec, list):
                out[k] = CategoricalDistribution(spec)
            elif "choices" in spec:
                out[k] = CategoricalDistribution(spec["choices"])
            elif _search_kind(self, k) == "int":  # validated: integer bounds and step
                out[k] = IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")),
                                         step=1 if spec.get("log") else spec.get("step") or 1)
            else:
                out[k] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                           step=None if spec.get("log") else spec.get("step"))
        return out

    def search_cell(self, params: dict) -> Cell:
        """The cell of one sampled point of a search study."""
        return build_cell(self, dict(params), "factors")

    def trial_config(self, cell: Cell, seed: int) -> dict:
        return {
            "study": self.name,
            "cell": cell.label_dict,
            "cell_key": cell.key,
            "seed": seed,
            "mechanism": cell.mechanism,
            "args": dict(cell.args),
            "backbone": _asdict(cell.backbone),
            "data": cell.data.as_dict(),
            "train": _asdict(cell.train),
            "head": _asdict(self.head),
            "trainer": self._trainer_config(),
            "metric": self.metric,
            **({"overrides": list(self.overrides)} if self.overrides else {}),
        }

    def _trainer_config(self) -> dict:
        """``trainer`` of a trial config; ``precision`` only when not 32-true (the trainer's default),
        so trial configs of one-process studies read as they did before precision existed."""
        out = _asdict(self.trainer)
        if out["precision"] == TrainerSpec.precision:
            del out["precision"]
        return out

    def make_pruner(self):
        """The study's Optuna pruner (a fresh object: SH/Hyperband keep per-process state)."""
        return make_pruner(self.pruner)


def make_pruner(spec: dict):
    """An Optuna pruner from a resolved ``pruner:`` spec (see :data:`PRUNERS`)."""
    import optuna

    opts = {k: v for k, v in spec.items() if k != "name"}
    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**opts),
        "percentile": lambda: optuna.pruners.PercentilePruner(**opts),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**opts),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**opts),
    }[spec["name"]]()


def _asdict(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = brief(v)  # bounded; a value whose repr is short prints as str() always did
    return str(v) if text == repr(v) else text


# ======================================================================================
# parsing and validation
# ======================================================================================

def _expect_mapping(obj, where: str, key: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise StudyError(where, key, f"expected a mapping (key: value lines), got {type(obj).__name__} {brief(obj)}.")
    return obj


def _unknown(obj: dict, allowed, where: str, prefix: str) -> None:
    for k in obj:
        if k not in allowed:
            raise StudyError(where, f"{prefix}{k}", f"unknown key; valid keys here are: {', '.join(allowed)}.")


def _typed(value, kind: str, minimum, where: str, key: str, strict: bool = False, maximum=None):
    """``value`` as an int or a finite float, checked against ``minimum`` (and ``maximum``)."""
    ok = (kind == "int" and isinstance(value, int) and not isinstance(value, bool)) or \
         (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise StudyError(where, key, f"expected {'an integer' if kind == 'int' else 'a number'}, got {brief(value)}.")
    if kind == "float" and not (math.isfinite(value) if isinstance(value, float) else abs(value) < 2 ** 1023):
        raise StudyError(where, key, f"{brief(value)} is not a finite number; give a finite one.")
    value = float(value) if kind == "float" else value
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise StudyError(where, key, f"{brief(value)} is out of range: it must be {'>' if strict else '>='} {minimum:g}.")
    if maximum is not None and value > maximum:
        raise StudyError(where, key, f"{brief(value)} is out of range: it must be <= {maximum:g}.")
    return value


def _spec(cls, raw: dict, where: str, prefix: str, base=None):
    """Build a frozen spec dataclass from ``raw``, checking keys and types against its defaults."""
    base = base or cls()
    allowed = [f.name for f in fields(cls)]
    _unknown(raw, allowed, where, prefix)
    rules = getattr(cls, "_rules", {})
    values = _asdict(base)
    for k, v in raw.items():
        default = values[k]
        if k in rules:
            v = _typed(v, *rules[k][:2], where, prefix + k, *rules[k][2:])
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise StudyError(where, prefix + k, f"expected true or false, got {brief(v)}.")
        elif isinstance(default, int):
            v = _typed(v, "int", 0, where, prefix + k)
        elif isinstance(default, float):
            v = _typed(v, "float", 0.0, where, prefix + k)
        elif isinstance(default, str) and not isinstance(v, str):
            raise StudyError(where, prefix + k, f"expected a string, got {brief(v)}.")
        values[k] = v
    return cls(**values)


def _data_spec(raw: dict, where: str, base=None, prefix: str = "data.", check_layout: bool = True):
    """``data:``: the synthetic task's :class:`SceneConfig`, or a real dataset's spec (layout on
    disk checked unless ``check_layout`` is off). ``base``: the spec a ``data.X`` factor overrides."""
    raw = dict(raw)
    name = raw.get("name", getattr(base, "name", "synthetic"))
    if is_spec(name) or isinstance(base, TaskSpec):  # a task plugin (ablate/plugins.py)
        return task_spec(raw, where, prefix, base if isinstance(base, TaskSpec) else None)
    if name in REAL_DATASETS:
        return validate_real_data(raw, where, prefix, base if isinstance(base, RealDataSpec) else None, check_layout)
    raw.pop("name", None)
    if name != "synthetic":
        raise StudyError(where, prefix + "name", f"{_unknown_name('dataset', name)}; valid: {', '.join(DATASETS)}.")
    cfg = _spec(SceneConfig, raw, where, prefix, base)
    if cfg.task not in TASKS:
        raise StudyError(where, prefix + "task", f"unknown synthetic task {brief(cfg.task)}; valid: {', '.join(TASKS)}.")
    checks = [
        ("size", cfg.size >= 16, "must be >= 16"),
        ("train_images", cfg.train_images >= 1, "must be >= 1"),
        ("val_images", cfg.val_images >= 1, "must be >= 1"),
        ("min_objects", 1 <= cfg.min_objects <= cfg.max_objects, "must be >= 1 and <= max_objects"),
        ("min_side", 1 <= cfg.min_side <= cfg.max_side, "must be >= 1 and <= max_side"),
        ("max_side", cfg.max_side * 2 + cfg.cue_gap * 2 + cfg.cue_side <= cfg.size,
         "leaves no room for the cue: need 2*max_side + 2*cue_gap + cue_side <= size"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise StudyError(where, prefix + key, f"{brief(getattr(cfg, key))} {why}.")
    return cfg


def _backbone_spec(raw: dict, where: str, base=None, prefix="model.backbone.", check_files: bool = True):
    """``model.backbone``: a :class:`BackboneSpec` (small_cnn) or a :class:`ResNetSpec` (resnet_d8,
    whose ``pretrained`` file path must exist unless ``check_files`` is off) or a plugin's."""
    if is_spec(raw.get("name", getattr(base, "name", None))):  # a backbone plugin (ablate/plugins.py)
        return backbone_spec(raw, where, prefix, base if isinstance(base, PluginBackbone) else None)
    if raw.get("name", getattr(base, "name", None)) == "resnet_d8":
        return validate_resnet(raw, where, prefix, base if isinstance(base, ResNetSpec) else None, check_files)
    base = base if isinstance(base, BackboneSpec) else None  # a factor may switch the backbone family
    name = raw.get("name", getattr(base, "name", "small_cnn"))
    if not isinstance(name, str) or name not in BACKBONES:
        raise StudyError(where, prefix + "name", f"{_unknown_name('backbone', name)}; valid: {', '.join(ALL_BACKBONES)}.")
    return _spec(BackboneSpec, raw, where, prefix, base)


def _train_spec(raw: dict, where: str, base: TrainSpec | None = None, prefix: str = "train.") -> TrainSpec:
    """``train:`` (or one ``train.X`` factor over ``base``), with the choices and the
    iterations/epochs bookkeeping checked."""
    if base is not None and base.iterations and "epochs" in raw and "iterations" not in raw:
        raise StudyError(where, prefix + "epochs", "this study trains for train.iterations steps, so it has no "
                         "epochs to vary; vary train.iterations or train.val_interval instead.")
    if raw.get("iterations") and "epochs" in raw:
        raise StudyError(where, prefix + "epochs", "give either train.epochs or train.iterations, not both "
                         "(with iterations, the number of validation rounds is iterations / val_interval).")
    spec = _spec(TrainSpec, raw, where, prefix, base)
    for key, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(spec, key) not in valid:
            raise StudyError(where, prefix + key, f"unknown {key} {brief(getattr(spec, key))}; valid: {', '.join(valid)}.")
    if "momentum" in raw and spec.optimizer != "sgd":
        raise StudyError(where, prefix + "momentum", f"momentum applies to optimizer sgd only, and this one is "
                         f"{brief(spec.optimizer)}; set train.optimizer: sgd or drop momentum.")
    for key in ("poly_power", "min_lr"):
        if key in raw and spec.schedule != "poly":
            raise StudyError(where, prefix + key, f"{key} applies to schedule poly only, and this one is "
                             f"{brief(spec.schedule)}; set train.schedule: poly or drop {key}.")
    if spec.schedule == "poly" and spec.min_lr >= spec.lr:
        raise StudyError(where, prefix + "min_lr", f"{brief(spec.min_lr)} is not below train.lr ({brief(spec.lr)}); the poly "
                         "schedule decays the lr from train.lr down to min_lr.")
    if spec.iterations:
        interval = spec.val_interval or spec.iterations
        if interval > spec.iterations or spec.iterations % interval:
            raise StudyError(where, prefix + "val_interval", f"{spec.val_interval} does not divide train.iterations "
                             f"({spec.iterations}); give a divisor, e.g. {spec.iterations // 10 or 1} for 10 "
                             "validations, or 0 to validate once at the end.")
        spec = replace(spec, epochs=spec.iterations // interval)
    elif spec.val_interval:
        raise StudyError(where, prefix + "val_interval", "val_interval needs train.iterations (step-based "
                         "training); with epochs, validation runs after every epoch.")
    return spec


def _head_spec(raw: dict, where: str) -> HeadSpec:
    return _spec(HeadSpec, raw, where, "model.head.")


def _trainer_precision(value, where: str) -> str:
    for name, spellings in PRECISIONS.items():
        if any(value == s and type(value) is type(s) for s in spellings):
            return name
    raise StudyError(where, "trainer.precision", f"unknown precision {brief(value)}; valid: {', '.join(PRECISIONS)} "
                     "(32 and 16 are read as 32-true and 16-mixed, bf16 as bf16-mixed).")


def _unknown_name(what: str, value) -> str:
    """"unknown metric 'x'" for a string; "expected a metric name, got a list of 3 items" otherwise."""
    return f"unknown {what} {brief(value)}" if isinstance(value, str) else f"expected a {what} name, got {brief(value)}"


def _mechanism(name, where: str, key: str) -> str:
    """``name`` checked: a built-in preset, a plugin by ``module:attr`` (the study's folder and the
    current directory importable) or an installed plugin's preset (ablate/plugins.py)."""
    if isinstance(name, str):
        try:
            resolve_mechanism(name, Path(where).parent)
            return name
        except PluginError as e:
            raise e.at(where, key) from None
        except KeyError:
            pass
    raise StudyError(where, key, f"{_unknown_name('mechanism', name)}; valid: {', '.join(sorted(MECHANISMS))} "
                     "(python -m ablate list shows each one's factors), a plugin's installed name, or your own "
                     "block as module:attr.")


def build_cell(study: Study, assignment: dict, key_prefix: str) -> Cell:
    """Resolve one assignment of factors against the study's base into a :class:`Cell`."""
    where = study.path
    mech = study.mechanism
    mech_args: dict = {}
    train, data, backbone = study.train, study.data, study.backbone
    if "mechanism" in assignment:
        mech = _mechanism(assignment["mechanism"], where, f"{key_prefix}.mechanism")
    preset = MECHANISMS[mech]
    # base args apply where the cell's mechanism has them (a reference cell may switch mechanism)
    base_args = {k: v for k, v in study.args.items() if k in preset.defaults} if mech != study.mechanism else dict(study.args)
    overrides = dict(base_args)
    for k, v in assignment.items():
        if not isinstance(k, str):
            raise StudyError(where, f"{key_prefix}.{k}", f"a factor is named by a string (a mechanism factor, "
                             f"mechanism, train.<key>, data.<key> or backbone.<key>), not by {brief(k)}.")
        if k == "mechanism":
            continue
        if k.startswith("train."):
            train = _train_spec({k[6:]: v}, where, train)
        elif k == "data.name":
            raise StudyError(where, f"{key_prefix}.data.name", "the dataset cannot be a factor: each dataset has its "
                             "own data_root, classes and settings; write one study per dataset.")
        elif k.startswith("data."):
            if isinstance(data, TaskSpec):
                data = _data_spec({k[5:]: v}, where, data)
            elif isinstance(data, RealDataSpec):  # the layout was checked once: re-check only where it can move
                moved = k[5:] in ("data_root", "train_split", "val_split", "aug")
                data = _data_spec({k[5:]: v}, where, data, check_layout=moved and study.check_files)
            else:
                data = _data_spec({**data.as_dict(), k[5:]: v, "name": "synthetic"}, where, None)
        elif k.startswith("backbone."):
            backbone = _backbone_spec({k[9:]: v}, where, backbone, "model.backbone.", study.check_files)
        else:
            _check_factor_value(preset, k, v, where, f"{key_prefix}.{k}",
                                " (also valid: mechanism, train.<key>, data.<key>, backbone.<key>)")
            overrides[k] = v
    try:
        mech_args = preset.resolve(overrides)
    except (KeyError, ValueError) as e:
        bad = next((k for k in overrides if k not in preset.defaults), None)
        if bad is None and getattr(e, "key", None) in assignment:  # a combination the block refuses
            bad = e.key
        raise StudyError(where, f"{key_prefix}.{bad or ''}".rstrip("."), str(e).strip('"') + ".") from None
    world = study.trainer.world_size
    if train.batch_size % world:
        raise StudyError(where, "train.batch_size", f"{train.batch_size} cannot be split evenly over {world} "
                         "devices (trainer.devices x trainer.num_nodes); the batch size is the global batch, "
                         f"so give a multiple of {world}.")
    if study.head.aux_weight and backbone.name != "resnet_d8":
        raise StudyError(where, "model.head.aux_weight", f"the auxiliary head reads ResNet stage 3, and backbone "
                         f"{brief(backbone.name)} has none; use model.backbone.name: resnet_d8 or set aux_weight: 0.")
    label = tuple((k, _canon(preset, k, v)) for k, v in assignment.items())
    cell = Cell(label, mech, tuple(sorted(mech_args.items())), backbone, data, train)
    content = {"mechanism": mech, "args": preset.identity(mech_args), "backbone": _asdict(backbone),
               "data": data.as_dict(), "train": train.identity()}
    # only settings that differ from one CPU process enter the key (older keys stay valid)
    trainer_diff = {k: v for k, v in _asdict(study.trainer).items() if v != getattr(TrainerSpec(), k)}
    if trainer_diff:
        content["trainer"] = trainer_diff
    head_diff = {k: v for k, v in _asdict(study.head).items() if v != getattr(HeadSpec(), k)}
    if head_diff:  # likewise: no head settings, the key of a study written before heads existed
        content["head"] = head_diff
    payload = json.dumps(content, sort_keys=True, default=str)
    return Cell(label, mech, cell.args, backbone, data, train, hashlib.sha1(payload.encode()).hexdigest()[:12])


def _check_factor_value(preset, k, v, where: str, key: str, also: str = "") -> None:
    """A mechanism factor the preset has, with a value its factor accepts."""
    if k not in preset.defaults:
        raise StudyError(where, key, f"mechanism {brief(preset.name)} has no factor {brief(k)}; its factors are: "
                         f"{', '.join(preset.defaults) or 'none'}{also}.")
    try:
        preset.factor(k).coerce(v)
    except ValueError as e:
        raise StudyError(where, key, f"{e}.") from None


def _canon(preset, key, value):
    if key in preset.defaults:
        try:
            return preset.factor(key).coerce(value)
        except ValueError:
            return value
    return value


def load_study(path: str | Path, check_files: bool = True, raw: dict | None = None) -> Study:
    """Parse and validate a study file; raises :class:`StudyError` on any mistake.

    ``check_files=False`` skips what needs the cluster's disks (a real dataset's layout under
    ``data_root``, a ``pretrained`` weights file) and checks the schema alone: for validating
    shipped example studies on a machine without their data, never for running one. The file is
    read by :func:`ablate.study_text.read_study` (bounded size, UTF-8, no duplicate keys, no
    alias bombs, no .nan/.inf). ``raw``: the document already read (and perhaps changed by
    :mod:`ablate.overrides`), validated exactly as the file would be; ``path`` still names the
    file in errors and gives the default name."""
    path = Path(path)
    where = str(path)
    raw = _expect_mapping(read_study(path, where) if raw is None else raw, where, "")
    _unknown(raw, TOP_KEYS, where, "")
    name = study_name(raw, path, where)
    question = raw.get("question", "")
    if not isinstance(question, str):
        raise StudyError(where, "question", "expected a string stating the question the study answers.")

    model = _expect_mapping(raw.get("model"), where, "model")
    _unknown(model, ("backbone", "mechanism", "args", "head"), where, "model.")
    if "mechanism" not in model:
        raise StudyError(where, "model.mechanism", "missing; name the mechanism under study, one of: "
                         f"{', '.join(sorted(MECHANISMS))}.")
    mech = _mechanism(model["mechanism"], where, "model.mechanism")
    args = _expect_mapping(model.get("args"), where, "model.args")
    for k, v in args.items():
        _check_factor_value(MECHANISMS[mech], k, v, where, f"model.args.{k}")
    backbone = _backbone_spec(_expect_mapping(model.get("backbone"), where, "model.backbone"), where,
                              check_files=check_files)
    head = _head_spec(_expect_mapping(model.get("head"), where, "model.head"), where)
    data = _data_spec(_expect_mapping(raw.get("data"), where, "data"), where, check_layout=check_files)
    train = _train_spec(_expect_mapping(raw.get("train"), where, "train"), where)

    factors = _expect_mapping(raw.get("factors"), where, "factors")
    for k in factors:
        if not isinstance(k, str):
            raise StudyError(where, f"factors.{k}", f"a factor is named by a string (a mechanism factor, mechanism, "
                             f"train.<key>, data.<key> or backbone.<key>), not by {brief(k)}.")
    search = _search_spec(raw.get("search"), where)
    refs = raw.get("references") or []
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise StudyError(where, "references", "expected a list of mappings, each one cell, e.g. - {mechanism: none}.")
    seeds, sequential = _seeds(raw.get("seeds", 3), where)
    metric = raw.get("metric", "val_miou")
    if metric not in METRICS:
        raise StudyError(where, "metric", f"{_unknown_name('metric', metric)}; valid: {', '.join(METRICS)}.")
    baseline = _expect_mapping(raw.get("baseline"), where, "baseline")
    tracking = _tracking_spec(_expect_mapping(raw.get("tracking"), where, "tracking"), where)

    trainer = _trainer_spec(_expect_mapping(raw.get("trainer"), where, "trainer"), where)
    rounds = ("train.epochs", "train.iterations", "train.val_interval")  # what sets the number of validations
    epochs_vary = any(k in rounds for k in factors) or any(k in r for r in refs for k in rounds)
    pruner = _pruner_spec(raw.get("pruner"), where, None if epochs_vary else train.epochs)
    margin, correction = _verdict_spec(raw, where)

    study = Study(where, name, question, mech, dict(args), backbone, data, train,
                  {k: v for k, v in factors.items()}, tuple(tuple(r.items()) for r in refs), tuple(seeds),
                  metric, dict(baseline), search, dict(tracking), pruner, trainer, head, check_files,
                  margin, correction, sequential)
    if sequential and search is not None:
        raise StudyError(where, "seeds", "sequential seeds ({start, max}) choose seeds per grid cell by its "
                         "verdicts; a search runs one seed per sampled point: give seeds as a list or a count.")
    if sequential and pruner["name"] != "none":
        raise StudyError(where, "pruner", "a pruned trial has no value to judge, so sequential seeds ({start, max}) "
                         "cannot be combined with a pruner: remove pruner: (or set it to none), or give seeds as a "
                         "list or a count.")
    if search is None:
        _check_grid(study, refs)
    else:
        _check_search(study, refs)
    return study


def study_name(raw: dict, path: Path, where: str) -> str:
    """``name:``, or the file's stem with every run of other characters than letters, digits,
    '-' and '_' replaced by '_' (``my.study.yaml`` -> ``my_study``)."""
    def valid(name) -> bool:
        return isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and \
            all(ch.isalnum() or ch in "-_" for ch in name)

    rule = f"1 to {MAX_NAME_CHARS} letters, digits, '-' and '_' (it names the run folder and the report)"
    if "name" in raw:
        if not valid(raw["name"]):
            raise StudyError(where, "name", f"{brief(raw['name'])} is not a valid study name: use {rule}.")
        return raw["name"]
    derived = re.sub(r"[^\w-]+", "_", path.stem).strip("_")[:MAX_NAME_CHARS]
    if not valid(derived):
        raise StudyError(where, "", f"the study has no 'name:' and its file name {brief(path.name)} gives no "
                         f"usable one; add a line such as 'name: my_study' ({rule}).")
    return derived




def _search_spec(search, where: str) -> dict | None:
    if search is None:
        return None
    search = _expect_mapping(search, where, "search")
    _unknown(search, ("n_trials", "sampler"), where, "search.")
    n = search.get("n_trials")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise StudyError(where, "search.n_trials", f"expected a whole number of trials >= 1, got {brief(n)}.")
    sampler = search.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise StudyError(where, "search.sampler", f"{_unknown_name('sampler', sampler)}; valid: {', '.join(SAMPLERS)}.")
    return {"n_trials": n, "sampler": sampler}


SEQUENTIAL_KEYS = ("start", "max", "step")


def _seeds(seeds, where: str) -> tuple[list, dict | None]:
    """``seeds:`` as (the seeds, None), a count N meaning 0..N-1; or, for sequential seeding
    ``{start: S, max: M[, step: 1]}``, (0..M-1, {"start": S, "max": M, "step": step}).
    Both bounded (:data:`MAX_SEEDS`, :data:`MAX_SEED`)."""
    valid = (f"give a count from 1 to {MAX_SEEDS:,}, a list of distinct integers from 0 to {MAX_SEED:,}, or "
             f"{{start: S, max: M}} (sequential seeds, 2 <= S <= M <= {MAX_SEEDS:,})")
    if isinstance(seeds, dict):
        spec = _sequential(seeds, where)
        return list(range(spec["max"])), spec
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEEDS:
            raise StudyError(where, "seeds", f"{brief(seeds)} seeds: {valid} (a count must be >= 1).")
        return list(range(seeds)), None
    if not isinstance(seeds, list) or not seeds or len(seeds) > MAX_SEEDS:
        raise StudyError(where, "seeds", f"expected a count or a list of seeds, got {brief(seeds)}; {valid}.")
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise StudyError(where, f"seeds[{i}]", f"{brief(s)} is not a seed; {valid}.")
    if len(set(seeds)) != len(seeds):
        dup = next(s for s in seeds if seeds.count(s) > 1)
        raise StudyError(where, "seeds", f"seed {dup} is listed twice; {valid}.")
    return seeds, None


def _sequential(spec: dict, where: str) -> dict:
    """``seeds: {start, max, step}``: every cell runs seeds 0..start-1, then the runner adds
    ``step`` seeds at a time (in order, up to max-1) to the comparisons still undecided."""
    _unknown(spec, SEQUENTIAL_KEYS, where, "seeds.")
    for k in ("start", "max"):
        if k not in spec:
            raise StudyError(where, f"seeds.{k}", f"missing; sequential seeds are {{start: S, max: M}} with "
                             f"2 <= S <= M <= {MAX_SEEDS:,}, e.g. {{start: 3, max: 10}} (optionally step: 1, the "
                             "seeds added to an undecided comparison at each look).")
    start = _typed(spec["start"], "int", 2, where, "seeds.start", maximum=MAX_SEEDS)
    top = _typed(spec["max"], "int", start, where, "seeds.max", maximum=MAX_SEEDS)
    step = _typed(spec.get("step", 1), "int", 1, where, "seeds.step", maximum=max(1, top - start))
    return {"start": start, "max": top, "step": step}


def _tracking_spec(tracking: dict, where: str) -> dict:
    """``tracking:``: wandb on/off and W&B's project and entity names (checked here: W&B would
    refuse them in every trial)."""
    _unknown(tracking, ("wandb", "project", "entity"), where, "tracking.")
    if "wandb" in tracking and not isinstance(tracking["wandb"], bool):
        raise StudyError(where, "tracking.wandb", f"expected true or false, got {brief(tracking['wandb'])}.")
    for k in ("project", "entity"):
        v = tracking.get(k)
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 128 or any(c in v for c in "/\\#?%:")):
            raise StudyError(where, f"tracking.{k}", f"expected a W&B {k} name (1 to 128 characters, none of "
                             f"/ \\ # ? % :), got {brief(v)}.")
    return tracking


def _check_grid(study: Study, refs: list) -> None:
    """Resolve every cell of a grid study now: a value a factor refuses fails here, before anything runs."""
    where, factors, preset = study.path, study.factors, MECHANISMS[study.mechanism]
    for k, values in factors.items():
        key = f"factors.{k}"
        if not isinstance(values, list) or not values:
            raise StudyError(where, key, f"expected a non-empty list of values to try, e.g. {k}: [a, b]; got "
                             f"{brief(values)}. (Ranges such as {{low, high}} need a 'search:' section.)")
        if len(set(map(repr, values))) != len(values):
            raise StudyError(where, key, f"the list {brief(values)} repeats a value; each cell must be distinct.")
    n_cells = math.prod(len(v) for v in factors.values()) + len(refs)
    if n_cells > MAX_CELLS:
        sizes = " x ".join(str(len(v)) for v in factors.values())
        raise StudyError(where, "factors", f"{sizes} values{f' + {len(refs)} references' if refs else ''} make "
                         f"{n_cells:,} cells, more than the {MAX_CELLS:,} a study may have; split it into smaller "
                         "studies, or use a 'search:' section.")
    names = list(factors)
    for k in names:  # values that coincide once coerced (on / 'on' / true) are one cell
        canon = [repr(_canon(preset, k, v)) for v in factors[k]]
        if len(set(canon)) != len(canon):
            raise StudyError(where, f"factors.{k}", f"the list {brief(factors[k])} repeats a value (after reading "
                             "on/off/true/false as the same switch); each cell must be distinct.")
    for vals in itertools.product(*(factors[n] for n in names)):
        build_cell(study, dict(zip(names, vals)), "factors")
    for i, r in enumerate(refs):
        build_cell(study, r, f"references[{i}]")
    cells = study.cells()
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        dup = next(c for c in cells if keys.count(c.key) > 1)
        raise StudyError(where, "references", f"two cells resolve to the same configuration ({dup.title()}); "
                         "remove the duplicate.")
    if study.baseline and study.baseline_cell(cells) is None:
        listed = "; ".join(c.title() for c in cells[:20]) + (f"; and {len(cells) - 20} more" if len(cells) > 20 else "")
        raise StudyError(where, "baseline", f"{brief(study.baseline)} matches no cell; cells are: {listed}.")


def _verdict_spec(raw: dict, where: str) -> tuple[float, str]:
    """``margin:`` (mIoU points, a finite number > 0 and <= 100) and ``correction:``."""
    margin = raw.get("margin", 1.0)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool):
        raise StudyError(where, "margin", f"expected a number of mIoU points (> 0, e.g. 1.0), got {brief(margin)}.")
    margin = _typed(margin, "float", 0, where, "margin", strict=True, maximum=100)
    correction = raw.get("correction", "holm")
    if correction not in CORRECTIONS:
        raise StudyError(where, "correction", f"{_unknown_name('correction', correction)}; valid: "
                         f"{', '.join(CORRECTIONS)} (holm is the default).")
    return margin, correction


def _pruner_spec(raw, where: str, epochs: int | None) -> dict:
    """``pruner:`` as a mapping with a name and options, or just a name; every option resolved."""
    if raw is None:
        return {"name": "none"}
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = dict(_expect_mapping(raw, where, "pruner"))
    name = raw.pop("name", None)
    if not isinstance(name, str) or name not in PRUNERS:
        got = "missing" if name is None else f"{_unknown_name('pruner', name)}"
        raise StudyError(where, "pruner.name", f"{got}; valid: {', '.join(PRUNERS)}.")
    options = PRUNERS[name]
    for k in raw:
        if k not in options:
            valid = ", ".join(options) or "none (this pruner takes no options)"
            raise StudyError(where, f"pruner.{k}", f"unknown option of the {name} pruner; valid: {valid}.")
    spec = {"name": name}
    for k, (kind, low, high, default) in options.items():
        v = raw.get(k, default)
        if k == "max_resource" and k not in raw and epochs is not None:
            v = epochs  # a grid's trials all run the study's epochs: no need to guess it from the first
        if kind == "int|auto" and v == "auto":
            spec[k] = v
            continue
        v = _typed(v, "float" if kind == "float" else "int", low, where, f"pruner.{k}")
        if high is not None and v > high:
            raise StudyError(where, f"pruner.{k}", f"{brief(v)} is out of range: it must be <= {high:g}.")
        spec[k] = v
    return spec


def _trainer_spec(raw: dict, where: str) -> TrainerSpec:
    raw = dict(raw)
    precision = _trainer_precision(raw.pop("precision"), where) if "precision" in raw else TrainerSpec.precision
    spec = replace(_spec(TrainerSpec, raw, where, "trainer."), precision=precision)
    if spec.accelerator not in ACCELERATORS:
        raise StudyError(where, "trainer.accelerator", f"unknown accelerator {brief(spec.accelerator)}; valid: "
                         f"{', '.join(ACCELERATORS)}.")
    if spec.strategy not in STRATEGIES:
        raise StudyError(where, "trainer.strategy", f"unknown strategy {brief(spec.strategy)}; valid: "
                         f"{', '.join(STRATEGIES)} (auto picks ddp when devices > 1).")
    if spec.accelerator == "cpu" and spec.precision in ("16-mixed", "16-true"):
        raise StudyError(where, "trainer.precision", f"{spec.precision} needs a GPU; on the CPU use 32-true or "
                         "bf16-mixed.")
    if spec.num_nodes != 1:
        raise StudyError(where, "trainer.num_nodes", f"{spec.num_nodes} nodes: the runner starts a trial's "
                         "processes on one machine, so num_nodes must be 1; to use several machines, start the "
                         "same command on each against one --storage (each runs its own trials).")
    return spec


SEARCH_VALUES = 64  # an integer range with at most this many values is checked value by value
SEARCH_COMBOS = 512  # searches with at most this many checked combinations are checked combination by combination


def _check_search(study: Study, refs: list) -> None:
    """Check a search study's ranges and choices against each factor's own rules now (its kind,
    minimum and choices, and the combinations the block's ``check_args`` refuses), so that a value
    the sampler could draw and a trial would refuse fails at load time, before any trial exists.
    A range is checked at its ends (an integer range with few values at every value)."""
    where, preset = study.path, MECHANISMS[study.mechanism]
    if refs:
        raise StudyError(where, "references", "references are grid cells; they cannot be combined with 'search:'.")
    if not study.factors:
        raise StudyError(where, "factors", "a search needs at least one factor with a range or choices.")
    picks = {}
    for k, spec in study.factors.items():
        if k != "mechanism" and not k.startswith(("train.", "data.", "backbone.")) and k not in preset.defaults:
            raise StudyError(where, f"factors.{k}", f"mechanism {brief(study.mechanism)} has no factor {brief(k)}; "
                             f"its factors are: {', '.join(preset.defaults) or 'none'}.")
        picks[k] = _search_picks(study, k, spec)
        if study.search["sampler"] == "grid" and isinstance(spec, dict) and "choices" not in spec:
            raise StudyError(where, f"factors.{k}", "the grid sampler tries listed values only; give choices "
                             "(a list) or use sampler: tpe or random for a range.")
    for k, values in picks.items():
        for value, subkey, what in values:
            try:
                build_cell(study, {k: value}, "factors")
            except StudyError as e:
                raise StudyError(where, subkey, f"{what} is not valid: {e.message}") from None
    if math.prod(len(v) for v in picks.values()) <= SEARCH_COMBOS:
        names = list(picks)
        for combo in itertools.product(*picks.values()):
            assignment = {n: value for n, (value, _, _) in zip(names, combo)}
            try:
                build_cell(study, assignment, "factors")
            except StudyError as e:
                shown = ", ".join(f"{n}={brief(v)}" for n, v in assignment.items())
                raise StudyError(where, e.key, f"the search can sample {shown}, which is not valid: "
                                 f"{e.message}") from None


def _search_picks(study: Study, k: str, spec) -> list[tuple]:
    """The values of one search factor to check, as (value, key to blame, words for it)."""
    where, key = study.path, f"factors.{k}"
    if isinstance(spec, list) or (isinstance(spec, dict) and "choices" in spec):
        if isinstance(spec, dict):
            _unknown(spec, ("choices",), where, key + ".")
        choices, key = (spec, key) if isinstance(spec, list) else (spec["choices"], key + ".choices")
        if not isinstance(choices, list) or not choices or len(choices) > MAX_CELLS:
            raise StudyError(where, key, f"expected a non-empty list of at most {MAX_CELLS:,} choices, got "
                             f"{brief(choices)}.")
        if len(set(map(repr, choices))) != len(choices):
            raise StudyError(where, key, f"the choices {brief(choices)} repeat a value.")
        return [(c, f"{key}[{i}]", f"choice {brief(c)}") for i, c in enumerate(choices)]
    if not isinstance(spec, dict):
        raise StudyError(where, key, "in a search, give {low: L, high: H[, log: true][, step: S]} or a list of "
                         f"choices, not {brief(spec)}.")
    _unknown(spec, ("low", "high", "log", "step", "choices"), where, key + ".")
    for end in ("low", "high", "step"):
        v = spec.get(end)
        if (v is not None or end != "step") and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise StudyError(where, f"{key}.{end}", f"expected a number, got {brief(v)}; a range is "
                             "{low: L, high: H} with numbers L < H (and optionally log: true or step: S > 0).")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    if low >= high:
        raise StudyError(where, key, f"expected numbers low < high, got low={brief(low)}, high={brief(high)}.")
    if not isinstance(log, bool):
        raise StudyError(where, key + ".log", f"expected true or false, got {brief(log)}.")
    if step is not None and (step <= 0 or log):
        why = "give step or log: true, not both (a log scale has no steps)" if log else "a step must be > 0"
        raise StudyError(where, key + ".step", f"{brief(step)}: {why}.")
    if log and low <= 0:
        raise StudyError(where, key + ".low", "a log-scale range needs low > 0.")
    kind = _search_kind(study, k)
    if kind in ("bool", "choice", "other"):
        takes = {"bool": "true or false", "choice": "one of its named choices"}.get(kind, "values that are not numbers")
        raise StudyError(where, key, f"{k} takes {takes}, so a range of numbers cannot sample it; list the values "
                         "to try instead, e.g. {choices: [a, b]}.")
    ends = [(low, key + ".low", "the range's low end"), (high, key + ".high", "the range's high end")]
    if kind != "int":
        return ends
    for end, v in (("low", low), ("high", high), ("step", step)):
        if v is not None and not isinstance(v, int):
            raise StudyError(where, f"{key}.{end}", f"{k} takes integers, so the range's {end} must be an integer, "
                             f"got {brief(v)}.")
    values = range(low, high + 1, step or 1)
    inner = values[1:-1] if len(values) <= SEARCH_VALUES else [values[1], values[-2]]
    return [ends[0], *((v, key, f"{v}, a value the range can sample,") for v in inner),
            (values[-1], key + ".high", "the range's high end")]


def _search_kind(study: Study, k: str) -> str | None:
    """What a search factor takes: "int", "float", "bool", "choice" or "other" (None: no such key)."""
    if k == "mechanism":
        return "choice"
    section, _, name = k.partition(".")
    if name and section in ("train", "data", "backbone"):
        base = {"train": study.train, "data": study.data, "backbone": study.backbone}[section]
        options = dict(getattr(base, "options", ()))  # a task or backbone plugin's own options
        if name not in options and (name == "options" or name not in {f.name for f in fields(base)}):
            return None
        default = options[name] if name in options else getattr(base, name)
        if isinstance(default, bool):
            return "bool"
        return "int" if isinstance(default, int) else "float" if isinstance(default, float) else "other"
    preset = MECHANISMS[study.mechanism]
    return preset.factor(k).kind if k in preset.defaults else None
