"""The torch-free table of mmseg head layouts (ablate/models/mmseg_layouts.py) names the block
classes the presets build: keyed on (module, class name), it gives each preset the layout it
would give the class itself."""
from __future__ import annotations

import importlib

from ablate.attention import MECHANISMS
from ablate.models.mmseg_layouts import DANET, LAYOUTS, block_key, check_style, layout_of


def test_every_key_names_a_block_class_of_a_built_in_preset():
    classes = {p.block for p in MECHANISMS.values()}
    for module, name in LAYOUTS:
        assert getattr(importlib.import_module(module), name) in classes, (module, name)
    assert DANET in LAYOUTS


def test_a_presets_key_is_its_block_class():
    for name, preset in MECHANISMS.items():
        assert block_key(preset) == (preset.block.__module__, preset.block.__name__), name
        keyed = {getattr(importlib.import_module(m), n): layout for (m, n), layout in LAYOUTS.items()}
        assert layout_of(preset) == keyed.get(preset.block), name


def test_check_style_words():
    assert check_style(MECHANISMS["nonlocal"]) is None and check_style(MECHANISMS["danet"], {"branch": "both"}) is None
    assert "has no mmseg head" in check_style(MECHANISMS["danet"], {"branch": "pam"})
    refused = check_style(MECHANISMS["glore"])
    assert "block LowRankBlock" in refused and "style mmseg supports:" in refused
