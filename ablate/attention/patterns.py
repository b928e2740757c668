"""Which pixels meet: the ``pattern`` slot of the pairwise family, one function per pattern.

Every function takes query and key maps ``q``, ``k`` (B, d, H, W) and values ``v`` (B, c, H, W)
and returns (B, c, H, W): for each pixel, a softmax of ``q . k`` over the pixels its pattern
lets it meet, then the weighted sum of their values. Only the set of pixels differs, so a study
that varies ``pattern`` on one Non-local block changes nothing else (transforms, widths, output
transform and residual stay the same). The sets:

* ``full``: every pixel (Non-local); PyTorch's ``scaled_dot_product_attention``.
* ``criss_cross``: the pixel's row and column, H + W - 1 pixels (CCNet's pattern); two passes
  (``R = 2``) reach every pixel.
* ``interlaced``: the pixels on the pixel's lattice of stride ``down_factor`` (the same offset
  inside every ``down_factor`` x ``down_factor`` block, ISA's long-range step) together with
  the pixels of its own block (ISA's short-range step), in one softmax. ISA itself runs the two
  steps one after the other with their own weights (``mechanism: isa``); here they are one
  sparse pattern, so two passes again reach every pixel. H and W that ``down_factor`` does not
  divide are padded, and padded pixels are never attended to.
* ``local_window``: a ``window`` x ``window`` neighbourhood (Local Relation's pattern without
  its geometry prior); pixels outside the image are excluded.
* ``sampled``: the pixel itself and ``samples - 1`` fixed random offsets within ``radius``
  (seeded; DGMN's sampling without its learned offsets), outside-image samples excluded.

The criss-cross and local-window patterns go through :mod:`ablate_kernels`, which runs the
Triton kernels on CUDA and the plain-PyTorch references elsewhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .dgmn import draw_offsets, sample_neighbours
from .rules import PATTERNS  # the names, where a study is checked without torch


def full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    b, _, h, w = q.shape
    flat = [t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (q, k, v)]  # B, 1, N, d
    y = F.scaled_dot_product_attention(*flat, scale=1.0)
    return y.squeeze(1).transpose(1, 2).reshape(b, v.shape[1], h, w)


def criss_cross(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from ablate_kernels.criss_cross import criss_cross_attention

    return criss_cross_attention(q, k, v)


def local_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    from ablate_kernels.local_window import local_window_attention

    no_prior = q.new_zeros(1, window * window)
    return local_window_attention(q, k, v, no_prior, window)


def interlaced(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, down_factor: int) -> torch.Tensor:
    b, d, h, w = q.shape
    c = v.shape[1]
    p = down_factor
    ph, pw = -h % p, -w % p
    if ph or pw:
        q, k, v = (F.pad(t, (0, pw, 0, ph)) for t in (q, k, v))
    H, W = h + ph, w + pw
    oh, ow = H // p, W // p
    valid = F.pad(q.new_ones(1, 1, h, w), (0, pw, 0, ph)).view(1, oh, p, ow, p) > 0.5  # [., a, i, b, j]

    def long_view(t):  # (B, ch, H, W) -> (B, i, j, a*b, ch): same offset (i, j) in every block
        return t.view(t.shape[0], t.shape[1], oh, p, ow, p).permute(0, 3, 5, 2, 4, 1).reshape(
            t.shape[0], p, p, oh * ow, t.shape[1])

    def short_view(t):  # (B, ch, H, W) -> (B, a, b, i*j, ch): the pixels of block (a, b)
        return t.view(t.shape[0], t.shape[1], oh, p, ow, p).permute(0, 2, 4, 3, 5, 1).reshape(
            t.shape[0], oh, ow, p * p, t.shape[1])

    s_long = long_view(q) @ long_view(k).transpose(-1, -2)  # B, i, j, (a b)q, (a b)k
    s_short = short_view(q) @ short_view(k).transpose(-1, -2)  # B, a, b, (i j)q, (i j)k
    # both to (B, a, i, b, j, keys) so one softmax runs per pixel
    s_long = s_long.view(b, p, p, oh, ow, oh * ow).permute(0, 3, 1, 4, 2, 5)
    s_short = s_short.view(b, oh, ow, p, p, p * p).permute(0, 1, 3, 2, 4, 5)
    key_long = valid.permute(0, 2, 4, 1, 3).reshape(1, p, p, oh * ow)  # [., i, j, a*b]
    key_short = valid.permute(0, 1, 3, 2, 4).reshape(1, oh, ow, p * p)  # [., a, b, i*j]
    s_long = s_long.masked_fill(~key_long.view(1, 1, p, 1, p, oh * ow), float("-inf"))
    # the pixel itself sits in both sets: keep it in the long part only
    self_short = torch.eye(p * p, dtype=torch.bool, device=q.device).view(1, 1, p, 1, p, p * p)
    s_short = s_short.masked_fill(self_short | ~key_short.view(1, oh, 1, ow, 1, p * p), float("-inf"))
    attn = torch.softmax(torch.cat([s_long, s_short], dim=-1), dim=-1)
    a_long, a_short = attn[..., : oh * ow], attn[..., oh * ow:]
    # back to the views' layouts and aggregate
    a_long = a_long.permute(0, 2, 4, 1, 3, 5).reshape(b, p, p, oh * ow, oh * ow)
    a_short = a_short.permute(0, 1, 3, 2, 4, 5).reshape(b, oh, ow, p * p, p * p)
    y_long = (a_long @ long_view(v)).view(b, p, p, oh, ow, c).permute(0, 5, 3, 1, 4, 2)
    y_short = (a_short @ short_view(v)).view(b, oh, ow, p, p, c).permute(0, 5, 1, 3, 2, 4)
    y = (y_long + y_short).reshape(b, c, H, W)
    return y[:, :, :h, :w]


def sampled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    k_s, inside = sample_neighbours(k, offsets)  # B, d, S, H, W
    v_s, _ = sample_neighbours(v, offsets)
    scores = (q.unsqueeze(2) * k_s).sum(1, keepdim=True).masked_fill(~inside, float("-inf"))
    return (torch.softmax(scores, dim=2) * v_s).sum(2)


def offsets(samples: int, radius: int, seed: int = 0) -> torch.Tensor:
    """The fixed (samples, 2) offsets of the ``sampled`` pattern (centre first)."""
    return draw_offsets(samples, radius, seed)


def reference_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax attention over an explicit (N, N) boolean mask of which key each query may meet:
    the slow, obvious definition every pattern above must equal (tests only)."""
    b, _, h, w = q.shape
    s = torch.einsum("bdn,bdm->bnm", q.flatten(2), k.flatten(2)).masked_fill(~allowed, float("-inf"))
    return torch.einsum("bnm,bcm->bcn", torch.softmax(s, -1), v.flatten(2)).reshape(b, v.shape[1], h, w)


