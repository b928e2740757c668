"""What the tests share that is not a fixture: tiny study files, a CLI runner, reference
computations. Fixtures live in the ``conftest.py`` files (the root one for fixtures every package
uses); plain helpers here, imported as ``from support import ...`` (``tests/`` is on the path:
``pythonpath`` in ``pyproject.toml``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def tiny_study(tmp_path: Path, name: str = "tiny", **overrides) -> Path:
    """Write a small but real study (global-cue task, width-8 CNN) and return its path."""
    study = {
        "name": name,
        "question": "test study",
        "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "glore", "args": {"K": 4}},
        "data": {"task": "global_cue", "train_images": 64, "val_images": 32},
        "train": {"epochs": 2, "batch_size": 16, "threads": 1},
        "factors": {"gcn": [True, False]},
        "seeds": [0, 1],
        "baseline": {"gcn": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path



def base_study() -> dict:
    """A small valid study as a dict; the validation tests change one thing in it at a time."""
    return {
        "name": "case",
        "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "glore", "args": {"K": 4}},
        "data": {"name": "synthetic", "task": "global_cue", "train_images": 16, "val_images": 8},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "threads": 1},
        "factors": {"gcn": [True, False]},
        "seeds": 2,
        "baseline": {"gcn": True},
    }


def psamask_reference(x, psa_type: str, hm: int, wm: int):
    """PSAMask by loops: mask entry (r, c) of pixel (y, x) weighs image position
    (y + r - (hm - 1) // 2, x + c - (wm - 1) // 2); ``collect`` stores it at channel = that
    position, space = (y, x); ``distribute`` at channel = (y, x), space = that position."""
    b, _, h, w = x.shape
    out = x.new_zeros(b, h * w, h, w)
    for y in range(h):
        for xx in range(w):
            for r in range(hm):
                for c in range(wm):
                    ty, tx = y + r - (hm - 1) // 2, xx + c - (wm - 1) // 2
                    if not (0 <= ty < h and 0 <= tx < w):
                        continue
                    value = x[:, r * wm + c, y, xx]
                    if psa_type == "collect":
                        out[:, ty * w + tx, y, xx] = value
                    else:
                        out[:, y * w + xx, ty, tx] = value
    return out

def run_cli(args: list[str], cwd: Path, **kw):
    import subprocess

    # a run inherits nothing an earlier in-process run left in this process's environment: no W&B folder
    # or run id, and above all no WANDB_SERVICE (wandb.init sets it to this process's wandb-core, which
    # a child would then write its runs through, after this process has moved on)
    inherited = {k: v for k, v in os.environ.items() if k not in ("WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME",
                                                                  "WANDB_SERVICE", "ABLATE_RUN_ID")}
    env = {**inherited, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, **kw)
