"""Study files: the public entry point, :func:`load_study`.

A study file is the whole truth of a run. It is read once, parsed into a frozen :class:`Study`
(every key checked and every cell resolved before anything runs) and expanded into cells (one
assignment of the factors) times seeds. ``Study.trial(cell, seed)`` is the fully resolved, typed
configuration of one trial (:class:`~ablate.config.trial.TrialConfig`) that the trainer runs;
``Study.trial_config(cell, seed)`` is its dict, which storage keeps and ``--print-config`` prints.

The schema, key by key with defaults and examples, is ``docs/study_files.md``; each section's
parser is in :mod:`ablate.study.sections` (the ``model:`` section in :mod:`ablate.study.model`).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config.errors import StudyError
from ..config.evaluation import parse_eval
from .search import check_point_search, confirm_seeds
from .evaluations import parse_eval_factors
from .designs import comparisons_spec, resolve_names
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
    metric = metric_name(raw, where)
    search = search_spec(raw.get("search"), where, metric)
    refs = references_section(raw, where)
    seeds, sequential = seeds_spec(raw.get("seeds", 3), where)
    search = None if sequential else confirm_seeds(search, seeds, where)  # sequential + search: refused below
    baseline = expect_mapping(raw.get("baseline"), where, "baseline")
    tracking = tracking_spec(expect_mapping(raw.get("tracking"), where, "tracking"), where)
    trainer = trainer_spec(expect_mapping(raw.get("trainer"), where, "trainer"), where)
    pruner = pruner_spec(raw.get("pruner"), where, pruner_epochs(factors, refs, train))
    margin, correction = verdict_spec(raw, where)
    analysis = analysis_spec(raw, where)
    evaluation = parse_eval(raw.get("eval"), where)
    comparisons = comparisons_spec(raw, where, factors, search, sequential)
    study = Study(where, name, question, mech, args, backbone, data, train, factors,
                  tuple(tuple(r.items()) for r in refs), tuple(seeds), metric, dict(baseline), search,
                  dict(tracking), pruner, trainer, head, check_files, margin, correction, sequential,
                  eval=evaluation, resolve=build_cell, analysis=analysis, comparisons=comparisons)
    check_sequential(sequential, search or raw.get("search"), pruner, where)
    check_point_search(search, pruner, where)
    if sequential and correction == "bh":
        raise StudyError(where, "correction", "bh is not available with sequential seeds (alpha spending needs a "
                         "family-wise correction); valid there: holm, bonferroni, none.")
    if search is not None:
        no_labels(raw, where)
        parse_eval_factors(raw, where, study)  # refused with search:
        check_search(study)
        return study
    grid, baseline_keys = resolve_grid(study)
    study = replace(study, grid=label_cells(grid, raw, where), baseline_keys=baseline_keys)
    study = replace(study, comparisons=resolve_names(study, comparisons))
    eval_factors, evals, eval_baseline = parse_eval_factors(raw, where, study)  # train once, evaluate many
    return replace(study, eval_factors=eval_factors, evals=evals, eval_baseline=eval_baseline)
