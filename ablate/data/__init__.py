"""Datasets: the embedded synthetic context task and the real ones (PASCAL VOC, Cityscapes, ADE20K) through mmsegmentation in real.py."""
from .synthetic import TASKS, SceneConfig, make_split, SyntheticSegmentation

__all__ = ["TASKS", "SceneConfig", "make_split", "SyntheticSegmentation"]
