"""The real datasets' settings: one frozen spec per dataset (the papers' defaults) and the check of a
study's ``data:`` mapping against it (keys, types, ranges, then the layout on disk through
:mod:`ablate.data.real_layout`). Re-exported by :mod:`ablate.data.real`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..config.errors import StudyError
from .real_layout import expected_layout, resolve_layout

IGNORE_INDEX = 255
# ImageNet statistics on the 0..255 scale, RGB order (mmseg's SegDataPreProcessor defaults)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class RealDataSpec:
    """Settings shared by the real datasets (each subclass sets the papers' defaults).

    ``crop_size`` is (height, width); ``scale`` is mmseg's keep-ratio scale (long edge, short
    edge): an image is resized to fit inside it, then by a random ratio in ``ratio_range``.
    ``train_images`` / ``val_images`` > 0 keep only the first N images of a split (quick runs).
    ``num_workers`` is the number of loader processes per training process. A relative
    ``data_root`` is taken from the working directory of the process (give absolute paths on a
    cluster, where workers may start elsewhere).
    """

    name: str = ""
    data_root: str = ""
    crop_size: tuple = (512, 512)
    scale: tuple = (2048, 512)
    ratio_range: tuple = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    train_split: str = "train"
    val_split: str = "val"
    train_images: int = 0
    val_images: int = 0
    num_workers: int = 4

    def as_dict(self) -> dict:
        """Plain JSON-able dict (tuples as lists); ``spec_from_dict`` reads it back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class VOCSpec(RealDataSpec):
    """PASCAL VOC 2012 (21 classes), 512 x 512 crops, scale (2048, 512), as mmseg's
    ``pascal_voc12_aug.py``. ``aug``: 'auto' uses the SBD augmented set when both
    ``SegmentationClassAug/`` and ``ImageSets/Segmentation/aug.txt`` exist, 'on' requires it,
    'off' trains on ``train.txt`` alone (1464 images)."""

    name: str = "voc"
    aug: str = "auto"


@dataclass(frozen=True)
class CityscapesSpec(RealDataSpec):
    """Cityscapes (19 train ids), 512 x 1024 crops, scale (2048, 1024), as mmseg's
    ``cityscapes.py``. CCNet's setting is ``crop_size: [769, 769], scale: [2049, 1025]``
    (mmseg's ``cityscapes_769x769.py``)."""

    name: str = "cityscapes"
    crop_size: tuple = (512, 1024)
    scale: tuple = (2048, 1024)


@dataclass(frozen=True)
class ADE20KSpec(RealDataSpec):
    """ADE20K / SceneParsing (150 classes, ``reduce_zero_label``), 512 x 512 crops, scale
    (2048, 512), as mmseg's ``ade20k.py``."""

    name: str = "ade20k"
    train_split: str = "training"
    val_split: str = "validation"


SPECS: dict[str, type[RealDataSpec]] = {"voc": VOCSpec, "cityscapes": CityscapesSpec, "ade20k": ADE20KSpec}
REAL_DATASETS = tuple(SPECS)


def _pair(value, kind, where: str, key: str, positive: bool = True) -> tuple:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float) if kind is float else int) and not isinstance(v, bool) for v in value)
    if not ok or (positive and any(v <= 0 for v in value)):
        what = "positive integers" if kind is int else "positive numbers"
        raise StudyError(where, key, f"expected a list of two {what}, e.g. [512, 512]; got {value!r}.")
    return tuple(kind(v) for v in value)


def _check_value(k: str, v, default, where: str, key: str):
    """One field of a ``data:`` mapping, checked against the type of its default (``key``: its full name)."""
    if k in ("crop_size", "scale"):
        return _pair(v, int, where, key)
    if k == "ratio_range":
        v = _pair(v, float, where, key)
        if v[0] > v[1]:
            raise StudyError(where, key, f"expected [low, high] with low <= high, got {list(v)!r}.")
    elif k == "aug":
        v = {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
        if v not in ("auto", "on", "off"):
            raise StudyError(where, key, f"expected auto, on (true) or off (false), got {v!r}.")
    elif isinstance(default, bool):
        if not isinstance(v, bool):
            raise StudyError(where, key, f"expected true or false, got {v!r}.")
    elif isinstance(default, int):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise StudyError(where, key, f"expected an integer >= 0, got {v!r}.")
    elif isinstance(default, float):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise StudyError(where, key, f"expected a number >= 0, got {v!r}.")
        v = float(v)
        if k in ("cat_max_ratio", "flip_prob") and not (0.0 <= v <= 1.0 and (k != "cat_max_ratio" or v > 0)):
            raise StudyError(where, key, f"{v!r} is out of range: it must lie in "
                             f"{'(0, 1]' if k == 'cat_max_ratio' else '[0, 1]'}.")
    elif isinstance(default, str):
        if not isinstance(v, str):
            raise StudyError(where, key, f"expected a string, got {v!r}.")
    return v


def validate_real_data(raw: dict, where: str, prefix: str = "data.", base: RealDataSpec | None = None,
                       check_layout: bool = True) -> RealDataSpec:
    """Parse a study's ``data:`` mapping for a real dataset into its frozen spec.

    ``raw`` must name the dataset (``name: voc | cityscapes | ade20k``) unless ``base`` is given
    (then ``raw`` overrides ``base``'s fields). Unknown keys, wrong types, impossible values and,
    with ``check_layout``, a missing ``data_root`` or a malformed layout on disk raise
    :class:`StudyError` naming the file ``where`` and the key ``prefix + field``.
    """
    if not isinstance(raw, dict):
        raise StudyError(where, prefix.rstrip("."), f"expected a mapping, got {raw!r}.")
    raw = dict(raw)
    name = raw.pop("name", base.name if base is not None else None)
    if name not in SPECS:
        raise StudyError(where, prefix + "name", f"unknown real dataset {name!r}; valid: {', '.join(REAL_DATASETS)}.")
    cls = SPECS[name]
    if base is None or base.name != name:
        base = cls()
    allowed = [f.name for f in fields(cls) if f.name != "name"]
    for k in raw:
        if k not in allowed:
            raise StudyError(where, prefix + k, f"unknown key for dataset {name!r}; valid keys here are: name, "
                             f"{', '.join(allowed)}.")
    values = {k: _check_value(k, v, getattr(base, k), where, prefix + k) for k, v in raw.items()}
    spec = replace(base, **values)
    if not spec.data_root:
        raise StudyError(where, prefix + "data_root", f"missing; give the folder that holds the {name} data in its "
                         f"standard layout: {expected_layout(name)}.")
    if check_layout:
        resolve_layout(spec, where, prefix)
    return spec


def spec_from_dict(d: dict) -> RealDataSpec:
    """The spec back from ``RealDataSpec.as_dict()`` (a trial config); no disk access."""
    return validate_real_data(dict(d), "trial config", "data.", check_layout=False)


def is_real(data: dict | object) -> bool:
    """True if ``data`` (a ``data:`` mapping or a spec) names a real dataset."""
    name = data.get("name") if isinstance(data, dict) else getattr(data, "name", None)
    return name in SPECS
