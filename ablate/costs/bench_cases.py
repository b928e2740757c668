"""Rows of ``python -m ablate_kernels.bench`` that time ablate's own code: CARAFE and the evaluation-time path.

``kernels/`` imports nothing of ablate, so these cases reach the benchmark through the entry-point
group ``ablate_kernels.bench`` (``pyproject.toml``): each entry is a function
``(size, device, dtype) -> list[Case]`` (:class:`ablate_kernels.bench.Case`), named as the
benchmark's ``--ops`` names it. At a size ``B,C,H,W`` of the benchmark (the feature map a block sees):

* ``carafe``: forward + backward of the head's CARAFE upsampler (:class:`ablate.attention.carafe.CARAFEPack`,
  the paper's k_up 5, k_enc 3, 64 compressed channels, sigma 2) on (B, C, H, W), against the
  bilinear x2 resize it replaces (the reference row) and the reassembly op alone (:func:`carafe`,
  masks given);
* ``eval_path``: the evaluation of a trained model's weights as a study's ``eval_factors:`` runs it
  (:func:`ablate.models.inference.evaluate`, no gradients, eval mode): a small segmenter (the small
  CNN at width 32, EMANet with K 64 at C = 32, a plain head) on (B, 3, 8H, 8W) images (the feature
  map H x W at output stride 8), whole image at T_eval = 3 (the reference row), T_eval = 7
  (the same weights, more EM iterations), sliding windows (crop half the side, stride a third)
  and the paper's six scales + flip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from ablate_kernels.bench import Case

SIDE = 8  # the small CNN's output stride: an image side per feature-map side


def carafe_cases(size, device, dtype) -> list[Case]:
    from ..attention.carafe import CARAFEPack, carafe

    b, c, h, w = size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((b, c, h, w), generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
    g = torch.randn((b, c, 2 * h, 2 * w), generator=gen).to(device=device, dtype=dtype)
    pack = CARAFEPack(c, 2).to(device=device, dtype=dtype)
    with torch.no_grad():
        masks = pack.kernel_normalizer(pack.content_encoder(pack.channel_compressor(x)))
    masks.requires_grad_(True)

    def reset():
        for t in (x, masks, *pack.parameters()):
            t.grad = None

    def bilinear():
        F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).backward(g)

    return [Case("carafe", "bilinear x2 (what it replaces)", bilinear, reset, is_reference=True),
            Case("carafe", "CARAFEPack x2 (k_up=5, k_enc=3, C_m=64)", lambda: pack(x).backward(g), reset),
            Case("carafe", "carafe op alone (masks given)", lambda: carafe(x, masks, 5, 1, 2).backward(g), reset)]


def _segmenter(T_eval: int, device, dtype):
    from ..models.segmenter import Segmenter

    torch.manual_seed(0)
    model = Segmenter(21, {"name": "small_cnn", "width": 32, "depth": 3}, "emanet", {"K": 64, "T": 3, "T_eval": T_eval})
    return model.to(device=device, dtype=dtype).eval()


def eval_cases(size, device, dtype) -> list[Case]:
    from ..config.evaluation import PAPER_SCALES, EvalSpec
    from ..models.inference import evaluate

    b, _, h, w = size
    image = torch.randn((b, 3, SIDE * h, SIDE * w), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    ih, iw = image.shape[-2:]
    crop, stride = (max(1, ih // 2), max(1, iw // 2)), (max(1, ih // 3), max(1, iw // 3))
    model3 = _segmenter(3, device, dtype)
    model7 = _segmenter(7, device, dtype)
    model7.load_state_dict(model3.state_dict())  # the same trained weights, evaluated at another T_eval

    def run(model, spec):
        def call():
            with torch.no_grad():
                evaluate(model, image, 21, spec)
        return call

    shape = f"{b}x3x{ih}x{iw}"
    return [Case("eval_path", f"whole, T_eval=3 ({shape})", run(model3, EvalSpec()), is_reference=True),
            Case("eval_path", "whole, T_eval=7", run(model7, EvalSpec())),
            Case("eval_path", f"slide {crop[0]}x{crop[1]} / {stride[0]}x{stride[1]}",
                 run(model3, EvalSpec("slide", crop, stride))),
            Case("eval_path", "6 scales + flip", run(model3, EvalSpec(scales=PAPER_SCALES, flip=True)))]


__all__ = ["carafe_cases", "eval_cases"]
