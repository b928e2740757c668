"""The records of a loaded study: its typed sections, its cells and the study itself.

Everything here is a frozen value built by :func:`ablate.study.load_study` (parsing and validation
live in :mod:`ablate.study.sections` and :mod:`ablate.study.cells`). The defaults of every setting
live here, once; what identifies a cell (:func:`cell_key`, :func:`canon`) lives here too, so the
runner, the report and the trainer read one definition. A grid's cells and their baselines are
resolved when the study is loaded and kept in the :class:`Study`; nothing re-validates them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

from ..attention import MECHANISMS
from ..config.errors import brief
from ..config.evaluation import EvalSpec
from ..config.specs import BackboneSpec, spec_identity
from ..config.trial import HeadSpec, TrainerSpec, TrainSpec, TrialConfig, fields_dict

if TYPE_CHECKING:
    from ..data.real import RealDataSpec
    from ..data.synthetic_spec import SceneConfig
    from ..models.resnet_spec import ResNetSpec


def fmt_value(v: Any) -> str:
    """A factor's value as a cell title shows it: on/off, 4 significant digits, else bounded text."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = brief(v)  # bounded; a value whose repr is short prints as str() always did
    return str(v) if text == repr(v) else text


# -- cell identity -------------------------------------------------------------------------------------

def canon(preset, key: str, value):
    """A factor's value as a cell's label holds it: a mechanism factor's value coerced by its
    factor (on / 'on' / true are one switch), any other value as written."""
    if key in preset.defaults:
        try:
            return preset.factor(key).coerce(value)
        except ValueError:
            return value
    return value


def cell_key(mechanism: str, args: dict, backbone, data, train: TrainSpec, trainer: TrainerSpec,
             head: HeadSpec, evaluation: EvalSpec = EvalSpec()) -> str:
    """The stable hash that ties stored results to a cell's resolved configuration. Settings added
    after the first studies enter it only when not at their defaults, so older keys stay valid.
    The evaluation (``eval:``) changes what is measured, so one that is not the default is part of it."""
    preset = MECHANISMS[mechanism]
    content = {"mechanism": mechanism, "args": preset.identity(args), "backbone": spec_identity(backbone),
               "data": data.as_dict(), "train": train.identity()}
    trainer_diff = {k: v for k, v in fields_dict(trainer).items() if v != getattr(TrainerSpec(), k)}
    if trainer_diff:  # only settings that differ from one CPU process
        content["trainer"] = trainer_diff
    head_diff = {k: v for k, v in fields_dict(head).items() if v != getattr(HeadSpec(), k)}
    if head_diff:  # likewise: no head settings, the key of a study written before heads existed
        content["head"] = head_diff
    if evaluation != EvalSpec():
        content["eval"] = evaluation.as_dict()
    payload = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


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
    head: HeadSpec | None = None  # the head its ``head.X`` factors make; None: the study's ``model.head``
    # the study file's short ``label:`` for this cell: display only (never in the key or in equality)
    name: str = field(default="", compare=False)

    @property
    def label_dict(self) -> dict:
        return dict(self.label)

    def setting(self) -> str:
        """The cell's factors as ``k=v, ...`` (what the key list of a report's provenance shows)."""
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in self.label) or "(base)"

    def title(self) -> str:
        """The cell's name in tables and logs: its ``label:`` when the study gives one, else :meth:`setting`."""
        return self.name or self.setting()


