"""Seed streams: one seed per source of randomness, derived from the trial seed.

A trial used to seed the global generators once and then build backbone -> block -> head, so
the head's initial weights depended on how many random numbers the attention block had drawn:
seed s of two cells shared the backbone but not the head. With streams (``SEED_STREAMS = 1``,
recorded in each trial's result as ``seed_streams``) every part is built right after reseeding
the generators with ``derive(seed, part)``, and training draws (dropout from torch's generator,
a real dataset's augmentations from numpy's and Python's) start from ``derive(seed, "train")``;
the data order keeps its own generator seeded with the trial seed (``ablate/trainer/trial.py``), and
the cue probe (``ablate/trainer/probes.py``) runs under ``derive(seed, "probe")`` in a forked generator
state that it leaves untouched. So seed s of every cell shares the data order and the
initialisation of every shared part, and two cells differ only by what their factors change: a
paired design.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

SEED_STREAMS = 1  # the scheme's version, stored in each trial's result; absent in older trials


def derive(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of trial seed ``seed``: the first 8 bytes of
    SHA-256("ablate:<seed>:<name>"), stable across processes and machines (unlike hash())."""
    digest = hashlib.sha256(f"ablate:{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def reseed(seed: int, name: str) -> None:
    """Seed torch's (CPU and CUDA), numpy's and Python's global generators with stream ``name``."""
    s = derive(seed, name)
    torch.manual_seed(s)
    np.random.seed(s % 2 ** 32)
    random.seed(s)
