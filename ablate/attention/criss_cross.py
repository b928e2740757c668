"""CCNet: recurrent criss-cross attention.

Paper: *CCNet: Criss-Cross Attention for Semantic Segmentation*, Zilong Huang, Xinggang Wang,
Lichao Huang, Chang Huang, Yunchao Wei, Wenyu Liu, ICCV 2019, https://arxiv.org/abs/1811.11721.
Official code consulted: speedinghzl/CCNet (``CrissCrossAttention`` in ``cc_attention``, the
pure-PyTorch version that replaced the CUDA op); mmcv's ``ops.CrissCrossAttention`` (same
formulation) used by mmsegmentation's ``CCHead``.

What the paper does
-------------------
Each pixel ``u`` attends only to the pixels in its own row and column: H + W - 1 pixels, the
centre counted once. Query and key are 1x1 convs to C/8 channels, value a 1x1 conv to C; the
scores ``q_u . k_v`` (no 1/sqrt(d)) over the criss-cross band go through one softmax and weight
the values; ``y = gamma * out + x`` with a learnable scalar ``gamma`` initialised to 0. The
official code builds the column scores and the row scores separately and puts ``-inf`` on the
centre of the *column* part so the centre is counted once (in the row part). Applying the
module ``R`` times (recurrence, default R = 2, **the same weights** each time) lets every pixel
reach every other pixel in two hops.

Ours
----
:func:`criss_cross_reference` (in ``ablate_kernels.reference``, re-exported here) is the band
computation in pure PyTorch; it never builds the N x N matrix, only the ``B x H x W x (H + W)``
band scores, and is the reference the Triton kernel ``ablate_kernels.criss_cross`` is checked
against; the module runs the kernel on CUDA and the reference elsewhere (``ABLATE_KERNELS``
forces either). :class:`CrissCrossAttention` is one module and :class:`CCNetBlock` re-applies
it ``R`` times. Like the official module the block includes its
own zero-init-gamma residual, so it is the identity at initialisation. The conv-BN-ReLU layers
the CCNet head puts before and after the recurrence belong to the head, not the block.
"""
from __future__ import annotations

import torch
from torch import nn

from ablate_kernels.reference import criss_cross_reference  # noqa: F401 (the reference, re-exported)

from . import maps
from .layers import QueryKeyValue
from ..config.vocab import integer


class CrissCrossAttention(QueryKeyValue):
    """One criss-cross module: q/k at C/qk_reduction, v at C, zero-init gamma, residual."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ablate_kernels.criss_cross import criss_cross_attention  # Triton on CUDA, the reference elsewhere

        q, k = self.query(x), self.key(x)
        if maps.active():  # the band softmax as one map: the query's row and column (the kernel never holds it)
            with torch.no_grad():
                from .patterns import mask

                h, w = q.shape[-2:]
                s = torch.einsum("bdn,bdm->bnm", q.flatten(2), k.flatten(2))
                maps.record("affinity", maps.masked_softmax(s, mask("criss_cross", h, w).to(q.device)), grid=(h, w))
        out = criss_cross_attention(q, k, self.value(x))
        return x + self.gamma * out


class CCNetBlock(nn.Module):
    """Recurrent criss-cross attention: the same module applied ``R`` times."""

    FACTORS = (
        integer("R", 1, "recurrences of the same criss-cross module (paper: 2)"),
        integer("qk_reduction", 1, "query/key width C/qk_reduction (paper: 8)"),
    )

    def __init__(self, channels: int, R: int = 2, qk_reduction: int = 8):
        super().__init__()
        if R < 1:
            raise ValueError(f"R (recurrences) must be >= 1, got {R}")
        self.channels, self.R = channels, R
        self.cca = CrissCrossAttention(channels, qk_reduction)
        self.widths = {"qk": self.cca.query.out_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.R):
            x = self.cca(x)
        return x
