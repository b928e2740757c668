"""Test-time evaluation modes as in mmsegmentation: whole image, sliding window, multi-scale + flip.

A study's ``eval:`` mapping (:func:`ablate.config.evaluation.parse_eval`) picks the mode::

    eval: {mode: slide, crop: [512, 512], stride: [341, 341], scales: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip: true}

* ``whole`` (the default): the model sees the whole image (mmseg's ``test_cfg=dict(mode='whole')``).
* ``slide``: windows of ``crop`` (h, w) every ``stride`` (h, w) pixels; the last row and column
  of windows are moved back to end at the image's border, a window larger than the image is
  clipped to it, and each pixel's logits are the sum over the windows that cover it divided by
  their count: mmseg 1.2.2's ``EncoderDecoder.slide_inference``, reproduced.
* ``scales`` / ``flip``: the image is resized by each ratio (bilinear, each side
  ``int(side * ratio + 0.5)`` as mmcv rounds), and, with ``flip``, also flipped horizontally;
  each view is evaluated in ``mode``, its logits flipped back and resized (bilinear) to the
  output size, turned into softmax probabilities and averaged over the views, as mmseg 1.2.2's
  ``SegTTAModel.merge_preds`` averages the softmax of the views' logits after
  ``postprocess_result`` has flipped them back and resized them to the original shape. We
  return the *log* of the averaged probabilities, so that argmax (the prediction) is mmseg's
  and a cross-entropy on the result is the loss of the averaged prediction.

Where we differ from mmseg 1.2.2: its ``tta_pipeline`` resizes the *loaded* image by each
ratio, while our validation image has already been resized to the dataset's test scale
(``Resize(scale, keep_ratio=True)`` in ``ablate/data/real.py``), so our ratios are relative to the
test scale, as mmseg 0.x's ``MultiScaleFlipAug(img_scale=..., img_ratios=...)`` and the papers'
multi-scale numbers were; and the image is resized as a float tensor by ``F.interpolate``
(mmcv resizes the 8-bit image with cv2). With a single scale 1.0 and no flip, ``whole`` and
``slide`` return the model's logits themselves (no softmax).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..config.evaluation import PAPER_SCALES, EvalSpec  # noqa: F401 - the spec it evaluates

ModelFn = Callable[[torch.Tensor], torch.Tensor]


def _logits_at(model_fn: ModelFn, x: torch.Tensor) -> torch.Tensor:
    """The model's logits for ``x``, resized (bilinear) to ``x``'s size when they are not at it
    (mmseg's ``encode_decode`` resizes the decode head's output to the input)."""
    out = model_fn(x)
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


def whole_inference(model_fn: ModelFn, image: torch.Tensor) -> torch.Tensor:
    """Logits (B, C, H, W) of the whole image (B, 3, H, W) in one call."""
    return _logits_at(model_fn, image)


def windows(height: int, width: int, crop: tuple, stride: tuple) -> list[tuple[int, int, int, int]]:
    """The (y1, y2, x1, x2) windows of mmseg's slide inference over an image of that size."""
    (ch, cw), (sh, sw) = crop, stride
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            out.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return out


def slide_inference(model_fn: ModelFn, image: torch.Tensor, num_classes: int, crop: tuple,
                    stride: tuple) -> torch.Tensor:
    """Logits (B, num_classes, H, W): the sum of the windows' logits over the pixels each covers,
    divided by the number of windows covering each pixel (see :func:`windows`)."""
    b, _, h, w = image.shape
    total = image.new_zeros((b, num_classes, h, w))
    count = image.new_zeros((1, 1, h, w))
    for y1, y2, x1, x2 in windows(h, w, crop, stride):
        total[:, :, y1:y2, x1:x2] += _logits_at(model_fn, image[:, :, y1:y2, x1:x2])
        count[:, :, y1:y2, x1:x2] += 1
    if (count == 0).any():  # cannot happen with stride <= crop; a guard like mmseg's assert
        raise ValueError(f"windows of {crop} every {stride} leave pixels of a {h}x{w} image uncovered")
    return total / count


def scaled_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """An image side times ``ratio``, rounded as mmcv's ``rescale_size`` rounds."""
    return max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))


def infer(model_fn: ModelFn, image: torch.Tensor, num_classes: int, mode: str = "whole",
          crop: tuple | None = None, stride: tuple | None = None) -> torch.Tensor:
    """One view in ``mode`` ('whole' or 'slide')."""
    if mode == "slide":
        return slide_inference(model_fn, image, num_classes, crop, stride)
    return whole_inference(model_fn, image)


def multiscale_flip_inference(model_fn: ModelFn, image: torch.Tensor, num_classes: int,
                              scales=(1.0,), flip: bool = False, mode: str = "whole", crop: tuple | None = None,
                              stride: tuple | None = None, out_size: tuple | None = None) -> torch.Tensor:
    """Log of the softmax probabilities averaged over every (scale, flip) view, at ``out_size``
    (default: the image's size). Each view: resize, optionally flip, :func:`infer` in ``mode``,
    flip back, resize the logits to ``out_size``, softmax."""
    h, w = image.shape[-2:]
    out_size = tuple(out_size or (h, w))
    probs = None
    views = 0
    for ratio in scales:
        size = scaled_size(h, w, ratio)
        x = image if size == (h, w) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            logits = infer(model_fn, x.flip(-1) if flipped else x, num_classes, mode, crop, stride)
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != out_size:
                logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            p = logits.softmax(1)
            probs = p if probs is None else probs + p
            views += 1
    return (probs / views).log()


def evaluate(model_fn: ModelFn, image: torch.Tensor, num_classes: int, spec: EvalSpec,
             out_size: tuple | None = None) -> torch.Tensor:
    """``spec``'s evaluation of ``image`` at ``out_size``: logits for a single view, log-probabilities
    averaged over views with scales or flip (see the module docstring)."""
    if not spec.augmented:
        logits = infer(model_fn, image, num_classes, spec.mode, spec.crop, spec.stride)
        if out_size is not None and logits.shape[-2:] != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        return logits
    return multiscale_flip_inference(model_fn, image, num_classes, spec.scales, spec.flip, spec.mode, spec.crop,
                                     spec.stride, out_size)


__all__ = ["evaluate", "infer", "multiscale_flip_inference", "scaled_size", "slide_inference",
           "whole_inference", "windows"]
