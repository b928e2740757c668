"""Backbones. ``small_cnn`` is the embedded default for the synthetic task.

Its receptive field is deliberately narrow (9 x 9 input pixels): conv3x3 at stride 1, conv3x3
at stride 2, then ``depth - 2`` conv3x3 at stride 2 widen it by 4 pixels each. With the
default ``depth=3`` a pixel's features cannot see the synthetic task's cue, so any long-range
ability must come from the attention block under study.

A study's ``model.backbone`` builds it through :func:`ablate.models.pretext.build_small_cnn`:
``init: scratch`` (the default) is exactly ``SmallCNN(...)`` from the trial's backbone seed stream;
``init: pretrained_synthetic`` builds the same module, then loads the weights of the synthetic
pretext (trained once and cached); ``freeze: true`` (:meth:`SmallCNN.freeze`) stops its weights'
gradients and keeps its BatchNorm in eval mode whatever ``train()`` asks, so neither its weights
nor its statistics move in training.
"""
from __future__ import annotations

from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Output stride 2, ``width`` channels, receptive field 1 + 2 + 2 + 4 (depth - 2)."""

    stride = 2

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 3):
        super().__init__()
        layers = [conv_bn_relu(in_channels, width), conv_bn_relu(width, width, stride=2)]
        layers += [conv_bn_relu(width, width) for _ in range(depth - 2)]
        self.body = nn.Sequential(*layers)
        self.out_channels = width
        self.receptive_field = 1 + 2 + 2 + 4 * (depth - 2)

    frozen = False
    init = "scratch"
    pretext_key = None  # the pretext checkpoint's key when its weights were loaded

    def forward(self, x):
        return self.body(x)

    def freeze(self) -> "SmallCNN":
        """No gradients for its parameters, BatchNorm statistics fixed (eval mode from now on)."""
        self.frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "SmallCNN":
        return super().train(mode and not self.frozen)
