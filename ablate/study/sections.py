"""Parsing and validation of a study file, one function per section (``model``, ``data``,
``train``, ``factors``, ``references``, ``seeds``, ``search``, ``pruner``, ``trainer``, ``tracking``,
``margin``/``correction``; ``eval`` is :func:`ablate.config.evaluation.parse_eval`), each reading its
values through the one spec parser of :mod:`ablate.config.specs` into the records of
:mod:`ablate.study.records`. The schema is in
:mod:`ablate.study`'s docstring; :func:`ablate.study.load_study` calls these in the file's order.
The ``model:`` section is in :mod:`ablate.study.model` (re-exported here).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..data.real_spec import REAL_DATASETS, RealDataSpec, validate_real_data  # not .real, whose loaders import torch
from ..data.synthetic_spec import TASKS, SceneConfig
from ..config.errors import StudyError, brief
from ..plugins.mechanisms import TaskSpec, is_spec, task_spec
from .model import (
    ALL_BACKBONES,
    check_factor_value,
    head_spec,
    mechanism_name,
    model_section,
    parse_backbone,
)
from ..config.trial import TrainerSpec, TrainSpec
from ..config.specs import expect_mapping, parse_spec, typed_value, unknown_keys, unknown_name
from .search import SAMPLERS, search_spec  # noqa: F401 - the search: section (ablate/study/search.py)
from .transfer import transfer_spec

DATASETS = ("synthetic", *REAL_DATASETS)
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "poly")
# Lightning's precision settings, canonical name -> the spellings accepted for it
PRECISIONS = {"32-true": (32, "32", "32-true"), "16-mixed": (16, "16", "16-mixed"),
              "bf16-mixed": ("bf16", "bf16-mixed"), "16-true": ("16-true",), "bf16-true": ("bf16-true",),
              "64-true": (64, "64", "64-true")}

TOP_KEYS = ("name", "question", "model", "data", "train", "factors", "references", "seeds", "metric",
            "baseline", "search", "pruner", "trainer", "tracking", "margin", "correction", "eval",
            "learned_above", "screening", "planning", "labels", "comparisons", "controls", "transfer", "eval_factors",
            "eval_baseline")
METRICS = ("val_miou", "best_val_miou")
CORRECTIONS = ("none", "holm", "bonferroni", "bh")  # as ablate.stats.CORRECTIONS
TWO_VALUED_TESTS = ("perm", "signflip", "boschloo")  # as ablate.stats.decide.TWO_VALUED_TESTS
SPENDING = ("obrien_fleming", "pocock")
PLANNING_KEYS = ("sd", "learn_rates", "two_valued_test", "spending")

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
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")


def data_spec(raw: dict, where: str, base=None, prefix: str = "data.", check_layout: bool = True):
    """``data:``: the synthetic task's :class:`SceneConfig`, or a real dataset's spec (layout on
    disk checked unless ``check_layout`` is off). ``base``: the spec a ``data.X`` factor overrides."""
    raw = dict(raw)
    name = raw.get("name", getattr(base, "name", "synthetic"))
    if is_spec(name) or isinstance(base, TaskSpec):  # a task plugin (ablate/plugins/mechanisms.py)
        return task_spec(raw, where, prefix, base if isinstance(base, TaskSpec) else None)
    if name in REAL_DATASETS:
        return validate_real_data(raw, where, prefix, base if isinstance(base, RealDataSpec) else None, check_layout)
    raw.pop("name", None)
    if name != "synthetic":
        raise StudyError(where, prefix + "name", f"{unknown_name('dataset', name)}; valid: {', '.join(DATASETS)}.")
    cfg = parse_spec(SceneConfig, raw, where, prefix, base)
    if cfg.task not in TASKS:
        raise StudyError(where, prefix + "task", f"unknown synthetic task {brief(cfg.task)}; valid: "
                         f"{', '.join(TASKS)}.")
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


def train_spec(raw: dict, where: str, base: TrainSpec | None = None, prefix: str = "train.") -> TrainSpec:
    """``train:`` (or one ``train.X`` factor over ``base``), with the choices and the
    iterations/epochs bookkeeping checked."""
    if base is not None and base.iterations and "epochs" in raw and "iterations" not in raw:
        raise StudyError(where, prefix + "epochs", "this study trains for train.iterations steps, so it has no "
                         "epochs to vary; vary train.iterations or train.val_interval instead.")
    if raw.get("iterations") and "epochs" in raw:
        raise StudyError(where, prefix + "epochs", "give either train.epochs or train.iterations, not both "
                         "(with iterations, the number of validation rounds is iterations / val_interval).")
    spec = parse_spec(TrainSpec, raw, where, prefix, base)
    for key, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(spec, key) not in valid:
            raise StudyError(where, prefix + key, f"unknown {key} {brief(getattr(spec, key))}; valid: "
                             f"{', '.join(valid)}.")
    if "momentum" in raw and spec.optimizer != "sgd":
        raise StudyError(where, prefix + "momentum", f"momentum applies to optimizer sgd only, and this one is "
                         f"{brief(spec.optimizer)}; set train.optimizer: sgd or drop momentum.")
    for key in ("poly_power", "min_lr"):
        if key in raw and spec.schedule != "poly":
            raise StudyError(where, prefix + key, f"{key} applies to schedule poly only, and this one is "
                             f"{brief(spec.schedule)}; set train.schedule: poly or drop {key}.")
    if spec.schedule == "poly" and spec.min_lr >= spec.lr:
        raise StudyError(where, prefix + "min_lr", f"{brief(spec.min_lr)} is not below train.lr ({brief(spec.lr)}); "
                         "the poly schedule decays the lr from train.lr down to min_lr.")
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


def _trainer_precision(value, where: str) -> str:
    for name, spellings in PRECISIONS.items():
        if any(value == s and type(value) is type(s) for s in spellings):
            return name
    raise StudyError(where, "trainer.precision", f"unknown precision {brief(value)}; valid: {', '.join(PRECISIONS)} "
                     "(32 and 16 are read as 32-true and 16-mixed, bf16 as bf16-mixed).")


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


SEQUENTIAL_KEYS = ("start", "max", "step")


def seeds_spec(seeds, where: str) -> tuple[list, dict | None]:
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
    unknown_keys(spec, SEQUENTIAL_KEYS, where, "seeds.")
    for k in ("start", "max"):
        if k not in spec:
            raise StudyError(where, f"seeds.{k}", f"missing; sequential seeds are {{start: S, max: M}} with "
                             f"2 <= S <= M <= {MAX_SEEDS:,}, e.g. {{start: 3, max: 10}} (optionally step: 1, the "
                             "seeds added to an undecided comparison at each look).")
    start = typed_value(spec["start"], "int", 2, where, "seeds.start", maximum=MAX_SEEDS)
    top = typed_value(spec["max"], "int", start, where, "seeds.max", maximum=MAX_SEEDS)
    step = typed_value(spec.get("step", 1), "int", 1, where, "seeds.step", maximum=max(1, top - start))
    return {"start": start, "max": top, "step": step}


def tracking_spec(tracking: dict, where: str) -> dict:
    """``tracking:``: wandb on/off and W&B's project and entity names (checked here: W&B would
    refuse them in every trial)."""
    unknown_keys(tracking, ("wandb", "project", "entity"), where, "tracking.")
    if "wandb" in tracking and not isinstance(tracking["wandb"], bool):
        raise StudyError(where, "tracking.wandb", f"expected true or false, got {brief(tracking['wandb'])}.")
    for k in ("project", "entity"):
        v = tracking.get(k)
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 128 or any(c in v for c in "/\\#?%:")):
            raise StudyError(where, f"tracking.{k}", f"expected a W&B {k} name (1 to 128 characters, none of "
                             f"/ \\ # ? % :), got {brief(v)}.")
    return tracking


def verdict_spec(raw: dict, where: str) -> tuple[float, str]:
    """``margin:`` (mIoU points, a finite number > 0 and <= 100) and ``correction:``."""
    margin = raw.get("margin", 1.0)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool):
        raise StudyError(where, "margin", f"expected a number of mIoU points (> 0, e.g. 1.0), got {brief(margin)}.")
    margin = typed_value(margin, "float", 0, where, "margin", strict=True, maximum=100)
    correction = raw.get("correction", "holm")
    if correction not in CORRECTIONS:
        raise StudyError(where, "correction", f"{unknown_name('correction', correction)}; valid: "
                         f"{', '.join(CORRECTIONS)} (holm is the default; bh controls the false discovery rate, "
                         "for screening grids).")
    return margin, correction


def analysis_spec(raw: dict, where: str) -> dict:
    """``learned_above:`` (mIoU points: a seed at or above it learned the cue), ``screening:`` (true:
    a plan that cannot decide runs anyway, its verdicts marked as screening) and ``planning:``
    (what the pre-flight assumes: ``sd`` in points for the normal model, ``learn_rates`` [p_a, p_b]
    for the two-valued one, the ``two_valued_test`` and the ``spending`` of sequential seeds)."""
    out = {"learned_above": None, "screening": False, "sd": 1.0, "learn_rates": (0.5, 1.0),
           "two_valued_test": "perm", "spending": "obrien_fleming"}
    if raw.get("learned_above") is not None:
        v = raw["learned_above"]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise StudyError(where, "learned_above", f"expected mIoU points (0 to 100, e.g. 70), got {brief(v)}.")
        out["learned_above"] = typed_value(v, "float", 0, where, "learned_above", maximum=100)
    screening = raw.get("screening", False)
    if not isinstance(screening, bool):
        raise StudyError(where, "screening", f"expected true or false, got {brief(screening)}.")
    out["screening"] = screening
    plan = expect_mapping(raw.get("planning"), where, "planning")
    unknown_keys(plan, PLANNING_KEYS, where, "planning.")
    if "sd" in plan:
        if not isinstance(plan["sd"], (int, float)) or isinstance(plan["sd"], bool):
            raise StudyError(where, "planning.sd", f"expected mIoU points (> 0, e.g. 1.0), got {brief(plan['sd'])}.")
        out["sd"] = typed_value(plan["sd"], "float", 0, where, "planning.sd", strict=True, maximum=100)
    if "learn_rates" in plan:
        lr = plan["learn_rates"]
        if (not isinstance(lr, list) or len(lr) != 2 or
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in lr)
                or lr[0] == lr[1]):
            raise StudyError(where, "planning.learn_rates", f"expected two different learn rates between 0 and 1 "
                             f"(the baseline's and a cell's, e.g. [0.5, 1.0]), got {brief(lr)}.")
        out["learn_rates"] = (float(lr[0]), float(lr[1]))
    for key, valid in (("two_valued_test", TWO_VALUED_TESTS), ("spending", SPENDING)):
        if key in plan and plan[key] not in valid:
            raise StudyError(where, f"planning.{key}", f"{unknown_name(key, plan[key])}; valid: {', '.join(valid)}.")
        out[key] = plan.get(key, out[key])
    out["transfer"] = transfer_spec(raw, where)  # the transfer check's reference (ablate/study/transfer.py)
    return out


def pruner_spec(raw, where: str, epochs: int | None) -> dict:
    """``pruner:`` as a mapping with a name and options, or just a name; every option resolved."""
    if raw is None:
        return {"name": "none"}
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = dict(expect_mapping(raw, where, "pruner"))
    name = raw.pop("name", None)
    if not isinstance(name, str) or name not in PRUNERS:
        got = "missing" if name is None else f"{unknown_name('pruner', name)}"
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
        v = typed_value(v, "float" if kind == "float" else "int", low, where, f"pruner.{k}")
        if high is not None and v > high:
            raise StudyError(where, f"pruner.{k}", f"{brief(v)} is out of range: it must be <= {high:g}.")
        spec[k] = v
    return spec


def trainer_spec(raw: dict, where: str) -> TrainerSpec:
    raw = dict(raw)
    precision = _trainer_precision(raw.pop("precision"), where) if "precision" in raw else TrainerSpec.precision
    spec = replace(parse_spec(TrainerSpec, raw, where, "trainer."), precision=precision)
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


# -- the top-level sections ----------------------------------------------------------------------------

def question_text(raw: dict, where: str) -> str:
    """``question:``, a string (default: none)."""
    question = raw.get("question", "")
    if not isinstance(question, str):
        raise StudyError(where, "question", "expected a string stating the question the study answers.")
    return question


def factors_section(raw: dict, where: str) -> dict:
    """``factors:``: factor -> values (grid) or range (search); their values are checked with the cells."""
    factors = expect_mapping(raw.get("factors"), where, "factors")
    if "factors" in raw and not factors and not raw.get("references") and not raw.get("search"):
        raise StudyError(where, "factors", "is empty, which makes a study of one cell with nothing to compare it "
                         "with; name at least one factor with its values (e.g. gcn: [on, off]), or add "
                         "references: (cells to compare with the base, e.g. - {mechanism: none}).")
    for k in factors:
        if not isinstance(k, str):
            raise StudyError(where, f"factors.{k}", f"a factor is named by a string (a mechanism factor, mechanism, "
                             f"train.<key>, data.<key>, backbone.<key> or head.<key>), not by {brief(k)}.")
    return dict(factors)


def references_section(raw: dict, where: str) -> list[dict]:
    """``references:``: extra cells, each a mapping of factors; a reference's display ``label:``
    is taken out here (see :func:`label_cells`), so it never reaches the cell or its key."""
    refs = raw.get("references") or []
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise StudyError(where, "references", "expected a list of mappings, each one cell, e.g. - {mechanism: none}.")
    return [{k: v for k, v in r.items() if k != "label"} for r in refs]


LABEL_CHARS = 40  # the longest label: a short table-row name, not a description


def _label(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > LABEL_CHARS or "\n" in value or "|" in value:
        raise StudyError(where, key, f"a label is a short name for a row of the report: a string of 1 to "
                         f"{LABEL_CHARS} characters without '|' or a line break; got {brief(value)}.")
    return value.strip()


def label_cells(cells: tuple, raw: dict, where: str) -> tuple:
    """A grid's cells with the study file's display labels: ``label:`` inside a ``references:``
    entry names that reference; ``labels:`` maps a grid cell's setting as a report shows it
    (``gcn=on``, ``T=1, T_eval=1``) to its label. Labels are display only: the cell's key and
    equality do not see them. Each label must name one cell, and no two rows may read the same."""
    refs = raw.get("references") or []
    grid_labels = raw.get("labels")
    if grid_labels is None:
        grid_labels = {}
    if not isinstance(grid_labels, dict):
        raise StudyError(where, "labels", "expected a mapping from a grid cell's setting as the report shows it "
                         f"(e.g. 'gcn=on') to a short label; got {brief(grid_labels)}.")
    n_grid = len(cells) - len(refs)
    settings = {c.setting(): i for i, c in enumerate(cells[:n_grid])}
    names: dict[int, str] = {}
    for k, v in grid_labels.items():
        if k not in settings:
            listed = "; ".join(list(settings)[:20])
            raise StudyError(where, f"labels.{k}", f"{brief(k)} is no cell of the grid; its cells are: {listed}.")
        names[settings[k]] = _label(v, where, f"labels.{k}")
    for i, r in enumerate(refs):
        if "label" in r:
            names[n_grid + i] = _label(r["label"], where, f"references[{i}].label")
    out = tuple(replace(c, name=names[i]) if i in names else c for i, c in enumerate(cells))
    titles = [c.title() for c in out]
    dup = next((t for t in titles if titles.count(t) > 1), None)
    if dup is not None and names:
        raise StudyError(where, "labels", f"two rows would read {brief(dup)}; give each cell a different label.")
    return out


def no_labels(raw: dict, where: str) -> None:
    """A search's rows are its sampled points, which a study file cannot name in advance."""
    if raw.get("labels") or any(isinstance(r, dict) and "label" in r for r in raw.get("references") or []):
        raise StudyError(where, "labels", "labels name a grid's cells; a search's rows are its sampled points: "
                         "remove labels: and the references' label:.")


