"""Datasets: the embedded synthetic tasks (:mod:`.synthetic`), the real ones (PASCAL VOC, Cityscapes,
ADE20K) through mmsegmentation (:mod:`.real`: specs, layouts on disk, loaders), a synthetic task
exported in a dataset's layout (:mod:`.export`) and the Lightning data modules with a resumable
data order (:mod:`.lightning`)."""
from .synthetic import TASKS, SceneConfig, make_split, SyntheticSegmentation

__all__ = ["TASKS", "SceneConfig", "make_split", "SyntheticSegmentation"]
