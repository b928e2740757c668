"""CARAFE: content-aware reassembly of features, a learned upsampler for the head.

CARAFE: Content-Aware ReAssembly of FEatures, Jiaqi Wang, Kai Chen, Rui Xu, Ziwei Liu, Chen
Change Loy, Dahua Lin, ICCV 2019 (oral), https://arxiv.org/abs/1905.02188. Official code
consulted: open-mmlab/mmcv ``mmcv/ops/carafe.py`` (``CARAFEPack``; its CUDA op and
``CARAFENaive`` define the reassembly); it is not imported here (mmcv's compiled ops are
not available), this is a pure-PyTorch version built on ``unfold``.

This is not an attention preset: it is a choice of how the head upsamples (instead of
bilinear interpolation), listed with the gating family in the survey.

What the paper does, for scale sigma and reassembly kernel k_up:

* kernel prediction: a 1x1 conv compresses C to C_m (64) channels; a k_enc x k_enc conv
  (3) predicts sigma^2 * k_up^2 channels at every source location; pixel shuffle rearranges
  them into one k_up^2 kernel per *output* location; a softmax over the k_up^2 entries
  normalises each kernel;
* reassembly: output location l' = (i', j') takes the k_up x k_up neighbourhood of its
  source location l = (floor(i'/sigma), floor(j'/sigma)) in the input (zero-padded) and
  returns its kernel-weighted sum, for every channel.

Initialisation as mmcv: Xavier-uniform for the compressor, N(0, 0.001) for the encoder
(so initial kernels are close to uniform: a k_up x k_up box filter followed by
nearest-neighbour upsampling); biases zero. Ours differs from mmcv only in the
implementation (unfold + a batched product instead of the CUDA kernel); ``up_group`` (mmcv's
kernel groups, 1 by default) is not supported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CARAFE(nn.Module):
    """Upsample (B, C, H, W) to (B, C, scale*H, scale*W) by content-aware reassembly."""

    def __init__(self, channels: int, scale: int = 2, k_up: int = 5, k_enc: int = 3, compressed: int = 64):
        super().__init__()
        if scale < 1 or k_up < 1 or k_up % 2 == 0 or k_enc % 2 == 0:
            raise ValueError(f"need scale >= 1 and odd k_up, k_enc; got scale={scale}, k_up={k_up}, k_enc={k_enc}")
        self.channels, self.scale, self.k_up, self.k_enc = channels, scale, k_up, k_enc
        self.compress = nn.Conv2d(channels, compressed, kernel_size=1)
        self.encode = nn.Conv2d(compressed, scale * scale * k_up * k_up, kernel_size=k_enc, padding=k_enc // 2)
        nn.init.xavier_uniform_(self.compress.weight)
        nn.init.zeros_(self.compress.bias)
        nn.init.normal_(self.encode.weight, std=0.001)
        nn.init.zeros_(self.encode.bias)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, k_up^2, scale*H, scale*W) reassembly kernels, each softmax-normalised."""
        mask = F.pixel_shuffle(self.encode(self.compress(x)), self.scale)
        return torch.softmax(mask, dim=1)

    def reassemble(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Apply per-output-location ``kernels`` (B, k^2, sH, sW) to ``x`` (B, C, H, W)."""
        b, c, h, w = x.shape
        s, kk = self.scale, self.k_up * self.k_up
        # Neighbourhoods of every source location, row-major over the k x k window: B, H, W, C, k^2.
        patches = F.unfold(x, self.k_up, padding=self.k_up // 2).view(b, c, kk, h, w).permute(0, 3, 4, 1, 2)
        # Kernels grouped by source location: B, H, W, k^2, s*s (pixel-shuffle layout: (H, s, W, s)).
        kern = kernels.view(b, kk, h, s, w, s).permute(0, 2, 4, 1, 3, 5).reshape(b, h, w, kk, s * s)
        out = patches @ kern  # B, H, W, C, s*s
        return out.view(b, h, w, c, s, s).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h * s, w * s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reassemble(x, self.kernels(x))
