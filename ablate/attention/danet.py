"""DANet: position attention (PAM) and channel attention (CAM).

Paper: *Dual Attention Network for Scene Segmentation*, Jun Fu, Jing Liu, Haijie Tian, Yong Li,
Yongjun Bao, Zhiwei Fang, Hanqing Lu, CVPR 2019, https://arxiv.org/abs/1809.02983.
Official code consulted: junfu1115/DANet (``PAM_Module`` / ``CAM_Module``); mmsegmentation's
``DAHead`` (``PAM``, ``CAM``), which ports it.

What the paper does
-------------------
* **PAM** (position attention): query and key are 1x1 convs to C/8 channels, value a 1x1 conv
  to C channels; ``S = softmax_j(q_i . k_j)`` over all N = H*W positions (no 1/sqrt(d)); the
  output ``E = gamma * (V S^T) + X`` with a learnable scalar ``gamma`` initialised to 0.
* **CAM** (channel attention): no transforms; the C x C channel affinity ``X X^T`` is
  turned into ``softmax(max_row(X X^T) - X X^T)`` -- the official code's "max-minus" trick
  (mathematically ``softmax(-X X^T)``, the max only keeps the exponent bounded), so a channel
  attends most to the channels it is *least* correlated with. ``E = gamma * (A X) + X``,
  ``gamma`` initialised to 0.
* The DANet head runs each module on its own branch (3x3 conv-BN-ReLU before and after each)
  and **sums** the two branches before the classifier.

Ours
----
``DANetBlock(channels, branch=...)`` with ``branch`` in {both, position, channel}. The 3x3
conv-BN-ReLU layers around each module belong to the DANet *head* (the segmenter supplies its
own head convs), so the block is the two attention modules themselves. With ``both`` the two
attention terms are summed onto one residual: ``y = x + gamma_p * PAM_term + gamma_c * CAM_term``
(= ``PAM(x) + CAM(x) - x``). This is the paper's sum of the two module outputs up to a
rescaling of the learnable gammas (``(PAM(x) + CAM(x)) / 2`` is the same function family), and
it keeps the block exactly the identity at initialisation, as each module alone is.
``cam_max_minus=False`` switches the CAM to a plain ``softmax(X X^T)`` (an ablation, not the
paper). ``qk_reduction`` is the PAM's C/8.
"""
from __future__ import annotations

import torch
from torch import nn

from . import maps
from .layers import QueryKeyValue
from ..config.vocab import choice, integer, switch


class PositionAttention(QueryKeyValue):
    """PAM: softmax(q_i . k_j) over all positions, q/k at C/qk_reduction, zero-init gamma."""

    def term(self, x: torch.Tensor) -> torch.Tensor:
        """The attention term before gamma and the residual: (B, C, H, W)."""
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # B, N, d
        k = self.key(x).flatten(2)  # B, d, N
        attn = torch.softmax(q @ k, dim=-1)  # B, N(query), N(key)
        maps.record("position", attn, grid=(h, w))
        v = self.value(x).flatten(2)  # B, C, N
        return (v @ attn.transpose(1, 2)).view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.term(x)


class ChannelAttention(nn.Module):
    """CAM: C x C affinity with the official max-minus trick, zero-init gamma."""

    def __init__(self, max_minus: bool = True):
        super().__init__()
        self.max_minus = max_minus
        self.gamma = nn.Parameter(torch.zeros(1))

    def term(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = x.flatten(2)  # B, C, N
        energy = f @ f.transpose(1, 2)  # B, C, C
        if self.max_minus:
            energy = energy.amax(dim=-1, keepdim=True) - energy
        attn = torch.softmax(energy, dim=-1)
        maps.record("channel", attn, kind="channel_matrix")
        return (attn @ f).view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.term(x)


class DANetBlock(nn.Module):
    """PAM and/or CAM on one residual; ``branch`` picks which."""

    FACTORS = (
        choice("branch", ("both", "position", "channel"),
               "position attention (PAM), channel attention (CAM) or both summed"),
        integer("qk_reduction", 1, "PAM query/key width C/qk_reduction (paper: 8)"),
        switch("cam_max_minus", "CAM softmax(max - X X^T) as the official code (off: softmax(X X^T))"),
    )

    def __init__(self, channels: int, branch: str = "both", qk_reduction: int = 8, cam_max_minus: bool = True):
        super().__init__()
        if branch not in ("both", "position", "channel"):
            raise ValueError(f"branch must be 'both', 'position' or 'channel', got {branch!r}")
        self.channels, self.branch = channels, branch
        self.pam = PositionAttention(channels, qk_reduction) if branch in ("both", "position") else None
        self.cam = ChannelAttention(cam_max_minus) if branch in ("both", "channel") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.pam is not None:
            y = y + self.pam.gamma * self.pam.term(x)
        if self.cam is not None:
            y = y + self.cam.gamma * self.cam.term(x)
        return y
