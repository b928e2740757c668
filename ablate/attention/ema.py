"""Expectation-Maximization Attention (EMANet): low-rank family, mapping ``em``.

Expectation-Maximization Attention Networks for Semantic Segmentation, Xia Li, Zhisheng
Zhong, Jianlong Wu, Yibo Yang, Zhouchen Lin, Hong Liu, ICCV 2019 (oral),
https://arxiv.org/abs/1907.13426. Official code consulted: XiaLiPKU/EMANet (``network.py``
``EMAU``; ``train.py`` ``train_batch`` for the moving average; ``settings.py`` for
``EM_MOM = 0.9`` and ``STAGE_NUM = 3``) and the maintainer's answers in its issues #5 and #14;
mmsegmentation's ``EMAModule`` as a second reading.

What the paper does. A 1x1 conv maps the input X to x (C x N). K bases mu (C x K) are
iterated T times:

* E-step: ``z = softmax_K(x^T mu)`` (N x K; responsibilities of the K bases for each pixel;
  the paper writes a kernel with a temperature lambda, the official code uses the plain dot
  product, lambda = 1, as we do);
* M-step: ``mu = x z_`` with ``z_ = z / (1e-6 + sum_N z)`` (each column of z L1-normalised
  over the pixels, so mu_k is the z-weighted mean of the pixels), then each base is
  L2-normalised over channels, ``mu / (1e-6 + ||mu||)`` (the paper's choice for keeping
  the bases' scale fixed across iterations).

The iterations run under ``torch.no_grad`` (official code; issue #5: "I simply cut off the
gradients for the A_E and A_M iterations"). The reconstruction ``x_hat = mu z^T`` is written
outside ``no_grad`` as in the official code, but since both mu and z come out of the
no-grad loop it carries no gradient: **the input 1x1 conv receives no gradient at all in the
official unit**. Issue #14 confirms this is deliberate (the author found it slightly better
and says the conv only maps the post-ReLU input from R+ to R). We keep that behaviour (the
moving-average mode below); ``bases: learned`` is the variant in which everything, the
iterations included, is differentiated.

Then ``ReLU -> 1x1 conv -> BN -> + X -> ReLU`` (the official unit ends with a ReLU after
the residual). The initial bases mu^(0) are a buffer initialised from N(0, sqrt(2/K)) and
L2-normalised over channels; during training they follow a moving average of the batch mean
of the final bases, ``mu0 <- momentum * mu0 + (1 - momentum) * mean_B(mu^(T))`` with
momentum 0.9. The official code does this in ``train.py`` after the forward (so that it can
average over all GPUs) and does **not** re-normalise the averaged bases; mmsegmentation
re-normalises the batch mean before averaging. We follow the official code and do the update
inside ``forward`` in train mode (no update in eval mode); under DDP each replica updates its
own buffer and DDP's buffer broadcast keeps rank 0's.

Slots and factors: ``K`` (64 in the paper), ``T`` (3 for training), ``T_eval`` (the paper
studies T at inference separately; default 3 = the official setting), ``momentum`` (0.9),
``bases``: ``moving_average`` (EMANet) or ``learned``: mu is an ``nn.Parameter`` updated
by backprop, never averaged, and the iterations run with autograd. With ``T = 1`` and
learned bases the unit is A2Net's double attention in a particular configuration; see
``ablate/attention/a2net.py`` for the exact mapping and ``a2net.a2_from_ema``.

Where ours differs: plain ``BatchNorm2d`` instead of the official synchronised BN with
momentum 3e-4 (a training-loop setting); the official conv init (normal with std
sqrt(2 / (k*k*out_channels)), i.e. Kaiming fan-out) is kept.

``em_step`` and ``em_iterations`` are plain functions, the reference the fused Triton kernel
``ablate_kernels.em`` is checked against; the moving-average (no-grad) iterations run the kernel
on CUDA and the reference elsewhere (``ABLATE_KERNELS`` forces either). Learned bases keep the
differentiable reference.
"""
from __future__ import annotations

import math

import torch
from torch import nn

EPS = 1e-6  # the official code's epsilon, both for the L1 over N and the L2 over C


