"""The built-in blocks' factor tables, read without importing the blocks (their modules import torch).

``factors.json``, beside this module, holds for each block the preset table names what
:func:`~ablate.config.vocab.block_factors` reads from the class (its ``FACTORS``, each with the
block's keyword default) and where its ``check_args`` is (:mod:`.rules`). The classes stay the one
place a factor is declared: the file is generated from them, ``python -m ablate.attention.presets``
rewrites it, and ``tests/attention/test_manifest.py`` fails, naming that command, when it differs
from them. So loading a study (``ablate status`` included) checks its cells against the presets
without importing torch; building a block (:attr:`~ablate.config.vocab.Preset.block`) still
imports its module.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

from ..config.vocab import BlockRef, Factor, block_factors

PATH = Path(__file__).with_name("factors.json")
COMMAND = "python -m ablate.attention.presets"  # rewrites it from the table's blocks


def _entry(module: str, name: str) -> dict:
    """One block's record, read from its class (imports its module)."""
    cls = getattr(importlib.import_module(module), name)
    check = getattr(cls, "check_args", None)
    return {"factors": [dataclasses.asdict(f) for f in block_factors(name, cls)],
            "check": f"{check.__module__}:{check.__qualname__}" if check else ""}


def _factor(record: dict) -> Factor:
    """A Factor from its JSON record (JSON has lists where Factor holds tuples)."""
    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    return Factor(**tuples)


def _read() -> dict:
    return json.loads(PATH.read_text()) if PATH.exists() else {}


_MANIFEST = _read()


def block(module: str, name: str) -> BlockRef:
    """A reference to block ``name`` of ``ablate.attention.<module>``, its factors from the manifest;
    a block the manifest lacks (one just added) is read from its class until the file is rewritten."""
    path = f"ablate.attention.{module}"
    entry = _MANIFEST.get(f"{path}:{name}") or _entry(path, name)
    return BlockRef(path, name, tuple(_factor(f) for f in entry["factors"]), entry["check"])


def generate(presets) -> str:
    """The text of ``factors.json`` for the blocks ``presets`` name, read from their classes."""
    blocks = dict.fromkeys((p.source.module, p.source.name) for p in presets)
    return json.dumps({f"{module}:{name}": _entry(module, name) for module, name in blocks}, indent=1) + "\n"