# -- the study -----------------------------------------------------------------------------------------

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
    overrides: tuple = ()  # KEY=VALUE command-line overrides this study was loaded with (ablate.study.overrides)
    eval: EvalSpec = field(default_factory=EvalSpec)  # test-time evaluation (ablate/models/inference.py)
    # resolved at load time (ablate.study.load_study): a grid's cells, each cell key's baseline key, and
    # the function that resolves one assignment of factors (a search's sampled points)
    grid: tuple = ()
    baseline_keys: dict = field(default_factory=dict)
    resolve: Callable | None = field(default=None, compare=False, repr=False)
    # how verdicts are reached (ablate.study.sections.analysis_spec): learned_above, screening, planning
    analysis: dict = field(default_factory=dict)
    # which comparisons are made and the matched controls (ablate.study.designs): design, rungs, generators, controls
    comparisons: dict = field(default_factory=dict)
    # evaluation-time factors (ablate.study.evaluations): as written, their settings, the reference setting
    eval_factors: dict = field(default_factory=dict)
    evals: tuple = ()
    eval_baseline: dict = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """The grid's cells (itertools.product order, then the references); none for a search."""
        return list(self.grid)

    def trials(self) -> list[tuple[Cell, int]]:
        """The grid plan: every cell times every seed, cells outermost. With sequential seeds, the
        first ``start`` seeds of every cell: the runner adds the rest as the verdicts ask."""
        seeds = self.seeds[:self.sequential["start"]] if self.sequential else self.seeds
        return [(c, s) for c in self.grid for s in seeds]

    def assignments(self) -> list[dict]:
        """The grid's assignments of factors, in the order of its cells."""
        names = list(self.factors)
        combos = [dict(zip(names, vals)) for vals in itertools.product(*(self.factors[n] for n in names))]
        return combos + [dict(r) for r in self.references]

    def is_baseline(self, c: Cell) -> bool:
        """Whether ``c`` matches ``baseline:`` (values compared as the cell's label holds them)."""
        preset = MECHANISMS[c.mechanism]
        return all(k in c.label_dict and c.label_dict[k] == canon(preset, k, v) for k, v in self.baseline.items())

    def baseline_cell(self, cells: list | None = None) -> Cell | None:
        """The first cell that matches ``baseline:`` (the first cell when there is none).
        ``cells``: the cells to look in (default: the grid's)."""
        cells = self.grid if cells is None else cells
        if not cells:
            return None
        if not self.baseline:
            return cells[0]
        return next((c for c in cells if self.is_baseline(c)), None)

    def baseline_for(self, cell: Cell, cells: list | None = None) -> Cell | None:
        """The cell ``cell`` is compared with. A ``baseline:`` that names only some of the grid's
        factors (``{mechanism: none}`` in a mechanism x task grid) is a baseline per group: the
        matching cell that shares ``cell``'s values of the other factors (none on the same task).
        A cell with no such partner (a reference, or a full baseline) gets ``baseline_cell()``.
        A grid cell's baseline was resolved at load time; ``cells`` serves a search's cells."""
        if cell.key in self.baseline_keys:
            key = self.baseline_keys[cell.key]
            return None if key is None else next(c for c in self.grid if c.key == key)
        return find_baseline(self, cell, self.grid if cells is None else cells)

    def baseline_cells(self) -> list[Cell]:
        """Every cell that is some cell's baseline, in the study's order."""
        keys = set(self.baseline_keys.values())
        return [c for c in self.grid if c.key in keys]

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
            elif search_kind(self, k) == "int":  # validated: integer bounds and step
                out[k] = IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")),
                                         step=1 if spec.get("log") else spec.get("step") or 1)
            else:
                out[k] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                           step=None if spec.get("log") else spec.get("step"))
        return out

    def search_cell(self, params: dict) -> Cell:
        """The cell of one sampled point of a search study."""
        return self.resolve(self, dict(params), "factors")

    def point_search(self) -> bool:
        """Whether this is a point search (seeds per point, confirmation, objectives: ``ablate/study/search.py``)."""
        return bool(self.search and self.search.get("points"))

    def search_seeds(self) -> list[int]:
        """The seeds every sampled point of a search runs on, the same for every point."""
        return list(self.search.get("search_seeds") or self.seeds[:1]) if self.search else []

    def baseline_point(self) -> Cell:
        """A point search's baseline: ``baseline:`` applied to the model as the study file writes it."""
        return self.resolve(self, dict(self.baseline), "baseline")

    def head_of(self, cell: Cell) -> HeadSpec:
        """``cell``'s head: the study's ``model.head`` with the cell's ``head.X`` factors applied."""
        return cell.head or self.head

    def trial(self, cell: Cell, seed: int) -> TrialConfig:
        """The fully resolved, typed configuration of one trial: what the worker hands the trainer."""
        return TrialConfig(self.name, cell.label_dict, cell.key, seed, cell.mechanism, dict(cell.args),
                           spec_identity(cell.backbone), cell.data.as_dict(), cell.train, self.head_of(cell), self.trainer,
                           self.metric, self.overrides, self.eval)

    def trial_config(self, cell: Cell, seed: int) -> dict:
        """:meth:`trial` as the dict storage keeps (the trial's ``config``; ``--print-config`` prints it)."""
        return self.trial(cell, seed).as_dict()

    def make_pruner(self):
        """The study's Optuna pruner (a fresh object: SH/Hyperband keep per-process state)."""
        return make_pruner(self.pruner)

    def is_reference(self, cell: Cell) -> bool:
        """Whether ``cell`` is one of the study's ``references:`` (they close the grid's cell list)."""
        refs = self.grid[len(self.grid) - len(self.references):] if self.references else ()
        return any(c.key == cell.key for c in refs)

    def family_of(self, cell: Cell) -> str:
        """The family of comparisons ``cell``'s comparison belongs to: the comparisons that answer
        one question are corrected together. A grid with a ``data.task`` factor has one family per
        task; the references (calibration cells: the floor, a full block) are a family of their own."""
        from .designs import family  # ladder and all_pairs designs have families of their own

        fam = family(self, cell) if self.comparisons else None
        if fam is not None:
            return fam
        task = cell.label_dict.get("data.task") if isinstance(self.factors.get("data.task"), list) else None
        name = "references" if self.is_reference(cell) else "question"
        return name if task is None else f"{name}, task={fmt_value(task)}"

    def floor_cell(self, cell: Cell, cells: list | None = None) -> Cell | None:
        """The no-attention cell (``mechanism: none``) on ``cell``'s task: the floor its seeds are
        classified against (learned or not); None when the study has none."""
        cells = self.grid if cells is None else cells
        task = getattr(cell.data, "task", None)
        return next((c for c in cells if c.mechanism == "none" and getattr(c.data, "task", None) == task), None)

    def comparison_pairs(self, cells: list | None = None) -> list[tuple[Cell, Cell]]:
        """(cell, the cell it is compared with) for every comparison of the study's design (its
        ``comparisons:``; by default each cell against its baseline)."""
        cells = self.cells() if cells is None else cells
        if self.comparisons.get("design", "baseline") != "baseline":
            from .designs import comparison_pairs  # ladder, all_pairs, factorial (ablate/study/designs.py)

            return comparison_pairs(self, cells)
        pairs = [(c, self.baseline_for(c, cells)) for c in cells]
        return [(c, b) for c, b in pairs if b is not None and b.key != c.key]


