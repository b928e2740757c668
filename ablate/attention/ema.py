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
by backprop, never averaged, and the iterations run with autograd.

``refit``: the no-iteration control of ``T`` (not in the paper). T adds no parameters, so a
parameter-matched control of it is free; what T changes is that the bases the output is built
from are re-estimated on each image, T times. With ``refit: off`` the EM iterations still run
exactly as with ``refit: on`` (the same T steps, and in ``moving_average`` mode the same update
of the moving average, so the dataset-level bases mu0 are learned by the same rule), but the
output is built from mu0 itself and its own E-step, ``x_hat = mu0 softmax_K(x^T mu0)^T``, with
no gradient in ``moving_average`` mode as in EMANet. Its output is the same for every T and
T_eval: against it, a cell says what re-estimating the bases on the image adds to a dictionary
of bases trained the same way. T = 1 is not that control: its output already uses bases
re-estimated once on the image (mu^(1), with z from mu0). With ``bases: learned`` the iterations
cannot reach the output at all, so they are skipped; mu0 is then learned by backprop directly.

A2Net switches. With ``T = 1`` and learned bases the unit computes what an A2Net block in
one configuration computes (``a2net.a2_from_ema``), in value *and* in gradient; with
moving-average bases only in value, since EMANet's iterations carry no gradient. Five more
factors, each at EMANet's value by default, walk from there to A2Net's paper form one switch
at a time (``ablate/attention/a2net.py`` gives the exact correspondence):

* ``gather``: ``em`` (EMANet: the M-step pools with ``z`` softmax-normalised over K, then
  L1-normalised over the pixels) or ``softmax`` (A2Net: the same logits ``x^T mu``
  softmax-normalised over the pixels);
* ``shared_maps``: on (EMANet: the E-step responsibilities both gather and distribute) or
  off (A2Net's separate distribution map: the reconstruction weights are
  ``softmax_K(x^T nu)`` with a second set of learned bases ``nu``; the iterations still use
  mu). Off means ``nu`` is trained by backprop in either bases mode, so with moving-average
  bases the input conv then receives gradient through the distribution weights;
