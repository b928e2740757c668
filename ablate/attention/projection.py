"""The low-rank family's ``mapping`` slot: how pixels become K nodes.

Each mapping is a module whose ``forward(x)`` takes the block input x (B, C, H, W) and returns
``(V, A)``:

* ``V`` (B, C_s, K): the node features, in C_s "state" channels;
* ``A`` (B, K, N): the assignment of the N = H*W pixels to the K nodes, such that the
  reprojection of (possibly reasoned-over) node features V' is ``V' @ A`` (B, C_s, N).

They are meant to be plugged into :class:`~ablate.attention.glore.LowRankBlock` in place of
its built-in ``learned`` projection (that file is owned elsewhere and not edited here); the
attribute names of :class:`LearnedProjection` (``reduce``, ``project``) match LowRankBlock's
so state dicts carry over. Papers:

* ``learned``: GloRe (Chen et al., CVPR 2019, https://arxiv.org/abs/1811.12814; official code
  facebookresearch/GloRe, ``network/global_reasoning_unit.py``). A 1x1 conv gives each pixel K
  projection weights B, *no softmax*; ``V = X_s B^T``, divided by the pixel count N only with
  ``normalize=True`` (the official ``GloRe_Unit``'s option, off by default), ``A = B``: GloRe
  reprojects with the same B.
* ``em``: EMANet (Li et al., ICCV 2019, https://arxiv.org/abs/1907.13426; official code
  XiaLiPKU/EMANet). T EM iterations of K bases over the reduced features (see ``ema.py``):
  ``V = mu`` (unit-norm bases), ``A = z^T`` (responsibilities, each pixel's column sums to 1),
  so ``V @ A`` is EMANet's reconstruction mu z^T. In ``moving_average`` mode the iterations
  run without grad (as EMANet) and neither V nor A carries a gradient: the reduce conv is then
  trained by nothing, exactly as EMANet's input conv (its issue #14); ``bases: learned``
  differentiates everything.
* ``pooled``: nodes are the cells of an adaptive average pooling to sqrt(K) x sqrt(K)
  (APCNet's pooled region features, He et al., CVPR 2019; Beyond Grids' motivation of
  regions as vertices, Li & Gupta, NeurIPS 2018). ``V`` is the cell means; ``A`` is each
  pixel's membership of the cells it falls in (1 for the usual single cell; split evenly where
  adaptive pooling's cells overlap, so every pixel's column sums to 1): reprojection
  ``V @ A`` is "unpooling", every pixel receives its cell's (reasoned) feature. Not learned:
  K must be a perfect square.

Ours differs from LowRankBlock only where stated: the ``em`` and ``pooled`` projections use
the same reduce conv (C -> C_s, with bias) as ``learned``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ema import EMBases

MAPPINGS = ("learned", "em", "pooled")


class LearnedProjection(nn.Module):
    """GloRe's projection: V = X_s B^T (divided by N with ``normalize``), A = B (a softmax-free 1x1 conv)."""

    def __init__(self, channels: int, state: int, K: int, normalize: bool = False):
        super().__init__()
        self.K, self.state, self.normalize = K, state, normalize
        self.reduce = nn.Conv2d(channels, state, kernel_size=1)
        self.project = nn.Conv2d(channels, K, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs = self.reduce(x).flatten(2)  # B, C_s, N
        proj = self.project(x).flatten(2)  # B, K, N
        v = xs @ proj.transpose(1, 2)
        return (v / xs.shape[-1] if self.normalize else v), proj


class EMProjection(nn.Module):
    """EMANet's EM as a mapping: V = mu (B, C_s, K), A = z^T (B, K, N)."""

    def __init__(self, channels: int, state: int, K: int, T: int = 3, T_eval: int = 3,
                 momentum: float = 0.9, bases: str = "moving_average", gather: str = "em",
                 descriptor_norm: str = "l2"):
        super().__init__()
        self.K, self.state = K, state
        self.reduce = nn.Conv2d(channels, state, kernel_size=1)
        self.em = EMBases(state, K, T, T_eval, momentum, bases, gather, descriptor_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, z = self.em(self.reduce(x).flatten(2))
        return mu, z.transpose(1, 2)


def _cells(size: int, out: int) -> torch.Tensor:
    """(out, size) 0/1 membership of positions in adaptive-pooling cells (PyTorch's bins)."""
    m = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)  # floor, ceil
        m[i, start:end] = 1.0
    return m


def pooling_matrices(h: int, w: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, A)``, both (side*side, h*w): P averages pixels into cells (adaptive_avg_pool2d as a
    matrix), A is each pixel's membership of the cells, normalised so every column sums to 1."""
    mh, mw = _cells(h, side), _cells(w, side)
    pool = torch.kron(mh / mh.sum(1, keepdim=True), mw / mw.sum(1, keepdim=True))
    member = torch.kron(mh / mh.sum(0, keepdim=True), mw / mw.sum(0, keepdim=True))
    return pool, member


class PooledProjection(nn.Module):
    """Pooled nodes: adaptive average pooling of the reduced features to sqrt(K) x sqrt(K)."""

    def __init__(self, channels: int, state: int, K: int):
        super().__init__()
        side = math.isqrt(K)
        if side * side != K:
            raise ValueError(f"mapping 'pooled' needs K to be a perfect square (side x side cells), got {K}")
        self.K, self.state, self.side = K, state, side
        self.reduce = nn.Conv2d(channels, state, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        xs = self.reduce(x)
        v = F.adaptive_avg_pool2d(xs, self.side).flatten(2)  # B, C_s, K
        _, member = pooling_matrices(h, w, self.side)
        return v, member.to(device=x.device, dtype=xs.dtype).expand(b, -1, -1)


def make_projection(mapping: str, channels: int, state: int, K: int, **kwargs) -> nn.Module:
    """The projection module for ``mapping``; ``kwargs`` go to ``em`` (T, T_eval, momentum, bases,
    gather, descriptor_norm) or to ``learned`` (normalize)."""
    if mapping == "learned":
        if set(kwargs) - {"normalize"}:
            raise ValueError(f"mapping 'learned' takes only normalize, got {sorted(kwargs)}")
        return LearnedProjection(channels, state, K, **kwargs)
    if mapping == "em":
        return EMProjection(channels, state, K, **kwargs)
    if mapping != "pooled":
        raise ValueError(f"unknown mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")
    if kwargs:
        raise ValueError(f"mapping 'pooled' takes no options, got {sorted(kwargs)}")
    return PooledProjection(channels, state, K)