def l2_normalise(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t / (1e-6 + ||t||)`` along ``dim`` (EMANet's ``_l2norm``)."""
    return t / (EPS + t.norm(dim=dim, keepdim=True))


def l1_over(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t / (1e-6 + sum t)`` along ``dim`` (EMANet's normalisation of z over the pixels)."""
    return t / (EPS + t.sum(dim=dim, keepdim=True))


def em_step(x: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One EM iteration. ``x``: (B, C, N) features, ``mu``: (B, C, K) bases.

    Returns ``(mu_new, z)``: mu_new (B, C, K) with unit-norm columns, and the E-step
    responsibilities z (B, N, K), a softmax over K for every pixel.
    """
    z = torch.softmax(x.transpose(1, 2) @ mu, dim=2)  # E-step: B, N, K
    mu = l2_normalise(x @ l1_over(z, dim=1), dim=1)  # M-step: B, C, K
    return mu, z


def em_iterations(x: torch.Tensor, mu: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``T >= 1`` EM iterations from ``mu``; returns the last ``(mu, z)`` (no grad handling here)."""
    if T < 1:
        raise ValueError(f"EM needs T >= 1 iterations, got {T}")
    z = None
    for _ in range(T):
        mu, z = em_step(x, mu)
    return mu, z


def init_bases(channels: int, K: int) -> torch.Tensor:
    """(1, C, K) bases from N(0, sqrt(2/K)), L2-normalised over channels (official init)."""
    mu = torch.empty(1, channels, K).normal_(0.0, math.sqrt(2.0 / K))
    return l2_normalise(mu, dim=1)


class EMBases(nn.Module):
    """The bases and their EM iterations; shared by :class:`EMABlock` and the ``em`` mapping.

    ``forward(x)`` with x (B, C, N) returns ``(mu, z)``: the final bases (B, C, K) and
    responsibilities (B, N, K). In ``moving_average`` mode the iterations run without grad and
    the buffer ``mu`` follows the moving average in train mode; in ``learned`` mode ``mu`` is a
    parameter and the iterations are differentiated.
    """

    def __init__(self, channels: int, K: int = 64, T: int = 3, T_eval: int = 3,
                 momentum: float = 0.9, bases: str = "moving_average"):
        super().__init__()
        if T < 1 or T_eval < 1:
            raise ValueError(f"T and T_eval must be >= 1, got T={T}, T_eval={T_eval}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if bases not in ("moving_average", "learned"):
            raise ValueError(f"bases must be 'moving_average' or 'learned', got {bases!r}")
        self.K, self.T, self.T_eval, self.momentum, self.bases = K, T, T_eval, momentum, bases
        mu = init_bases(channels, K)
        if bases == "learned":
            self.mu = nn.Parameter(mu)
        else:
            self.register_buffer("mu", mu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.T if self.training else self.T_eval
        mu0 = self.mu.expand(x.shape[0], -1, -1).to(x.dtype)
        if self.bases == "learned":
            return em_iterations(x, mu0, steps)
        from ablate_kernels.em import em_attention_iterations  # fused Triton step on CUDA, em_iterations elsewhere

        with torch.no_grad():
            mu, z = em_attention_iterations(x, mu0, steps)
            if self.training:
                # Official train.py: mu0 <- m * mu0 + (1 - m) * mean over the batch; no re-normalisation.
                self.mu.mul_(self.momentum).add_(mu.mean(dim=0, keepdim=True).to(self.mu.dtype),
                                                 alpha=1.0 - self.momentum)
        return mu, z

    def extra_repr(self) -> str:
        return f"K={self.K}, T={self.T}, T_eval={self.T_eval}, momentum={self.momentum}, bases={self.bases}"


class EMABlock(nn.Module):
    """EMANet's EMA unit: conv in, EM bases, reconstruction, ReLU, conv + BN, residual, ReLU."""

    def __init__(self, channels: int, K: int = 64, T: int = 3, T_eval: int = 3,
                 momentum: float = 0.9, bases: str = "moving_average"):
        super().__init__()
        self.channels = channels
        self.conv_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.em = EMBases(channels, K, T, T_eval, momentum, bases)
        self.conv_out = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        for conv in (self.conv_in, self.conv_out):  # official init: normal(0, sqrt(2 / (k*k*out)))
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_hat, mu, z)``: the reconstruction mu z^T (B, C, N), the bases and responsibilities."""
        feats = self.conv_in(x).flatten(2)  # B, C, N
        mu, z = self.em(feats)
        return mu @ z.transpose(1, 2), mu, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat, _, _ = self.reconstruct(x)
        y = torch.relu(x_hat).reshape_as(x)
        return torch.relu(x + self.norm(self.conv_out(y)))
