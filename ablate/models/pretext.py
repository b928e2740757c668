"""The synthetic pretext: ``small_cnn`` trained once on a segmentation task of its own, cached by content.

No pretrained weights can be fetched for the small backbone, so ``model.backbone.init:
pretrained_synthetic`` stands in for an ImageNet backbone with weights made here: features that
already group pixels by what they show, learned on labels the studied task never uses.

The pretext task, ``appearance``
--------------------------------
Each 32 x 32 image holds 3-5 rectangles (sides 3-8, overlapping; the last drawn owns a pixel) on
the studied tasks' kind of background (Gaussian noise, a per-image tint). A rectangle is one of six
kinds, and its kind is its pixels' class (background is class 0): horizontal stripes, vertical
stripes, a checkerboard (each in a random colour), or a flat patch whose dominant channel is red,
green or blue. Every class is decided by the pixel's neighbourhood (texture or colour), so the
backbone's 9 x 9 receptive field sees it all; there is no cue, no rule across the image and no
class of the studied tasks. The features it gives group pixels by texture and colour, which is
what the studied ``global_cue`` task's objects (stripes) and its marker (a flat red or green
square) are made of: like an ImageNet backbone's features for real scenes, they say what a pixel
shows, never which class the studied task gives it.

The backbone is trained with a 1 x 1 classifier on its stride-2 features (logits resized to the
image), AdamW and a one-cycle schedule, from its own seed, in a forked RNG (the caller's
generators are left as they were). Only the backbone's weights and BN statistics are kept.
:func:`build_small_cnn` is what a study's ``model.backbone`` of ``small_cnn`` builds (``init``,
``freeze``); :func:`provenance` is what a trial records of it.

The cache
---------
:func:`pretext_key` is a SHA-256 of the pretext's configuration (:class:`PretextSpec`), the
backbone's (``width``, ``depth``), torch's major.minor version and :func:`code_fingerprint` (the
source of the functions and classes that decide the weights). The checkpoint is
``$ABLATE_CACHE/pretext/<key>.pt`` (else ``~/.cache/ablate/pretext``): its state dict and a
record (key, configuration, code fingerprint, the pretext's own validation mIoU, the seconds it
took). :func:`pretrained_state` takes an exclusive lock on ``<key>.lock`` before it looks, so of
concurrent workers one trains and the others wait and then read its file; the file is written
atomically (:mod:`ablate.config.atomic`), so a reader never sees half of it.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config.atomic import locked, make_folder, write_bytes
from .backbone import SmallCNN, conv_bn_relu

KINDS = ("horizontal stripes", "vertical stripes", "checkerboard", "flat red", "flat green", "flat blue")
NUM_CLASSES = 1 + len(KINDS)


@dataclass(frozen=True)
class PretextSpec:
    """The pretext's configuration (all of it enters the key)."""

    task: str = "appearance"
    size: int = 32
    train_images: int = 2048
    val_images: int = 256
    min_objects: int = 3
    max_objects: int = 5
    min_side: int = 3
    max_side: int = 8
    noise: float = 0.35
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.003
    seed: int = 7

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT = PretextSpec()


def _scene(rng: np.random.Generator, spec: PretextSpec) -> tuple[np.ndarray, np.ndarray]:
    """One image (3, S, S) float32 and its label map (S, S) of the appearance task."""
    s = spec.size
    img = rng.normal(0.0, spec.noise, size=(3, s, s)).astype(np.float32)
    img += rng.normal(0.0, 0.3, size=(3, 1, 1)).astype(np.float32)
    label = np.zeros((s, s), dtype=np.int64)
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, size=2))
        y, x = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
        kind = int(rng.integers(len(KINDS)))
        yy, xx = np.mgrid[0:h, 0:w]
        phase = int(rng.integers(2))
        if kind < 3:  # a texture in a random colour
            pattern = (yy, xx, yy + xx)[kind] + phase
            colour = rng.uniform(-1.0, 1.0, size=(3, 1, 1))
            patch = colour + 1.2 * ((pattern % 2) - 0.5)
        else:  # a flat patch whose channel kind - 3 dominates
            colour = rng.uniform(-1.0, 0.0, size=3)
            colour[kind - 3] = rng.uniform(0.9, 1.6)
            patch = np.broadcast_to(colour[:, None, None], (3, h, w))
        img[:, y:y + h, x:x + w] = patch + rng.normal(0.0, spec.noise / 2, (3, h, w))
        label[y:y + h, x:x + w] = 1 + kind
    return img, label


