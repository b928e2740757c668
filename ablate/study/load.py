"""Study files: the public entry point (:func:`load_study`) and the schema.

A study file is the whole truth of a run. It is parsed into a frozen :class:`Study`, every
key checked and every cell resolved before anything runs, and expanded into cells (one
assignment of the factors) times seeds. ``Study.trial(cell, seed)`` is the fully resolved, typed
configuration of one trial (:class:`~ablate.config.trial.TrialConfig`) that the trainer runs;
``Study.trial_config(cell, seed)`` is its dict, which storage keeps and ``--print-config`` prints.

Schema (every key but ``model.mechanism`` and ``factors`` has a default)::

    name: gcn_effect                 # default: the file's stem, other characters than letters,
                                     # digits, '-' and '_' made '_' (my.study.yaml -> my_study)
    question: "Does GloRe's GCN step help?"
    model:
      backbone: {name: small_cnn, width: 32, depth: 3}
      mechanism: glore               # a preset name (python -m ablate list), or a plugin: module:attr
      args: {K: 16}                  # overrides of the preset's factors
      head: {channels: 0, aux_weight: 0.0, style: plain}   # optional, see below
    data: {name: synthetic, task: global_cue, size: 32, ...}
    train: {epochs: 12, batch_size: 32, lr: 0.003, weight_decay: 0.0001, threads: 0,
            optimizer: adamw, schedule: onecycle}
    factors:                         # grid: factor -> list of values
      gcn: [on, off]                 # a mechanism factor, 'mechanism', or train.X / data.X / backbone.X
    references:                      # extra cells outside the grid (optional)
      - {mechanism: none, label: plain}   # label: a short row name for the report (display only)
    labels: {gcn=on: GCN}            # optional: a grid cell's setting -> a short row name (display only)
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
    correction: holm                 # none | holm | bonferroni | bh, within each family of comparisons
    learned_above: 70                # mIoU points: a seed at or above learned the cue (default: from the floor cell)
    screening: false                 # true: run a plan the pre-flight says cannot decide
    planning: {sd: 1.0, learn_rates: [0.5, 1.0], two_valued_test: perm, spending: obrien_fleming}
    eval: {mode: whole}              # or {mode: slide, crop: [h, w], stride: [h, w], scales: [...], flip: true}

Limits (each an exit-2 error naming the key): the file is read by :mod:`ablate.config.text`
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

Plugins (``ablate/plugins/mechanisms.py``, contracts in ``examples/my_attention/README.md``): a mechanism,
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

``model.head.style: mmseg`` (default ``plain``) builds, around the block, the convolutions mmseg's
decode head for that mechanism has (NLHead's 3x3 conv before and after the block, the concat with
the head's input and the 3x3 fusion conv, then dropout and the classifier; see
:mod:`ablate.models.mmseg_heads` for each head); ``channels`` is then that head's width (mmseg's
``channels``, 512 in its configs; 0: the backbone's). A mechanism mmseg has no head for is refused.

``eval:`` (default whole image, single scale, no flip) is mmseg's test-time setting for every
validation: ``mode: slide`` with windows of ``crop`` every ``stride`` pixels, ``scales`` (resize
ratios) and ``flip`` average the softmax over the views (:mod:`ablate.models.inference`). It changes the
measured value, so a study with a non-default ``eval:`` has cell keys of its own; the report says
which evaluation produced its numbers.

``train`` beyond the basics: ``optimizer: adamw`` (default) or ``sgd`` (with ``momentum``,
default 0.9); ``schedule: onecycle`` (default, 15% warm-up) or ``poly`` (mmseg's PolyLR: lr
decays as ``(lr - min_lr) * (1 - step / total) ** poly_power + min_lr`` every step);
``iterations: N`` trains N optimiser steps instead of epochs and validates every
``val_interval`` steps (default: once, at the end; it must divide N). With ``iterations`` an
"epoch" in progress lines, pruning and reports is one validation round, and ``train.epochs`` is
set to their number (``iterations / val_interval``); give ``epochs`` or ``iterations``, not both.
Every new setting at its default is left out of the cell key, so the keys of studies that do not
use them are those they always had. ``checkpoint_every`` (validation rounds between mid-trial
checkpoints, default 1; 0 = none), ``checkpoint_keep`` (newest N kept, default 2),
``checkpoint_dir`` (default the run folder's ``checkpoints/``; a shared path on a cluster) and
``keep_checkpoints`` (keep a finished trial's last one, default false) never enter a cell key:
where and how often a trial is saved does not change what it computes (:mod:`ablate.trainer.checkpoints`).

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

Where things live: the records (:class:`Study`, :class:`Cell`, what identifies a cell) in
:mod:`ablate.study.records`; a trial's records (:class:`TrialConfig`, :class:`TrainSpec`,
:class:`TrainerSpec`, :class:`HeadSpec`, with their defaults) in :mod:`ablate.config.trial`; the
one spec parser in :mod:`ablate.config.specs`; one function per section of the file in
:mod:`ablate.study.sections`; the resolution of cells and baselines in :mod:`ablate.study.cells`.
Import what you need from here.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config.errors import StudyError
from ..config.evaluation import parse_eval
from .cells import SEARCH_COMBOS, SEARCH_VALUES, build_cell, check_search, resolve_grid
from ..config.specs import BackboneSpec
from .records import Cell, Study, canon, cell_key, fmt_value, make_pruner, search_kind
from .sections import (
    ACCELERATORS,
    ALL_BACKBONES,
    CORRECTIONS,
    DATASETS,
    MAX_CELLS,
    MAX_NAME_CHARS,
    MAX_SEED,
    MAX_SEEDS,
    METRICS,
    OPTIMIZERS,
    PRECISIONS,
    PRUNERS,
    SAMPLERS,
    SCHEDULES,
    SEQUENTIAL_KEYS,
    STRATEGIES,
    TOP_KEYS,
    check_sequential,
    data_spec,
    factors_section,
    label_cells,
    metric_name,
    model_section,
    no_labels,
    pruner_epochs,
    pruner_spec,
    question_text,
    references_section,
    search_spec,
    seeds_spec,
    study_name,
    tracking_spec,
    train_spec,
    trainer_spec,
    verdict_spec,
    analysis_spec,
)
from ..config.specs import expect_mapping, unknown_keys
from ..config.text import read_study
from ..config.trial import MAX_THREADS, HeadSpec, TrainerSpec, TrainSpec, TrialConfig, fields_dict

__all__ = ["ACCELERATORS", "ALL_BACKBONES", "CORRECTIONS", "DATASETS", "MAX_CELLS", "MAX_NAME_CHARS", "MAX_SEED",
           "MAX_SEEDS", "MAX_THREADS", "METRICS", "OPTIMIZERS", "PRECISIONS", "PRUNERS", "SAMPLERS", "SCHEDULES",
           "SEARCH_COMBOS", "SEARCH_VALUES", "SEQUENTIAL_KEYS", "STRATEGIES", "TOP_KEYS", "BackboneSpec", "Cell",
           "HeadSpec", "Study", "TrainerSpec", "TrainSpec", "TrialConfig", "build_cell", "canon", "cell_key",
           "fields_dict", "fmt_value", "load_study", "make_pruner", "search_kind", "study_name"]


def load_study(path: str | Path, check_files: bool = True, raw: dict | None = None) -> Study:
    """Parse and validate a study file; raises :class:`StudyError` on any mistake.

    ``check_files=False`` skips what needs the cluster's disks (a real dataset's layout under
    ``data_root``, a ``pretrained`` weights file) and checks the schema alone: for validating
    shipped example studies on a machine without their data, never for running one. The file is
    read by :func:`ablate.config.text.read_study` (bounded size, UTF-8, no duplicate keys, no
    alias bombs, no .nan/.inf). ``raw``: the document already read (and perhaps changed by
    :mod:`ablate.study.overrides`), validated exactly as the file would be; ``path`` still names the
    file in errors and gives the default name. A grid's cells and baselines are resolved here, once."""
    path = Path(path)
    where = str(path)
    raw = expect_mapping(read_study(path, where) if raw is None else raw, where, "")
    unknown_keys(raw, TOP_KEYS, where, "")
    name, question = study_name(raw, path, where), question_text(raw, where)
    mech, args, backbone, head = model_section(raw, where, check_files)
    data = data_spec(expect_mapping(raw.get("data"), where, "data"), where, check_layout=check_files)
    train = train_spec(expect_mapping(raw.get("train"), where, "train"), where)
    factors = factors_section(raw, where)
    search = search_spec(raw.get("search"), where)
    refs = references_section(raw, where)
    seeds, sequential = seeds_spec(raw.get("seeds", 3), where)
    metric = metric_name(raw, where)
    baseline = expect_mapping(raw.get("baseline"), where, "baseline")
    tracking = tracking_spec(expect_mapping(raw.get("tracking"), where, "tracking"), where)
    trainer = trainer_spec(expect_mapping(raw.get("trainer"), where, "trainer"), where)
    pruner = pruner_spec(raw.get("pruner"), where, pruner_epochs(factors, refs, train))
    margin, correction = verdict_spec(raw, where)
    analysis = analysis_spec(raw, where)
    evaluation = parse_eval(raw.get("eval"), where)
    study = Study(where, name, question, mech, args, backbone, data, train, factors,
                  tuple(tuple(r.items()) for r in refs), tuple(seeds), metric, dict(baseline), search,
                  dict(tracking), pruner, trainer, head, check_files, margin, correction, sequential,
                  eval=evaluation, resolve=build_cell, analysis=analysis)
    check_sequential(sequential, search, pruner, where)
    if sequential and correction == "bh":
        raise StudyError(where, "correction", "bh is not available with sequential seeds (alpha spending needs a "
                         "family-wise correction); valid there: holm, bonferroni, none.")
    if search is not None:
        no_labels(raw, where)
        check_search(study)
        return study
    grid, baseline_keys = resolve_grid(study)
    return replace(study, grid=label_cells(grid, raw, where), baseline_keys=baseline_keys)
