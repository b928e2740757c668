"""Attention mechanisms as presets of one vocabulary; ``MECHANISMS`` (from :mod:`.presets`) is the registry.

One module per mechanism (named after it: ``non_local``, ``glore``, ``gcnet``, ``senet`` ...),
each block with its ``FACTORS`` beside its class; :mod:`.presets` is the table of presets by
family; :mod:`.vocab` defines ``Factor`` and ``Preset``. A plugin's preset (``module:attr`` or
installed under the entry-point group ``ablate.mechanisms``, see :mod:`ablate.plugins`) is found by
``MECHANISMS[name]``, ``get_preset`` and ``resolve_mechanism``; ``installed_presets`` lists those.
"""
from __future__ import annotations

from .glore import LowRankBlock
from .non_local import NonLocalBlock
from .none import NoAttention
from .presets import FAMILIES, MECHANISMS, get_preset, installed_presets, resolve_mechanism
from ..config.vocab import Factor, Preset

__all__ = ["FAMILIES", "MECHANISMS", "Factor", "Preset", "get_preset", "installed_presets", "resolve_mechanism", "NoAttention", "NonLocalBlock", "LowRankBlock"]
