"""A seeded synthetic scene task in which local appearance cannot decide a pixel's class.

Design of the default task, ``global_cue``
-------------------------------------------
Each image holds a few rectangular objects on a noisy background. Every object carries one of
two stripe textures (horizontal or vertical), which a small convolution reads easily. Each
image also holds one *cue*: a small square marker whose colour is one of two values. An
object pixel's class is ``1 + 2 * texture + cue``; background is class 0; the cue's own
pixels are ``ignore_index`` (not scored). So half of the class information is local (the
texture) and half sits in the cue, which is placed at least ``cue_gap`` pixels (Chebyshev
distance) from every object pixel. The default backbone's receptive field is narrower than
that gap, so a model without a long-range mechanism sees the texture but never the cue: at
best it guesses between the two cue classes, which caps every object class's IoU near 1/3.
A mechanism that carries information across the image (non-local, a global graph, pooling)
can read the cue and separate all five classes. Object colours, sizes, positions, stripe
phase and the background noise are random and independent of the class, so no local
shortcut exists.

Everything is drawn from ``numpy.random.default_rng`` seeded by the split's seed, so the
same (config, split) gives the same arrays on every machine: the validation split is fixed by
``SceneConfig.seed`` alone, independent of the trial seed.

Diagnostic variants, each needing a different kind of context, are registered in ``TASKS``:
``pairing`` (pixel-to-pixel affinity), ``left_right`` (long range plus position) and
``local`` (a control where context does not matter); their docstrings give the designs. ``thin``
asks for no context at all but for resolution: one-pixel lines and sharp box edges, which a head
that upsamples its stride-2 logits bilinearly blurs (for ``model.head.upsample``).

This module is torch-free (numpy only): a study reads ``TASKS`` and ``SceneConfig`` when it loads, and
loading a study (``load_study``, ``ablate.run.status``) must not import torch. The tensors and the
torch ``Dataset`` are in :mod:`ablate.data.synthetic`, which re-exports everything here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the synthetic generator (all have defaults; a study's ``data:`` sets them)."""

    task: str = "global_cue"
    size: int = 32
    train_images: int = 1536
    val_images: int = 384
    min_objects: int = 2
    max_objects: int = 3
    min_side: int = 4
    max_side: int = 7
    cue_side: int = 4
    cue_gap: int = 6
    noise: float = 0.35
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _place(rng: np.random.Generator, free: np.ndarray, h: int, w: int) -> tuple[int, int] | None:
    """Top-left corner of an h x w box fully inside ``free`` (a bool mask), or None."""
    size = free.shape[0]
    # integral image lets us test every candidate corner at once
    ii = np.pad(free.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    ys, xs = np.arange(size - h + 1), np.arange(size - w + 1)
    counts = ii[ys[:, None] + h, xs[None, :] + w] - ii[ys[:, None], xs[None, :] + w] \
        - ii[ys[:, None] + h, xs[None, :]] + ii[ys[:, None], xs[None, :]]
    ok = np.argwhere(counts == h * w)
    if len(ok) == 0:
        return None
    y, x = ok[rng.integers(len(ok))]
    return int(y), int(x)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Chebyshev dilation of a bool mask by r pixels (a (2r+1) x (2r+1) square)."""
    out = mask.copy()
    for axis in (0, 1):  # separable: grow along rows, then along columns
        for _ in range(r):
            grown = out.copy()
            if axis == 0:
                grown[1:] |= out[:-1]
                grown[:-1] |= out[1:]
            else:
                grown[:, 1:] |= out[:, :-1]
                grown[:, :-1] |= out[:, 1:]
            out = grown
    return out


_CUE_COLOURS = np.array([[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0]], dtype=np.float32)


def _canvas(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Noisy, tinted background image (3, S, S) and an all-background label map."""
    s = cfg.size
    img = rng.normal(0.0, cfg.noise, size=(3, s, s)).astype(np.float32)
    img += rng.normal(0.0, 0.3, size=(3, 1, 1)).astype(np.float32)  # per-image tint
    return img, np.zeros((s, s), dtype=np.uint8)


def _paint_object(rng, img, y, x, oh, ow, texture: int, colour: np.ndarray, cfg: SceneConfig) -> None:
    """A striped rectangle (texture 0: horizontal, 1: vertical stripes) of ``colour``."""
    phase = int(rng.integers(2))
    yy, xx = np.mgrid[0:oh, 0:ow]
    stripes = (((yy if texture == 0 else xx) + phase) % 2).astype(np.float32)
    img[:, y:y + oh, x:x + ow] = colour + 1.2 * (stripes - 0.5) + rng.normal(0, cfg.noise / 2, (3, oh, ow))


def _paint_cue(rng, img, label, occupied, cfg: SceneConfig, colour: np.ndarray):
    """Place the cue at least ``cue_gap`` from every object; its pixels are not scored."""
    at = _place(rng, ~_dilate(occupied, cfg.cue_gap), cfg.cue_side, cfg.cue_side)
    if at is None:
        return None
    y, x = at
    c = cfg.cue_side
    img[:, y:y + c, x:x + c] = colour[:, None, None] + rng.normal(0, cfg.noise / 2, (3, c, c))
    label[y:y + c, x:x + c] = IGNORE_INDEX
    return y, x


def _global_cue(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """One image (3, S, S) float32 and its label map (S, S) uint8 for the global-cue task."""
    s = cfg.size
    while True:  # rejection: retry the rare layout that leaves no room for the cue
        img, label = _canvas(rng, cfg)
        occupied = np.zeros((s, s), dtype=bool)
        cue = int(rng.integers(2))
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        for _ in range(n):
            oh, ow = rng.integers(cfg.min_side, cfg.max_side + 1, size=2)
            at = _place(rng, ~_dilate(occupied, 1), int(oh), int(ow))
            if at is None:
                continue
            y, x = at
            texture = int(rng.integers(2))
            colour = rng.uniform(-1.0, 1.0, size=(3, 1, 1)).astype(np.float32)
            _paint_object(rng, img, y, x, oh, ow, texture, colour, cfg)
            label[y:y + oh, x:x + ow] = 1 + 2 * texture + cue
            occupied[y:y + oh, x:x + ow] = True
        if not occupied.any() or _paint_cue(rng, img, label, occupied, cfg, _CUE_COLOURS[cue]) is None:
            continue
        return img, label


_PALETTE = np.array([[1.0, -0.8, -0.8], [-0.8, 1.0, -0.8], [-0.8, -0.8, 1.0], [0.9, 0.9, -0.9]], dtype=np.float32)


def _spread_objects(rng, cfg: SceneConfig, n: int, gap: int):
    """Up to ``n`` boxes (y, x, h, w), each at least ``gap`` pixels from the others."""
    occupied = np.zeros((cfg.size, cfg.size), dtype=bool)
    boxes = []
    for _ in range(n):
        oh, ow = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, size=2))
        at = _place(rng, ~_dilate(occupied, gap), oh, ow)
        if at is None:
            continue
        boxes.append((at[0], at[1], oh, ow))
        occupied[at[0]:at[0] + oh, at[1]:at[1] + ow] = True
    return boxes, occupied