def make_pretext_data(spec: PretextSpec, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) and labels (N, S, S) of the pretext's ``split``, fixed by its seed alone."""
    if spec.task != "appearance":
        raise ValueError(f"unknown pretext task {spec.task!r}; valid: appearance")
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, 7919])
    pairs = [_scene(rng, spec) for _ in range({"train": spec.train_images, "val": spec.val_images}[split])]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def _miou(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean IoU in points over the classes present in either map."""
    pred = logits.argmax(1)
    ious = []
    for c in range(NUM_CLASSES):
        p, t = pred == c, labels == c
        union = (p | t).sum().item()
        if union:
            ious.append((p & t).sum().item() / union)
    return 100.0 * float(np.mean(ious))


def train_backbone(width: int, depth: int, spec: PretextSpec) -> tuple[dict, dict]:
    """Train ``SmallCNN(width, depth)`` on the pretext: (its state dict, {val_miou, seconds})."""
    t0 = time.perf_counter()
    xt, yt = make_pretext_data(spec, "train")
    xv, yv = make_pretext_data(spec, "val")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        backbone = SmallCNN(3, width, depth)
        classifier = nn.Conv2d(width, NUM_CLASSES, 1)
        params = list(backbone.parameters()) + list(classifier.parameters())
        steps_per_epoch = -(-len(xt) // spec.batch_size)
        opt = torch.optim.AdamW(params, lr=spec.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch,
                                                    pct_start=0.15)
        order = torch.Generator().manual_seed(spec.seed)

        def logits_of(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(classifier(backbone(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)

        backbone.train()
        for _ in range(spec.epochs):
            for idx in torch.randperm(len(xt), generator=order).split(spec.batch_size):
                loss = F.cross_entropy(logits_of(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        backbone.eval()
        with torch.no_grad():
            val = _miou(logits_of(xv), yv)
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    return state, {"val_miou": round(val, 2), "seconds": round(time.perf_counter() - t0, 1)}


_FINGERPRINTED = (_scene, make_pretext_data, train_backbone, SmallCNN, conv_bn_relu)  # as defined here


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source that decides the pretext's weights (the generator, the training
    loop, the backbone's layers): an edit of any of them makes a new key."""
    parts = [inspect.getsource(obj) for obj in _FINGERPRINTED]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def pretext_key(width: int, depth: int, spec: PretextSpec | None = None) -> str:
    """The content address of one pretext checkpoint (see the module's docstring); ``spec``:
    :data:`DEFAULT` unless given."""
    spec = spec or DEFAULT
    content = {"pretext": spec.as_dict(), "backbone": {"name": "small_cnn", "width": int(width), "depth": int(depth)},
               "code": code_fingerprint(), "torch": ".".join(torch.__version__.split(".")[:2])}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$ABLATE_CACHE/pretext``, else ``~/.cache/ablate/pretext``."""
    root = os.environ.get("ABLATE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ablate") / "pretext"


def _read(path: Path) -> dict | None:
    try:
        return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    except Exception:  # noqa: BLE001 - none yet, or unreadable (torch's unpickler raises many kinds): trained again
        return None


def pretrained_state(width: int, depth: int, spec: PretextSpec | None = None) -> tuple[dict, dict]:
    """(the pretext backbone's state dict, its record), from the cache or trained now and cached."""
    spec = spec or DEFAULT
    key = pretext_key(width, depth, spec)
    folder = make_folder(cache_dir())
    path = folder / f"{key}.pt"
    with locked(folder / f"{key}.lock"):
        saved = _read(path)
        if not (isinstance(saved, dict) and isinstance(saved.get("record"), dict) and saved["record"].get("key") == key):
            state, metrics = train_backbone(width, depth, spec)
            record = {"key": key, "pretext": spec.as_dict(), "backbone": {"width": width, "depth": depth},
                      "code": code_fingerprint(), "torch": str(torch.__version__), **metrics}
            buffer = io.BytesIO()
            torch.save({"state_dict": state, "record": record}, buffer)
            write_bytes(path, buffer.getvalue())
            saved = {"state_dict": state, "record": record}
    return saved["state_dict"], saved["record"]


INITS = ("scratch", "pretrained_synthetic")


def build_small_cnn(in_channels: int = 3, width: int = 32, depth: int = 3, init: str = "scratch",
                    freeze: bool = False) -> SmallCNN:
    """``model.backbone`` of ``small_cnn``: built (from the generators' current state), its
    pretext weights loaded for ``init: pretrained_synthetic``, then frozen if asked."""
    if init not in INITS:
        raise ValueError(f"unknown small_cnn init {init!r}; valid: {', '.join(INITS)}")
    net = SmallCNN(in_channels, width, depth)
    if init == "pretrained_synthetic":
        if in_channels != 3:
            raise ValueError(f"the synthetic pretext's weights take 3 input channels, not {in_channels}")
        state, record = pretrained_state(width, depth)
        net.load_state_dict(state)
        net.init, net.pretext_key = init, record["key"]
    return net.freeze() if freeze else net


def provenance(backbone) -> dict:
    """What a trial records of its backbone's start: {} for a small_cnn from scratch, not frozen
    (and any other backbone); else ``{"backbone_init": {init, freeze, pretext_key}}``."""
    if not isinstance(backbone, SmallCNN) or (backbone.init == "scratch" and not backbone.frozen):
        return {}
    return {"backbone_init": {"init": backbone.init, "freeze": bool(backbone.frozen),
                              "pretext_key": backbone.pretext_key}}


__all__ = ["DEFAULT", "INITS", "KINDS", "PretextSpec", "cache_dir", "code_fingerprint", "make_pretext_data",
           "pretext_key", "pretrained_state", "provenance", "train_backbone", "build_small_cnn"]
