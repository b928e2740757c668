"""Which factor matters in a point search: Optuna's own importances, with their spread over seeds."""
from __future__ import annotations


def importance_lines(study, info: dict) -> list[str]:
    return []
