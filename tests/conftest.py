"""Shared fixtures: tiny study files that train in seconds on a CPU."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
# Triton kernels run in Triton's interpreter on CPU tensors unless a GPU run asks otherwise
# (ABLATE_GPU_TESTS=1); it must be set before triton is first imported.
if os.environ.get("ABLATE_GPU_TESTS", "0") in ("", "0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# the runs the tests make use 1-2 seeds: the statistics pre-flight would refuse them (tests/stats/test_preflight.py
# checks the refusal with this unset)
os.environ.setdefault("ABLATE_ALLOW_UNDECIDABLE", "1")
# one in-process worker unless a test asks for more: many tests patch the trainer in this process
# (tests/test_parallel.py checks the machine's own choice with this unset)
os.environ.setdefault("ABLATE_WORKERS", "1")


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


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine spinning
    threads make every op many times slower: in-process tests use one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _own_cost_cache(tmp_path_factory, monkeypatch):
    """Each test measures block costs afresh: ablate.costs' cache (``$ABLATE_CACHE``) goes to a
    folder of the test's own, never the user's ``~/.cache/ablate``; child processes inherit it."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.mktemp("ablate-cache")))


@pytest.fixture
def study_factory(tmp_path):
    def make(**overrides):
        return tiny_study(tmp_path, **overrides)
    return make


@pytest.fixture(autouse=True)
def _no_inherited_wandb_service():
    """wandb.init in this process sets WANDB_SERVICE (its wandb-core); a later test's subprocess that
    inherited it would write its runs through this process's service. Each test leaves it unset."""
    yield
    os.environ.pop("WANDB_SERVICE", None)
