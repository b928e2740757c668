"""ablate: ablation studies of self-attention in semantic segmentation, one YAML file per question.

The packages, lowest layer first (each imports only from those before it; ARCHITECTURE.md has the
table): ``config`` (study-file records, errors, seeds), ``stats`` (the statistics of seeds),
``plugins``, ``attention`` (the mechanisms), ``compat``, ``data``, ``models``, ``costs``,
``trainer`` (one trial), ``study`` (a study file read into cells), ``storage`` (trial records),
``doctor``, ``report``, ``run`` (the commands). The names below are imported on first use, so
``import ablate`` stays cheap (the command line starts without torch).
"""
from ._graveyard import install as _install_graveyard

_install_graveyard()

_PUBLIC = {  # name -> module that defines it
    "load_study": "ablate.study",
    "Study": "ablate.study",
    "MECHANISMS": "ablate.attention",
    "get_preset": "ablate.attention",
    "Factor": "ablate.config.vocab",
    "Preset": "ablate.config.vocab",
    "StudyError": "ablate.config.errors",
    "TrialConfig": "ablate.config.trial",
    "run_trial": "ablate.trainer",
    "write_report": "ablate.report",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ablate' has no attribute {name!r}")
