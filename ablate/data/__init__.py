"""Datasets: the embedded synthetic context task (real datasets: see the cluster issue)."""
from .synthetic import TASKS, SceneConfig, make_split, SyntheticSegmentation

__all__ = ["TASKS", "SceneConfig", "make_split", "SyntheticSegmentation"]
