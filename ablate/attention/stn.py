"""STN: the spatial transformer, an affine resampling predicted from the features (gating family).

Spatial Transformer Networks, Max Jaderberg, Karen Simonyan, Andrew Zisserman, Koray
Kavukcuoglu, NeurIPS 2015, https://arxiv.org/abs/1506.02025 (no official code released; the
PyTorch ``affine_grid``/``grid_sample`` pair is the paper's grid generator and bilinear
sampler). A localisation network regresses the 6 parameters of an affine transform theta; its
final layer is zero-initialised with the identity as bias (the paper initialises to the
identity transform), so the block starts as the identity; the feature map is resampled
bilinearly on the transformed grid (zeros outside). Residual-free, as in the paper. The
paper's localisation nets are task-specific; ours is conv3x3 (C -> C/4, at least 8) + ReLU,
conv3x3 + ReLU, adaptive average pool to 4x4, FC -> 32, ReLU, FC -> 6. Only the affine
transform is implemented (the paper also uses projective and thin-plate-spline ones).
``align_corners=False`` in both grid functions so that the identity theta samples exactly the
pixel centres.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps


class STNBlock(nn.Module):
    """Spatial transformer: a localisation net predicts an affine theta; resample the features."""

    FACTORS = ()

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(8, channels // 4)
        self.localisation = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(hidden * 16, 32), nn.ReLU(inplace=True),
            nn.Linear(32, 6),
        )
        last = self.localisation[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3) affine transforms (output grid -> input coordinates, in [-1, 1] units)."""
        return self.localisation(x).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x)
        maps.record("theta", theta, kind="affine", grid=x.shape[-2:])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
