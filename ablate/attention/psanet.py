"""PSANet: point-wise spatial attention with position-predicted (over-complete) masks.

Paper: *PSANet: Point-wise Spatial Attention Network for Scene Parsing*, Hengshuang Zhao, Yi Zhang,
Shu Liu, Jianping Shi, Chen Change Loy, Dahua Lin, Jiaya Jia, ECCV 2018,
https://hszhao.github.io/papers/eccv18_psanet.pdf (no arXiv version).
Official code consulted: hszhao/semseg (``model/psanet.py``, ``lib/psa/src/cpu/psamask.cpp`` --
the PSAMask crop); mmsegmentation's ``PSAHead`` and mmcv's ``PSAMask``.

What the paper does
-------------------
The attention weights are not computed from pairs of pixels: every pixel **predicts** its own
mask from its feature alone (two 1x1 convs after a reduction conv). On an H x W map the mask is
*over-complete*: (2H - 1) x (2W - 1) channels, a map centred on the pixel that covers the whole
image wherever the pixel sits. PSAMask crops, for pixel (h, w), the H x W window of its mask
that lies on the image: mask index ``(H-1 - h + y, W-1 - w + x)`` gives the weight between
(h, w) and (y, x).

* **collect**: pixel i gathers information, ``y_i = sum_j a_i[j] x_j``; the softmax runs over
  j (the positions pixel i collects from);
* **distribute**: pixel i's mask says how much of its information goes to each j,
  ``y_j = sum_i a_i[j] x_i``; the official code takes the softmax over the *sources* i for each
  target j (dim 1 of the PSAMask output), which we follow;
* the two branches (each with its own reduction to C_r = C/4 and its own mask predictor) are
  concatenated, projected back to C (1x1 conv, BN, ReLU), concatenated with the input and fused
  by a 3x3 conv + BN + ReLU. The attention runs on a map shrunk 2x (``shrink_factor=2``) and the
  mask size is fixed to that map's size at training time (e.g. 473 crops -> 60x60 features ->
  30x30 attention map, 59x59 = 3481-channel masks).

Ours
----
:func:`psa_mask` is the PSAMask crop in PyTorch (one ``gather``). Because the mask predictor's
channel count fixes the attention map's size, the block resizes the reduced features
(bilinear) to a fixed ``grid`` x ``grid`` map -- the paper's "feature size / shrink factor",
made independent of the input size -- attends there, and resizes the result back to H x W.
The default ``grid = 16`` gives a **31 x 31 = 961-channel over-complete mask** per pixel (the
paper's 59 x 59 is for 60-pixel feature maps; ours are small). ``branch`` in
{both, collect, distribute}; the normalisation factor is 1 and softmax is on, as in the paper.
The output is the paper's concat-and-fuse (no additive residual).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import choice, integer, reduction


def _psa_index(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(HW, HW) index into the flattened (2H-1)(2W-1) mask: [i, j] -> mask slot of target j for pixel i."""
    hi = torch.arange(h, device=device).view(h, 1, 1, 1)
    wi = torch.arange(w, device=device).view(1, w, 1, 1)
    yj = torch.arange(h, device=device).view(1, 1, h, 1)
    xj = torch.arange(w, device=device).view(1, 1, 1, w)
    return ((h - 1 - hi + yj) * (2 * w - 1) + (w - 1 - wi + xj)).reshape(h * w, h * w)


def psa_mask(mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Crop over-complete masks (B, (2H-1)(2W-1), H, W) to (B, HW, H, W) as PSAMask does.

    ``collect``: out[b, j, h, w] = weight pixel (h, w) gives to target j (channel = the other
    pixel, space = the predicting pixel). ``distribute``: out[b, i, y, x] = weight pixel i gives
    to (y, x) (channel = the predicting pixel, space = the target). Either way
    ``x.view(B, C, HW) @ out.view(B, HW, HW)`` is the aggregation.
    """
    b, m, h, w = mask.shape
    if m != (2 * h - 1) * (2 * w - 1):
        raise ValueError(f"mask has {m} channels; a {h}x{w} map needs (2H-1)(2W-1) = {(2 * h - 1) * (2 * w - 1)}")
    idx = _psa_index(h, w, mask.device)  # i, j
    per_pixel = mask.flatten(2).transpose(1, 2)  # B, HW(i), M
    a = torch.gather(per_pixel, 2, idx.unsqueeze(0).expand(b, -1, -1))  # B, i, j
    if mode == "collect":
        a = a.transpose(1, 2)  # B, j, i
    elif mode != "distribute":
        raise ValueError(f"mode must be 'collect' or 'distribute', got {mode!r}")
    return a.reshape(b, h * w, h, w)


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class _PSABranch(nn.Module):
    def __init__(self, channels: int, reduced: int, grid: int, mode: str):
        super().__init__()
        self.mode, self.grid = mode, grid
        self.reduce = nn.Sequential(*_conv_bn_relu(channels, reduced))
        self.predict = nn.Sequential(*_conv_bn_relu(reduced, reduced),
                                     nn.Conv2d(reduced, (2 * grid - 1) ** 2, 1, bias=False))

    def attention(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, HW, HW) aggregation matrix on the grid: y = x.view(B, C, HW) @ A."""
        b = feats.shape[0]
        a = psa_mask(self.predict(feats), self.mode)
        return torch.softmax(a, dim=1).reshape(b, self.grid ** 2, self.grid ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = F.interpolate(self.reduce(x), size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        b, c = feats.shape[:2]
        attn = self.attention(feats)
        maps.record(self.mode, attn.transpose(1, 2), grid=(self.grid, self.grid))  # row: target, over sources
        out = feats.flatten(2) @ attn
        return out.view(b, c, self.grid, self.grid)


class PSANetBlock(nn.Module):
    """Point-wise spatial attention: collect and/or distribute, concat-and-fuse with the input."""

    FACTORS = (
        choice("branch", ("both", "collect", "distribute"), "collect, distribute or both (bi-direction)"),
        integer("grid", 2, "side of the attention map; masks are (2*grid-1)^2 channels (default 31x31 = 961)"),
        reduction("reduced width C/reduction (paper: 2048 -> 512)"),
    )

    def __init__(self, channels: int, branch: str = "both", grid: int = 16, reduction: int = 4):
        super().__init__()
        if branch not in ("both", "collect", "distribute"):
            raise ValueError(f"branch must be 'both', 'collect' or 'distribute', got {branch!r}")
        if grid < 2:
            raise ValueError(f"grid must be >= 2, got {grid}")
        reduced = max(1, channels // reduction)
        modes = ("collect", "distribute") if branch == "both" else (branch,)
        self.channels, self.branch, self.grid = channels, branch, grid
        self.branches = nn.ModuleList(_PSABranch(channels, reduced, grid, m) for m in modes)
        self.proj = nn.Sequential(*_conv_bn_relu(reduced * len(modes), channels))
        self.fuse = nn.Sequential(*_conv_bn_relu(2 * channels, channels, k=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(torch.cat([br(x) for br in self.branches], dim=1))
        out = F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, out], dim=1))