def find_baseline(study: Study, cell: Cell, cells) -> Cell | None:
    """``cell``'s baseline among ``cells`` (see :meth:`Study.baseline_for`), searched."""
    if study.baseline and study.factors and not study.search:
        rest = {f: cell.label_dict[f] for f in study.factors if f not in study.baseline and f in cell.label_dict}
        if rest:
            partner = next((c for c in cells if study.is_baseline(c)
                            and all(c.label_dict.get(f) == v for f, v in rest.items())), None)
            if partner is not None:
                return partner
    return study.baseline_cell(cells)


def search_kind(study: Study, k: str) -> str | None:
    """What a search factor takes: "int", "float", "bool", "choice" or "other" (None: no such key)."""
    if k == "mechanism":
        return "choice"
    section, _, name = k.partition(".")
    if name and section in ("train", "data", "backbone", "head"):
        base = {"train": study.train, "data": study.data, "backbone": study.backbone, "head": study.head}[section]
        options = dict(getattr(base, "options", ()))  # a task or backbone plugin's own options
        if name not in options and (name == "options" or name not in {f.name for f in fields(base)}):
            return None
        default = options[name] if name in options else getattr(base, name)
        if isinstance(default, bool):
            return "bool"
        return "int" if isinstance(default, int) else "float" if isinstance(default, float) else "other"
    from .search import owner_preset  # a conditional factor: the sampled mechanism that has it

    preset = owner_preset(study, k) if study.search else MECHANISMS[study.mechanism]
    return preset.factor(k).kind if k in preset.defaults else None


def make_pruner(spec: dict):
    """An Optuna pruner from a resolved ``pruner:`` spec (see ``ablate.study.sections.PRUNERS``)."""
    import optuna

    opts = {k: v for k, v in spec.items() if k != "name"}
    return {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**opts),
        "percentile": lambda: optuna.pruners.PercentilePruner(**opts),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**opts),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**opts),
    }[spec["name"]]()
