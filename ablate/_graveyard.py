"""Old import paths, kept for one release. Until the layout by package, ablate's modules sat flat in
``ablate/`` (``ablate.run_worker``, ``ablate.storage_trials``, ...); code outside ablate (plugins,
notebooks) may still import them. Importing an old path here gives a stand-in module that forwards
every attribute to the module's new home and warns once (DeprecationWarning) with the new path.
This is the only place old names live; the next release removes it."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

MOVED = {  # old module -> its new home (space-separated: the names it had are split between these)
    "ablate.atomic": "ablate.config.atomic",
    "ablate.attention.vocab": "ablate.config.vocab",
    "ablate.checkpoints": "ablate.trainer.checkpoints",
    "ablate.costs_measure": "ablate.costs.measure",
    "ablate.doctor_findings": "ablate.doctor.findings",
    "ablate.doctor_gradients": "ablate.doctor.gradients",
    "ablate.doctor_report": "ablate.doctor.text",
    "ablate.doctor_softmax": "ablate.doctor.softmax",
    "ablate.errors": "ablate.config.errors",
    "ablate.estimate": "ablate.run.estimate",
    "ablate.evaluation": "ablate.models.inference ablate.config.evaluation",
    "ablate.figures": "ablate.report.figures",
    "ablate.fingerprint": "ablate.trainer.fingerprint",
    "ablate.image_counts": "ablate.models.image_counts",
    "ablate.overrides": "ablate.study.overrides",
    "ablate.plugins_backbones": "ablate.plugins.backbones",
    "ablate.plugins_load": "ablate.plugins.load",
    "ablate.plugins_tasks": "ablate.plugins.tasks",
    "ablate.probes": "ablate.trainer.probes",
    "ablate.progress": "ablate.run.progress",
    "ablate.report_costs": "ablate.report.costs",
    "ablate.report_formats": "ablate.report.formats",
    "ablate.report_html": "ablate.report.html",
    "ablate.report_md": "ablate.report.markdown",
    "ablate.report_provenance": "ablate.report.provenance",
    "ablate.report_rows": "ablate.report.rows",
    "ablate.run_claims": "ablate.run.claims",
    "ablate.run_preflight": "ablate.run.preflight",
    "ablate.run_worker": "ablate.run.worker",
    "ablate.scaling": "ablate.costs.scaling",
    "ablate.seeds": "ablate.config.seeds",
    "ablate.smoke": "ablate.run.smoke",
    "ablate.smoke_caps": "ablate.config.smoke",
    "ablate.storage_bench": "ablate.run.bench_storage",
    "ablate.storage_index": "ablate.storage.index",
    "ablate.storage_journal": "ablate.storage.journal",
    "ablate.storage_open": "ablate.storage.opening",
    "ablate.storage_retry": "ablate.storage.retry",
    "ablate.storage_trials": "ablate.storage.states",
    "ablate.study_cells": "ablate.study.cells",
    "ablate.study_model": "ablate.study.model",
    "ablate.study_records": "ablate.study.records",
    "ablate.study_sections": "ablate.study.sections",
    "ablate.study_specs": "ablate.config.specs",
    "ablate.study_text": "ablate.config.text",
    "ablate.tracking": "ablate.trainer.tracking",
    "ablate.trainer_fit": "ablate.trainer.fit",
    "ablate.trainer_process": "ablate.trainer.process",
    "ablate.trial_config": "ablate.config.trial",
    "ablate.wandb_summary": "ablate.report.wandb",
}


class _Moved(types.ModuleType):
    """A stand-in for a moved module: attributes come from its new home(s), with one warning."""

    def __init__(self, old: str, new: str):
        super().__init__(old, f"moved to {new}")
        self.__homes = new.split()
        self.__warned = False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if not self.__warned:
            self.__warned = True
            warnings.warn(f"{self.__name__} moved to {' and '.join(self.__homes)}; import from there (the old path "
                          "is removed in the next release)", DeprecationWarning, stacklevel=2)
        for home in self.__homes:
            module = importlib.import_module(home)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"{self.__name__} (moved to {' and '.join(self.__homes)}) has no attribute {name!r}")

    def __dir__(self):
        return sorted(set().union(*(dir(importlib.import_module(h)) for h in self.__homes)))


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return _Moved(spec.name, MOVED[spec.name])

    def exec_module(self, module):
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, _Loader())
        return None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())  # before the path finders: a stale old file never wins