def metric_name(raw: dict, where: str) -> str:
    """``metric:``, one of :data:`METRICS`."""
    metric = raw.get("metric", "val_miou")
    if metric not in METRICS:
        raise StudyError(where, "metric", f"{unknown_name('metric', metric)}; valid: {', '.join(METRICS)}.")
    return metric


def pruner_epochs(factors: dict, refs: list, train: TrainSpec) -> int | None:
    """The epochs every trial runs (hyperband's default max_resource); None when a factor varies them."""
    rounds = ("train.epochs", "train.iterations", "train.val_interval")  # what sets the number of validations
    vary = any(k in rounds for k in factors) or any(k in r for r in refs for k in rounds)
    return None if vary else train.epochs


def check_sequential(sequential: dict | None, search: dict | None, pruner: dict, where: str) -> None:
    """Sequential seeds need a grid and no pruner."""
    if sequential and search is not None:
        raise StudyError(where, "seeds", "sequential seeds ({start, max}) choose seeds per grid cell by its "
                         "verdicts; a search runs the same seeds on every sampled point (search.seeds_per_point): "
                         "give seeds as a list or a count.")
    if sequential and pruner["name"] != "none":
        raise StudyError(where, "pruner", "a pruned trial has no value to judge, so sequential seeds ({start, max}) "
                         "cannot be combined with a pruner: remove pruner: (or set it to none), or give seeds as a "
                         "list or a count.")