def _pairing(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pairing: an object is class 2 if another object of the same colour exists, else class 1.

    Objects are at least ``cue_gap`` apart, beyond the backbone's receptive field, so deciding
    needs a pixel-to-pixel comparison of appearance across the image (pairwise affinity);
    a global average of the image does not say which colour is repeated.
    """
    while True:
        img, label = _canvas(rng, cfg)
        boxes, _ = _spread_objects(rng, cfg, int(rng.integers(max(2, cfg.min_objects), cfg.max_objects + 2)),
                                   cfg.cue_gap)
        if len(boxes) < 2:
            continue
        colours = rng.integers(len(_PALETTE), size=len(boxes))
        for (y, x, oh, ow), c in zip(boxes, colours):
            jitter = rng.normal(0.0, 0.1, size=(3, 1, 1)).astype(np.float32)
            _paint_object(rng, img, y, x, oh, ow, int(rng.integers(2)), _PALETTE[c][:, None, None] + jitter, cfg)
            label[y:y + oh, x:x + ow] = 2 if (colours == c).sum() > 1 else 1
        return img, label


def _left_right(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Relative position: an object is class 1 if its centre lies left of the cue's, else 2.

    Needs long range *and* position: the cue's colour is constant, so what matters is where it
    is relative to the object; attention that only pools the cue's features cannot tell.
    """
    while True:
        img, label = _canvas(rng, cfg)
        boxes, occupied = _spread_objects(rng, cfg, int(rng.integers(cfg.min_objects, cfg.max_objects + 1)), 1)
        textures = [int(rng.integers(2)) for _ in boxes]
        colours = [rng.uniform(-1.0, 1.0, size=(3, 1, 1)).astype(np.float32) for _ in boxes]
        at = _paint_cue(rng, img, label, occupied, cfg, _CUE_COLOURS[0])
        if not boxes or at is None:
            continue
        cue_x = at[1] + cfg.cue_side / 2
        for (y, x, oh, ow), t, c in zip(boxes, textures, colours):
            _paint_object(rng, img, y, x, oh, ow, t, c, cfg)
            label[y:y + oh, x:x + ow] = 1 if x + ow / 2 < cue_x else 2
        return img, label


def _local(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Local control: the class is the stripe direction (1 horizontal, 2 vertical); a cue is drawn
    but means nothing. Context does not matter, so attention should not help."""
    while True:
        img, label = _canvas(rng, cfg)
        boxes, occupied = _spread_objects(rng, cfg, int(rng.integers(cfg.min_objects, cfg.max_objects + 1)), 1)
        if not boxes:
            continue
        for y, x, oh, ow in boxes:
            texture = int(rng.integers(2))
            _paint_object(rng, img, y, x, oh, ow, texture, rng.uniform(-1.0, 1.0, size=(3, 1, 1)).astype(np.float32),
                          cfg)
            label[y:y + oh, x:x + ow] = 1 + texture
        if _paint_cue(rng, img, label, occupied, cfg, _CUE_COLOURS[int(rng.integers(2))]) is None:
            continue
        return img, label


def _thin(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Thin structures: one-pixel-wide lines (class 1) and solid boxes (class 2) on the noisy background.

    Each image has 2-4 straight lines of width 1 (horizontal, vertical or diagonal, 8-20 pixels
    long), and ``min_objects``..``max_objects`` solid boxes of ``min_side``..``max_side``,
    each drawn in a colour of its own at a contrast well above the noise. Everything is local (the
    backbone sees it), but at a feature stride of 2 a line is half a feature pixel wide and half of
    the box edges fall inside a feature pixel: the class map has detail finer than the features,
    which only an upsampler that places it (not a fixed bilinear kernel) can recover. Lines are
    drawn over boxes, so a line crossing a box is scored as line; no cue, nothing ignored.
    """
    s = cfg.size
    img, label = _canvas(rng, cfg)
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        oh, ow = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, size=2))
        y, x = int(rng.integers(0, s - oh + 1)), int(rng.integers(0, s - ow + 1))
        img[:, y:y + oh, x:x + ow] = _contrast(rng)[:, None, None] + rng.normal(0, cfg.noise / 2, (3, oh, ow))
        label[y:y + oh, x:x + ow] = 2
    for _ in range(int(rng.integers(2, 5))):
        length = int(rng.integers(8, 21))
        dy, dx = ((0, 1), (1, 0), (1, 1), (1, -1))[int(rng.integers(4))]
        y0, x0 = int(rng.integers(0, s)), int(rng.integers(0, s))
        steps = np.arange(length)
        ys, xs = y0 + dy * steps, x0 + dx * steps
        keep = (ys >= 0) & (ys < s) & (xs >= 0) & (xs < s)
        ys, xs = ys[keep], xs[keep]
        img[:, ys, xs] = _contrast(rng)[:, None] + rng.normal(0, cfg.noise / 2, (3, len(ys)))
        label[ys, xs] = 1
    return img, label


