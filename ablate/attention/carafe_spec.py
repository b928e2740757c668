"""The head's upsampler as a study names it (``model.head.upsample``: :data:`UPSAMPLERS`,
:class:`UpsampleSpec`, CARAFE's settings and their wording for ``ablate list``), how many x2 stages a
stride takes (:func:`stages_for`) and CARAFE's FLOPs (:func:`carafe_flops`).

Separate from :mod:`ablate.attention.carafe` (CARAFE itself, which imports torch) because a study checks
its head's upsampler when it loads, and loading a study (``load_study``, ``python -m
ablate.run.status``) imports no torch. :mod:`ablate.attention.carafe` re-exports these names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCALE = 2  # sigma: each stage doubles the side, as in the paper's segmentation and FPN uses
UPSAMPLERS = ("bilinear", "carafe")  # model.head.upsample
PAPER = "CARAFE: Content-Aware ReAssembly of FEatures (Wang et al., ICCV 2019)"
# what ``ablate list`` says of each upsampler, and of CARAFE's settings: (key, default, valid, meaning)
DESCRIPTIONS = {
    "bilinear": "the head's logits resized bilinearly to the input (the default)",
    "carafe": "content-aware reassembly: per output pixel, a kernel predicted from the features; x2 stages "
              "on the features, then the classifier",
}
SETTINGS = (
    ("k_up", 5, "an odd integer >= 1", "reassembly window k_up x k_up around the source pixel"),
    ("k_enc", 3, "an odd integer >= 1", "content encoder's kernel (predicts sigma^2 k_up^2 channels)"),
    ("compressed", 64, "an integer >= 1", "channels of the 1x1 compressor before the encoder"),
)


@dataclass(frozen=True)
class UpsampleSpec:
    """The head's upsampler: ``upsample`` (bilinear | carafe) and CARAFE's ``k_up``, ``k_enc``
    and ``compressed`` channels (used only by carafe)."""

    upsample: str = "bilinear"
    k_up: int = 5
    k_enc: int = 3
    compressed: int = 64

    @classmethod
    def of(cls, head) -> "UpsampleSpec":
        """The upsampler settings of a head record or dict (absent fields at their defaults)."""
        get = head.get if isinstance(head, dict) else (lambda name, default: getattr(head, name, default))
        return cls(**{name: get(name, getattr(cls, name)) for name in ("upsample", "k_up", "k_enc", "compressed")})

    def problem(self) -> tuple[str, str] | None:
        """(the setting, why) these settings cannot build; None: they can."""
        if self.upsample not in UPSAMPLERS:
            return "upsample", f"unknown upsampler {self.upsample!r}; valid: {', '.join(UPSAMPLERS)}"
        if self.k_up < 1 or self.k_up % 2 == 0:
            return "k_up", f"k_up must be an odd number >= 1 (the reassembly window is centred), got {self.k_up}"
        if self.k_enc < 1 or self.k_enc % 2 == 0:
            return "k_enc", f"k_enc must be an odd number >= 1 (the encoder keeps the map's size), got {self.k_enc}"
        if self.compressed < 1:
            return "compressed", f"compressed must be >= 1, got {self.compressed}"
        return None


def stages_for(stride: int) -> int:
    """How many sigma = 2 stages bring features at output stride ``stride`` to the input's."""
    n = round(math.log2(stride)) if stride >= 1 else -1
    if n < 1 or SCALE ** n != stride:
        raise ValueError(f"upsample: carafe needs a backbone whose output stride is a power of 2 (>= 2), "
                         f"got stride {stride}")
    return n


def carafe_flops(channels: int, h: int, w: int, stages: int, k_up: int = 5, k_enc: int = 3,
                 compressed: int = 64) -> int:
    """Multiply-adds x 2 of one image's forward through ``stages`` x2 stages from an h x w map:
    per stage the compressor (C C_m per source pixel), the encoder (k_enc^2 C_m sigma^2 k_up^2
    per source pixel) and the reassembly (k_up^2 C per output pixel); the softmax, pixel shuffle
    and biases are not counted (as FlopCounterMode does not)."""
    total = 0
    for _ in range(stages):
        src, out = h * w, h * w * SCALE ** 2
        total += 2 * (src * channels * compressed + src * k_enc ** 2 * compressed * SCALE ** 2 * k_up ** 2
                      + out * k_up ** 2 * channels)
        h, w = h * SCALE, w * SCALE
    return total


__all__ = ["DESCRIPTIONS", "PAPER", "SCALE", "SETTINGS", "UPSAMPLERS", "UpsampleSpec", "carafe_flops", "stages_for"]
