"""A study's ``eval:`` mapping: the test-time evaluation it asks for (:class:`EvalSpec`) and its
parser (:func:`parse_eval`). What each mode computes is in :mod:`ablate.models.inference`."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import StudyError, brief

MODES = ("whole", "slide")
EVAL_KEYS = ("mode", "crop", "stride", "scales", "flip")
PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # mmseg's img_ratios for VOC, ADE20K, Cityscapes


@dataclass(frozen=True)
class EvalSpec:
    """A parsed ``eval:`` mapping; the defaults are whole-image, single-scale, no flip."""

    mode: str = "whole"
    crop: tuple | None = None
    stride: tuple | None = None
    scales: tuple = (1.0,)
    flip: bool = False

    @property
    def augmented(self) -> bool:
        return self.flip or tuple(self.scales) != (1.0,)

    def describe(self) -> str:
        """One phrase for a report line, e.g. ``slide 512x512 stride 341x341, scales 0.5-1.75 + flip``."""
        text = "whole image" if self.mode == "whole" else \
            f"slide {self.crop[0]}x{self.crop[1]} stride {self.stride[0]}x{self.stride[1]}"
        if tuple(self.scales) != (1.0,):
            text += ", scales " + ", ".join(f"{s:g}" for s in self.scales)
        return text + (" + flip" if self.flip else "")

    def as_dict(self) -> dict:
        return {"mode": self.mode, "crop": list(self.crop) if self.crop else None,
                "stride": list(self.stride) if self.stride else None, "scales": list(self.scales), "flip": self.flip}

    @classmethod
    def from_dict(cls, d: dict | EvalSpec | None) -> EvalSpec:
        """:meth:`as_dict`'s dict back (lists as tuples, so that the round trip compares equal);
        None (a config without ``eval``) is the default."""
        if d is None or isinstance(d, EvalSpec):
            return d or cls()
        pair = lambda v: None if v is None else (int(v[0]), int(v[1]))  # noqa: E731
        return cls(d.get("mode", cls.mode), pair(d.get("crop")), pair(d.get("stride")),
                   tuple(float(s) for s in d.get("scales", cls.scales)), bool(d.get("flip", cls.flip)))


def _int_pair(value, where: str, key: str) -> tuple[int, int]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise StudyError(where, key, f"expected [height, width], two positive integers, e.g. [512, 512]; got "
                         f"{brief(value)}.")
    return int(value[0]), int(value[1])


def _scales(value, where: str, key: str) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and 0 < len(value) <= 32 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 8 for v in value)
    if not ok:
        raise StudyError(where, key, f"expected a non-empty list of resize ratios in (0, 8], e.g. "
                         f"{list(PAPER_SCALES)}; got {brief(value)}.")
    if len(set(value)) != len(value):
        raise StudyError(where, key, f"lists a ratio twice: {brief(value)}; give each scale once.")
    return tuple(float(v) for v in value)


def parse_eval(raw, where: str, prefix: str = "eval.") -> EvalSpec:
    """A study's ``eval:`` mapping (None: the defaults) -> :class:`EvalSpec`; a bad key or value
    raises :class:`StudyError` naming the file ``where`` and the key."""
    if raw is None:
        return EvalSpec()
    if not isinstance(raw, dict):
        raise StudyError(where, prefix.rstrip("."), f"expected a mapping with keys {', '.join(EVAL_KEYS)}; "
                         f"got {brief(raw)}.")
    for k in raw:
        if k not in EVAL_KEYS:
            raise StudyError(where, f"{prefix}{k}", f"unknown key; valid keys are {', '.join(EVAL_KEYS)}.")
    mode = raw.get("mode", "whole")
    if mode not in MODES:
        raise StudyError(where, prefix + "mode", f"expected whole or slide, got {brief(mode)}.")
    crop = stride = None
    if mode == "slide":
        for k in ("crop", "stride"):
            if k not in raw:
                raise StudyError(where, prefix + k, "missing: mode slide needs crop and stride ([height, width] "
                                 "each), e.g. crop: [512, 512], stride: [341, 341].")
        crop = _int_pair(raw["crop"], where, prefix + "crop")
        stride = _int_pair(raw["stride"], where, prefix + "stride")
        if stride[0] > crop[0] or stride[1] > crop[1]:
            raise StudyError(where, prefix + "stride", f"{list(stride)} is larger than the crop {list(crop)}: "
                             "windows would leave pixels unseen; give a stride no larger than the crop.")
    else:
        for k in ("crop", "stride"):
            if k in raw:
                raise StudyError(where, prefix + k, "applies to mode: slide only; remove it or set mode: slide.")
    scales = _scales(raw["scales"], where, prefix + "scales") if "scales" in raw else (1.0,)
    flip = raw.get("flip", False)
    if not isinstance(flip, bool):
        raise StudyError(where, prefix + "flip", f"expected true or false, got {brief(flip)}.")
    return EvalSpec(mode, crop, stride, scales, flip)


__all__ = ["EVAL_KEYS", "EvalSpec", "MODES", "PAPER_SCALES", "parse_eval"]
