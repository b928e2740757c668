"""What a refactor of the mechanisms must not change, recorded once and pinned by test_architecture.py.

* ``cell_keys.json``: every committed study's cells (label, mechanism, key). A cell key hashes
  the resolved configuration, so a preset whose defaults, factor schema or identity rules moved
  would change it and orphan stored results.
* ``preset_pins.json``: for every preset, its family, its factors (name, default, kind, choices,
  minimum, added) and the block it builds at C = 16 from seed 0: each state-dict entry's shape and
  sums, and the eval-mode output on a fixed input. A block that draws its parameters in another
  order, or computes something else, changes these.

Regenerate only when a change is meant to alter them (and say so in the commit):
``python tests/pins.py``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
CELL_KEYS = HERE / "cell_keys.json"
PRESET_PINS = HERE / "preset_pins.json"
CHANNELS = 16


def study_cells() -> dict:
    """{study file name: [[title, mechanism, key], ...]} for every study in studies/."""
    from ablate.study.load import load_study

    out = {}
    for path in sorted((REPO / "studies").glob("*.yaml")):
        study = load_study(path, check_files=False)
        out[path.name] = [[c.title(), c.mechanism, c.key] for c in study.cells()]
    return out


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def preset_pin(preset) -> dict:
    """The schema of one preset and a numeric fingerprint of the block it builds."""
    torch.manual_seed(0)
    block = preset.build(CHANNELS).eval()
    state = {k: [list(t.shape), float(t.double().sum()), float(t.double().abs().sum())]
             for k, t in block.state_dict().items() if t.is_floating_point()}
    x = torch.randn(2, CHANNELS, 13, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = block(x).double()
    return {
        "family": preset.family,
        "factors": [[f.name, _jsonable(f.default), f.kind, _jsonable(f.choices), f.minimum, f.added]
                    for f in preset.factors],
        "state": state,
        "output": [float(y.sum()), float(y.abs().sum())],
    }


def preset_pins() -> dict:
    from ablate.attention import MECHANISMS

    return {name: preset_pin(p) for name, p in sorted(MECHANISMS.items())}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    CELL_KEYS.write_text(json.dumps(study_cells(), indent=1) + "\n")
    PRESET_PINS.write_text(json.dumps(preset_pins(), indent=1) + "\n")
    print(f"wrote {CELL_KEYS} and {PRESET_PINS}")