def _contrast(rng: np.random.Generator) -> np.ndarray:
    """A colour (3,) with every channel 0.8-1.4 away from 0 (the background's mean), random signs."""
    return (rng.choice([-1.0, 1.0], size=3) * rng.uniform(0.8, 1.4, size=3)).astype(np.float32)


# name -> (generator of one image, number of classes, the kind of context it needs)
TASKS: dict[str, tuple[Callable, int, str]] = {
    "global_cue": (_global_cue, 5, "global: one distant marker's colour decides every object's class "
                                   "(one global aggregate suffices in principle)"),
    "pairing": (_pairing, 3, "pairwise: an object's class says whether another object of its colour exists "
                             "(needs pixel-to-pixel affinity)"),
    "left_right": (_left_right, 3, "position: an object's class says whether it lies left or right of the "
                                   "marker (needs long range and position)"),
    "local": (_local, 3, "local control: the class is the object's own texture; context does not matter"),
    "thin": (_thin, 3, "resolution: one-pixel lines and box edges finer than the features' stride "
                       "(context does not matter; the head's upsampling does)"),
}


def num_classes(task: str) -> int:
    return TASKS[task][1]


# name -> each class's name, index = label value (what the generators above write)
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "global_cue": ("background", "horizontal, red cue", "horizontal, green cue", "vertical, red cue",
                   "vertical, green cue"),
    "pairing": ("background", "colour alone", "colour repeated"),
    "left_right": ("background", "left of cue", "right of cue"),
    "local": ("background", "horizontal", "vertical"),
    "thin": ("background", "line", "box"),
}


def class_names(task: str) -> tuple[str, ...]:
    """The names of ``task``'s classes, in label order (a report's per-class column heads)."""
    return CLASS_NAMES[task]
