"""Attention mechanisms as presets of one vocabulary; ``MECHANISMS`` (from :mod:`.presets`) is the registry.

One module per mechanism (named after it: ``non_local``, ``glore``, ``gcnet``, ``senet`` ...),
each block with its ``FACTORS`` beside its class; :mod:`.presets` is the table of presets by
family, naming each block by where it is, with its factors from :mod:`.manifest` (so that the
table, and a study read against it, import no torch); :mod:`.vocab` defines ``Factor`` and
``Preset``. A plugin's preset (``module:attr`` or installed under the entry-point group
``ablate.mechanisms``, see :mod:`ablate.plugins`) is found by ``MECHANISMS[name]``, ``get_preset``
and ``resolve_mechanism``; ``installed_presets`` lists those. The block classes exported here
(``NoAttention``, ``NonLocalBlock``, ``LowRankBlock``) are imported on first use.
"""
from __future__ import annotations

from .presets import FAMILIES, MECHANISMS, get_preset, installed_presets, resolve_mechanism
from ..config.lazy import lazy_names
from ..config.vocab import Factor, Preset

_BLOCKS = {"NoAttention": ".none", "NonLocalBlock": ".non_local", "LowRankBlock": ".glore"}  # they import torch

__all__ = ["FAMILIES", "MECHANISMS", "Factor", "Preset", "get_preset", "installed_presets", "resolve_mechanism", "NoAttention", "NonLocalBlock", "LowRankBlock"]
__getattr__ = lazy_names(__name__, _BLOCKS)
