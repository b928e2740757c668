"""Resolving a study's cells: one assignment of factors over the study's base settings becomes a
:class:`~ablate.study.records.Cell` (:func:`build_cell`), every cell of a grid is resolved once when the
study is loaded (:func:`resolve_grid`, with each cell's baseline), and a search's ranges are checked
at the values its sampler can draw (:func:`check_search`). A value a factor refuses fails here, at
load time, as a :class:`~ablate.config.errors.StudyError` naming the key."""
from __future__ import annotations

import itertools
import math

from ..attention import MECHANISMS
from ..data.real_spec import RealDataSpec  # not .real, whose loaders import torch
from ..config.errors import StudyError, brief
from ..models.mmseg_layouts import check_style
from ..models.registry import BACKBONES, lookup
from ..plugins.mechanisms import TaskSpec
from .designs import grid_assignments
from .records import Cell, Study, canon, cell_key, find_baseline, search_kind
from .search import applies, mechanisms_of
from .sections import (MAX_CELLS, check_factor_value, data_spec, head_spec, mechanism_name, parse_backbone,
                       train_spec)
from ..config.specs import unknown_keys

FACTOR_NAMES = "a mechanism factor, mechanism, train.<key>, data.<key>, backbone.<key> or head.<key>"


def build_cell(study: Study, assignment: dict, key_prefix: str) -> Cell:
    """Resolve one assignment of factors against the study's base into a :class:`Cell`."""
    where = study.path
    mech = study.mechanism
    if "mechanism" in assignment:
        mech = mechanism_name(assignment["mechanism"], where, f"{key_prefix}.mechanism")
    preset = MECHANISMS[mech]
    # base args apply where the cell's mechanism has them (a reference cell may switch mechanism)
    overrides = {k: v for k, v in study.args.items() if mech == study.mechanism or k in preset.defaults}
    train, data, backbone = study.train, study.data, study.backbone
    head_factors = {k[5:]: v for k, v in assignment.items() if isinstance(k, str) and k.startswith("head.")}
    # all at once: a CARAFE setting is valid only beside upsample: carafe, whatever the factors' order
    head = head_spec(head_factors, where, study.head, f"{key_prefix}.head.") if head_factors else study.head
    for k, v in assignment.items():
        if not isinstance(k, str):
            raise StudyError(where, f"{key_prefix}.{k}", f"a factor is named by a string ({FACTOR_NAMES}), "
                             f"not by {brief(k)}.")
        if k == "mechanism" or k.startswith("head."):
            continue
        if k.startswith("train."):
            train = train_spec({k[6:]: v}, where, train)
        elif k.startswith("data."):
            data = _data_factor(study, data, k, v, key_prefix)
        elif k.startswith("backbone."):
            backbone = parse_backbone({k[9:]: v}, where, backbone, "model.backbone.", study.check_files)
        else:
            check_factor_value(preset, k, v, where, f"{key_prefix}.{k}",
                               " (also valid: mechanism, train.<key>, data.<key>, backbone.<key>, head.<key>)")
            overrides[k] = v
    mech_args = _resolve_args(study, preset, overrides, assignment, key_prefix)
    _check_cell(study, train, backbone, preset, mech_args, head)
    label = tuple((k, canon(preset, k, v)) for k, v in assignment.items())
    key = cell_key(mech, mech_args, backbone, data, train, study.trainer, head, study.eval)
    return Cell(label, mech, tuple(sorted(mech_args.items())), backbone, data, train, key,
                None if head == study.head else head)


def _data_factor(study: Study, data, k: str, v, key_prefix: str):
    """The data spec with one ``data.X`` factor applied."""
    where = study.path
    if k == "data.name":
        raise StudyError(where, f"{key_prefix}.data.name", "the dataset cannot be a factor: each dataset has its "
                         "own data_root, classes and settings; write one study per dataset.")
    if isinstance(data, TaskSpec):
        return data_spec({k[5:]: v}, where, data)
    if isinstance(data, RealDataSpec):  # the layout was checked once: re-check only where it can move
        moved = k[5:] in ("data_root", "train_split", "val_split", "aug")
        return data_spec({k[5:]: v}, where, data, check_layout=moved and study.check_files)
    return data_spec({**data.as_dict(), k[5:]: v, "name": "synthetic"}, where, None)


def _resolve_args(study: Study, preset, overrides: dict, assignment: dict, key_prefix: str) -> dict:
    """The block's arguments; a combination its ``check_args`` refuses is blamed on a factor."""
    try:
        return preset.resolve(overrides)
    except (KeyError, ValueError) as e:
        bad = next((k for k in overrides if k not in preset.defaults), None)
        if bad is None and getattr(e, "key", None) in assignment:  # a combination the block refuses
            bad = e.key
        raise StudyError(study.path, f"{key_prefix}.{bad or ''}".rstrip("."), str(e).strip('"') + ".") from None


