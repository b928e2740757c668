"""The shape of the code: pinned cell keys and presets, one-way imports, no import cycle, no Triton needed."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import pins

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "python tests/pins.py (only for a change meant to alter them; say so in the commit)"


# -- behaviour pinned across refactors --------------------------------------------------------------

def test_every_committed_study_keeps_its_cell_keys():
    """Cell keys hash the resolved configuration: a moved default or factor would orphan stored results."""
    pinned = json.loads(pins.CELL_KEYS.read_text())
    now = pins.study_cells()
    assert sorted(now) == sorted(pinned), (
        f"studies on disk {sorted(now)} differ from those pinned {sorted(pinned)}; a new study is pinned by {REGENERATE}")
    for name, cells in pinned.items():
        assert now[name] == cells, f"{name}: cells (title, mechanism, key) changed"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.parametrize("name", sorted(json.loads(pins.PRESET_PINS.read_text())))
def test_preset_builds_the_pinned_block(name):
    """Same family, factors and defaults; same parameters drawn in the same order; same output."""
    from ablate.attention import MECHANISMS

    pinned = json.loads(pins.PRESET_PINS.read_text())[name]
    now = json.loads(json.dumps(pins.preset_pin(MECHANISMS[name])))
    assert now["family"] == pinned["family"]
    assert now["factors"] == pinned["factors"]
    assert list(now["state"]) == list(pinned["state"]), "state-dict entries differ"
    for key, (shape, total, absolute) in pinned["state"].items():
        assert now["state"][key][0] == shape, key
        assert _close(now["state"][key][1], total) and _close(now["state"][key][2], absolute), key
    assert all(_close(a, b) for a, b in zip(now["output"], pinned["output"])), "eval-mode output differs"


def test_every_preset_is_pinned():
    from ablate.attention import MECHANISMS

    assert sorted(MECHANISMS) == sorted(json.loads(pins.PRESET_PINS.read_text())), f"pin a new preset with {REGENERATE}"