def mask(pattern: str, h: int, w: int, window: int = 7, down_factor: int = 4,
         offsets: torch.Tensor | None = None) -> torch.Tensor:
    """(N, N) boolean: which pixel (row) meets which (column) under ``pattern``."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    y, x = yy.flatten(), xx.flatten()
    dy, dx = y[None, :] - y[:, None], x[None, :] - x[:, None]
    if pattern == "full":
        return torch.ones(h * w, h * w, dtype=torch.bool)
    if pattern == "criss_cross":
        return (dy == 0) | (dx == 0)
    if pattern == "local_window":
        return (dy.abs() <= window // 2) & (dx.abs() <= window // 2)
    if pattern == "interlaced":
        p = down_factor
        same_offset = ((y[:, None] % p) == (y[None, :] % p)) & ((x[:, None] % p) == (x[None, :] % p))
        same_block = ((y[:, None] // p) == (y[None, :] // p)) & ((x[:, None] // p) == (x[None, :] // p))
        return same_offset | same_block
    if pattern == "sampled":
        m = torch.zeros(h * w, h * w, dtype=torch.bool)
        for oy, ox in offsets.tolist():
            m |= (dy == oy) & (dx == ox)
        return m
    raise ValueError(f"unknown pattern {pattern!r}; valid: {', '.join(PATTERNS)}")