def _check_cell(study: Study, train, backbone, preset, args: dict, head=None) -> None:
    """What a cell's settings must agree on: the batch splits over the devices, the aux head has a
    stage 3, mmseg has a decode head for the mechanism when the head's style is mmseg."""
    where, world, head = study.path, study.trainer.world_size, head or study.head
    refused = check_style(preset, args) if head.style == "mmseg" else None
    if refused:
        raise StudyError(where, "model.head.style", refused + ".")
    if train.batch_size % world:
        raise StudyError(where, "train.batch_size", f"{train.batch_size} cannot be split evenly over {world} "
                         "devices (trainer.devices x trainer.num_nodes); the batch size is the global batch, "
                         f"so give a multiple of {world}.")
    entry = lookup(backbone.name)
    if head.aux_weight and not (entry and entry.stages):
        staged = " or ".join(n for n, b in BACKBONES.items() if b.stages)
        raise StudyError(where, "model.head.aux_weight", f"the auxiliary head reads ResNet stage 3, and backbone "
                         f"{brief(backbone.name)} has none; use model.backbone.name: {staged} or set aux_weight: 0.")


def resolve_grid(study: Study) -> tuple[tuple, dict]:
    """Resolve every cell of a grid study once, now (a value a factor refuses fails here, before
    anything runs): (the cells, each cell key -> its baseline's key)."""
    _check_grid_lists(study)
    refs = [dict(r) for r in study.references]
    cells = [build_cell(study, assignment, "factors") for assignment in grid_assignments(study)]  # a fraction's runs
    cells += [build_cell(study, r, f"references[{i}]") for i, r in enumerate(refs)]
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        dup = next(c for c in cells if keys.count(c.key) > 1)
        raise StudyError(study.path, "references", f"two cells resolve to the same configuration ({dup.title()}); "
                         "remove the duplicate.")
    if study.baseline and study.baseline_cell(cells) is None:
        listed = "; ".join(c.title() for c in cells[:20]) + (f"; and {len(cells) - 20} more" if len(cells) > 20 else "")
        raise StudyError(study.path, "baseline", f"{brief(study.baseline)} matches no cell; cells are: {listed}.")
    bases = {c.key: find_baseline(study, c, cells) for c in cells}
    return tuple(cells), {k: None if b is None else b.key for k, b in bases.items()}


def _check_grid_lists(study: Study) -> None:
    """Each factor a non-empty list of distinct values (also once coerced), the grid within :data:`MAX_CELLS`."""
    where, factors, preset, refs = study.path, study.factors, MECHANISMS[study.mechanism], study.references
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
    for k in factors:  # values that coincide once coerced (on / 'on' / true) are one cell
        coerced = [repr(canon(preset, k, v)) for v in factors[k]]
        if len(set(coerced)) != len(coerced):
            raise StudyError(where, f"factors.{k}", f"the list {brief(factors[k])} repeats a value (after reading "
                             "on/off/true/false as the same switch); each cell must be distinct.")


SEARCH_VALUES = 64  # an integer range with at most this many values is checked value by value
SEARCH_COMBOS = 512  # searches with at most this many checked combinations are checked combination by combination


def check_search(study: Study) -> None:
    """Check a search study's ranges and choices against each factor's own rules now (its kind,
    minimum and choices, and the combinations the block's ``check_args`` refuses), so that a value
    the sampler could draw and a trial would refuse fails at load time, before any trial exists.
    A range is checked at its ends (an integer range with few values at every value)."""
    where, preset = study.path, MECHANISMS[study.mechanism]
    if study.references:
        raise StudyError(where, "references", "references are grid cells; they cannot be combined with 'search:'.")
    if not study.factors:
        raise StudyError(where, "factors", "a search needs at least one factor with a range or choices.")
    picks = {}
    for k, spec in study.factors.items():
        if not any(applies(k, m) for m in mechanisms_of(study)):  # a mechanism factor of no sampled mechanism
            raise StudyError(where, f"factors.{k}", f"mechanism {brief(study.mechanism)} has no factor {brief(k)}; "
                             f"its factors are: {', '.join(preset.defaults) or 'none'}.")
        picks[k] = _search_picks(study, k, spec)
        if study.search["sampler"] == "grid" and isinstance(spec, dict) and "choices" not in spec:
            raise StudyError(where, f"factors.{k}", "the grid sampler tries listed values only; give choices "
                             "(a list) or use sampler: tpe or random for a range.")
    for k, values in picks.items():
        for value, subkey, what in values:
            try:
                owner = next(m for m in [study.mechanism] + mechanisms_of(study) if applies(k, m))
                build_cell(study, {k: value} if owner == study.mechanism else {"mechanism": owner, k: value}, "factors")
            except StudyError as e:
                raise StudyError(where, subkey, f"{what} is not valid: {e.message}") from None
    if math.prod(len(v) for v in picks.values()) <= SEARCH_COMBOS:
        names = list(picks)
        for combo in itertools.product(*picks.values()):
            assignment = {n: value for n, (value, _, _) in zip(names, combo)}
            mech = assignment.get("mechanism", study.mechanism)
            assignment = {n: v for n, v in assignment.items() if applies(n, mech)}  # conditional factors
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
            unknown_keys(spec, ("choices",), where, key + ".")
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
    unknown_keys(spec, ("low", "high", "log", "step", "choices"), where, key + ".")
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
    kind = search_kind(study, k)
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