* ``descriptor_norm``: ``l2`` (EMANet's L2 normalisation of the bases after each M-step) or
  ``none``;
* ``out_relu``: on (EMANet's ReLU on the reconstruction and after the residual) or off;
* ``reduction``: the input conv maps C to m = C/reduction channels and the output conv back
  (EMANet: 1; A2Net's descriptors are narrower than the input).

Where ours differs: plain ``BatchNorm2d`` instead of the official synchronised BN with
momentum 3e-4 (a training-loop setting); the official conv init (normal with std
sqrt(2 / (k*k*out_channels)), i.e. Kaiming fan-out; the input conv's bias keeps PyTorch's
default, as the official ``EMAU``, XiaLiPKU/EMANet ``network.py``, does) is kept.

``em_step`` and ``em_iterations`` are plain functions; they live beside the fused Triton kernel
they define (``ablate_kernels.reference``, re-exported here). The moving-average (no-grad)
iterations run the kernel ``ablate_kernels.em`` on CUDA and the reference elsewhere
(``ABLATE_KERNELS`` forces either). The kernel implements EMANet's M-step only (``gather: em``,
``descriptor_norm: l2``): other values, and learned bases, take the differentiable reference.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ablate_kernels.reference import EPS, em_iterations, em_step, l1_over, l2_normalise  # noqa: F401

from . import maps
from ..config.vocab import choice, integer, nodes, number, reduction, switch

GATHERS = ("em", "softmax")
NORMS = ("l2", "none")


def init_bases(channels: int, K: int) -> torch.Tensor:
    """(1, C, K) bases from N(0, sqrt(2/K)), L2-normalised over channels (official init)."""
    mu = torch.empty(1, channels, K).normal_(0.0, math.sqrt(2.0 / K))
    return l2_normalise(mu, dim=1)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}, got {value!r}")
    return value


class EMBases(nn.Module):
    """The bases and their EM iterations; shared by :class:`EMABlock` and the ``em`` mapping.

    ``forward(x)`` with x (B, C, N) returns ``(mu, z)``: the final bases (B, C, K) and
    responsibilities (B, N, K). In ``moving_average`` mode the iterations run without grad and
    the buffer ``mu`` follows the moving average in train mode; in ``learned`` mode ``mu`` is a
    parameter and the iterations are differentiated. ``gather`` and ``descriptor_norm`` are
    :func:`em_step`'s.
    """

    def __init__(self, channels: int, K: int = 64, T: int = 3, T_eval: int = 3,
                 momentum: float = 0.9, bases: str = "moving_average", gather: str = "em",
                 descriptor_norm: str = "l2", refit: bool = True):
        super().__init__()
        if T < 1 or T_eval < 1:
            raise ValueError(f"T and T_eval must be >= 1, got T={T}, T_eval={T_eval}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        _choice("bases", bases, ("moving_average", "learned"))
        self.gather, self.descriptor_norm = _choice("gather", gather, GATHERS), _choice(
            "descriptor_norm", descriptor_norm, NORMS)
        self.K, self.T, self.T_eval, self.momentum, self.bases = K, T, T_eval, momentum, bases
        self.refit = refit
        mu = init_bases(channels, K)
        if bases == "learned":
            self.mu = nn.Parameter(mu)
        else:
            self.register_buffer("mu", mu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.T if self.training else self.T_eval
        mu0 = self.mu.expand(x.shape[0], -1, -1).to(x.dtype)
        if self.bases == "learned":
            if not self.refit:  # the control: mu0 and its E-step; the iterations could not reach the output
                return mu0, torch.softmax(x.transpose(1, 2) @ mu0, dim=2)
            return em_iterations(x, mu0, steps, self.gather, self.descriptor_norm)
        from ablate_kernels.em import em_attention_iterations  # fused Triton step on CUDA, em_iterations elsewhere

        with torch.no_grad():
            if not self.refit:  # the control's output, taken before the moving average moves mu0
                mu0 = mu0.clone()
                z0 = torch.softmax(x.transpose(1, 2) @ mu0, dim=2)
            mu, z = em_attention_iterations(x, mu0, steps, gather=self.gather,
                                            descriptor_norm=self.descriptor_norm)
            if self.training:
                # Official train.py: mu0 <- m * mu0 + (1 - m) * mean over the batch; no re-normalisation.
                self.mu.mul_(self.momentum).add_(mu.mean(dim=0, keepdim=True).to(self.mu.dtype),
                                                 alpha=1.0 - self.momentum)
        return (mu, z) if self.refit else (mu0, z0)

    def extra_repr(self) -> str:
        return (f"K={self.K}, T={self.T}, T_eval={self.T_eval}, momentum={self.momentum}, bases={self.bases}, "
                f"gather={self.gather}, descriptor_norm={self.descriptor_norm}"
                + ("" if self.refit else ", refit=False"))


class EMABlock(nn.Module):
    """EMANet's EMA unit: conv in, EM bases, reconstruction, ReLU, conv + BN, residual, ReLU.

    The last five arguments are the A2Net switches of the module docstring, at EMANet's values.
    """

    FACTORS = (
        nodes("number of bases (paper: 64)"),
        integer("T", 1, "EM iterations in training (paper: 3)"),
        integer("T_eval", 1, "EM iterations in evaluation", evaluation=True),
        number("momentum", 0.0, "moving average of the bases, in [0, 1] (paper: 0.9)"),
        choice("bases", ("moving_average", "learned"),
               "no-grad EM + moving average (paper), or bases learned by backprop through the EM"),
        # A2Net's five switches (a2net.py): at EMANet's values by default, rebuilding the block as before.
        choice("gather", GATHERS, "M-step pooling: softmax over K then L1 over positions (paper), or A2Net's "
               "softmax over positions", added=True),
        switch("shared_maps", "the responsibilities gather and distribute (paper); off: A2Net's separate "
               "distribution map", added=True),
        choice("descriptor_norm", NORMS, "L2-normalise the bases after each M-step (paper), or not (A2Net)",
               added=True),
        switch("out_relu", "ReLU on the reconstruction and after the residual (paper); off: A2Net's plain "
               "residual", added=True),
        reduction("bases width m = C/reduction (paper: 1; A2Net's descriptors are narrower)", added=True),
        switch("refit", "the output uses the bases re-estimated on the image by the T EM steps (paper); off: "
               "the no-iteration control, the dataset-level bases mu0 and one E-step", added=True),
    )

    def __init__(self, channels: int, K: int = 64, T: int = 3, T_eval: int = 3,
                 momentum: float = 0.9, bases: str = "moving_average", gather: str = "em",
                 shared_maps: bool = True, descriptor_norm: str = "l2", out_relu: bool = True,
                 reduction: int = 1, refit: bool = True):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        width = max(1, channels // reduction)
        self.channels, self.width, self.reduction = channels, width, reduction
        self.shared_maps, self.out_relu = shared_maps, out_relu
        self.conv_in = nn.Conv2d(channels, width, kernel_size=1)
        self.em = EMBases(width, K, T, T_eval, momentum, bases, gather, descriptor_norm, refit)
        if not shared_maps:  # A2Net's separate distribution map: its own learned bases
            self.distribute = nn.Parameter(init_bases(width, K))
        self.conv_out = nn.Conv2d(width, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        for conv in (self.conv_in, self.conv_out):  # official init: normal(0, sqrt(2 / (k*k*out)))
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_hat, mu, z)``: the reconstruction mu z^T (B, m, N), the bases and the distribution
        weights (the E-step responsibilities, or softmax_K(x^T nu) with separate maps)."""
        feats = self.conv_in(x).flatten(2)  # B, m, N
        mu, z = self.em(feats)
        if not self.shared_maps:
            z = torch.softmax(feats.transpose(1, 2) @ self.distribute.to(feats.dtype), dim=2)
        maps.record("responsibilities", z.transpose(1, 2), kind="maps", grid=x.shape[-2:])
        return mu @ z.transpose(1, 2), mu, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat, _, _ = self.reconstruct(x)
        y = x_hat.reshape(x.shape[0], self.width, *x.shape[2:])
        if self.out_relu:
            y = torch.relu(y)
        out = x + self.norm(self.conv_out(y))
        return torch.relu(out) if self.out_relu else out
