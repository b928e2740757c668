"""A study file read once into a frozen :class:`Study`: each section parsed and validated
(:mod:`.sections`, the ``model:`` section in :mod:`.model`), every cell and baseline resolved and
keyed (:mod:`.cells`), the records and cell identity (:mod:`.records`), and ``KEY=VALUE`` overrides
of ``ablate run`` (:mod:`.overrides`). :func:`load_study` is the entry point."""
from .load import load_study
from .records import Cell, Study, canon, cell_key

__all__ = ["Cell", "Study", "canon", "cell_key", "load_study"]
