"""Per-image intersection and union pixel counts of a trial's validation set, as one compact,
JSON-serialisable trial attribute (``image_counts``), so a report can bootstrap mIoU over images
(:func:`ablate.stats.bootstrap_miou`) without re-running anything.

The counts are those of the trial's last validation epoch (the one ``final_val_miou`` and
``class_iou`` come from), one row per validation image in the split's order, one column per
class; pixels labelled ``ignore_index`` count in neither. Summed over images they give back the
trial's mIoU (mean over classes with a non-zero union of ΣI / ΣU, as torchmetrics' macro
Jaccard index does).

Format 1: ``{"format": 1, "n_images": N, "n_classes": C, "dtype": "<u2" | "<u4" | "<u8",
"data": base64(zlib(bytes))}`` where the bytes are a (2, N, C) little-endian array of the
narrowest unsigned dtype that holds the largest count: intersections, then unions.
"""
from __future__ import annotations

import base64
import zlib

import numpy as np

ATTR = "image_counts"  # the trial result key (an Optuna user attr) that holds the encoded counts
FORMAT = 1
_DTYPES = ("<u2", "<u4", "<u8")


def encode(intersections, unions) -> dict:
    """Encode two (n_images, n_classes) non-negative integer arrays (see the module docstring)."""
    i, u = np.asarray(intersections), np.asarray(unions)
    if i.shape != u.shape or i.ndim != 2:
        raise ValueError(f"need two (n_images, n_classes) arrays of one shape, got {i.shape} and {u.shape}")
    both = np.stack([i, u]).astype(np.int64)
    if both.size and (both.min() < 0 or (i > u).any()):
        raise ValueError("pixel counts must be non-negative with intersection <= union")
    top = int(both.max()) if both.size else 0
    dtype = next(d for d in _DTYPES if top <= np.iinfo(np.dtype(d)).max)
    raw = np.ascontiguousarray(both.astype(dtype)).tobytes()
    return {"format": FORMAT, "n_images": int(i.shape[0]), "n_classes": int(i.shape[1]), "dtype": dtype,
            "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def decode(attr: dict) -> tuple[np.ndarray, np.ndarray]:
    """(intersections, unions), each an (n_images, n_classes) int64 array, from :func:`encode`'s dict."""
    if not isinstance(attr, dict) or attr.get("format") != FORMAT:
        got = attr.get("format") if isinstance(attr, dict) else type(attr).__name__
        raise ValueError(f"not an image_counts attribute of format {FORMAT} (got format {got!r}); "
                         "it was written by a different version of ablate")
    if attr.get("dtype") not in _DTYPES:
        raise ValueError(f"image_counts: unknown dtype {attr.get('dtype')!r}; valid: {', '.join(_DTYPES)}")
    n, c = int(attr["n_images"]), int(attr["n_classes"])
    flat = np.frombuffer(zlib.decompress(base64.b64decode(attr["data"])), dtype=attr["dtype"])
    if flat.size != 2 * n * c:
        raise ValueError(f"image_counts: {flat.size} counts stored, expected 2 x {n} images x {c} classes")
    both = flat.reshape(2, n, c).astype(np.int64)
    return both[0], both[1]


def confusion_counts(pred, target, num_classes: int, ignore_index: int):
    """Per-image (intersections, unions), each (B, num_classes) int64 torch tensors, of a batch of
    predicted and true label maps (B, H, W); pixels whose target is ``ignore_index`` are left out.
    Intersection = true positives; union = TP + FP + FN, as in the Jaccard index."""
    import torch

    b = pred.shape[0]
    pred, target = pred.reshape(b, -1).long(), target.reshape(b, -1).long()
    valid = target != ignore_index
    k = num_classes
    # one flat bincount over (image, true class, predicted class)
    idx = (torch.arange(b, device=pred.device)[:, None] * k * k + target.clamp(0, k - 1) * k + pred.clamp(0, k - 1))
    conf = torch.bincount(idx[valid], minlength=b * k * k).reshape(b, k, k)
    inter = conf.diagonal(dim1=1, dim2=2)
    return inter, conf.sum(1) + conf.sum(2) - inter
