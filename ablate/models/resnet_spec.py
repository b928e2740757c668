"""The ResNet-D8 backbone's study spec: ``model.backbone: {name: resnet_d8, ...}`` parsed and checked
(:class:`ResNetSpec`, :func:`validate_resnet`), its channels (:func:`resnet_channels`) and the error
and hint for pretrained weights that cannot be found.

Separate from :mod:`ablate.models.resnet` (the backbone and its weights, which import torch) because a
study parses its backbone when it loads, and loading a study (``load_study``, ``python -m
ablate.run.status``) imports no torch. :mod:`ablate.models.resnet` re-exports these names.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..config.errors import StudyError

DEPTHS = (18, 34, 50, 101, 152)
NORMS = ("bn", "syncbn")
URL_PREFIXES = ("http://", "https://", "open-mmlab://", "openmmlab://")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that cannot be found, fetched, read or matched to the backbone."""


@dataclass(frozen=True)
class ResNetSpec:
    """``model.backbone`` of a ResNet-D8: ``{name: resnet_d8, depth: 101, pretrained: ..., norm: bn}``.

    ``pretrained``: a file path, an ``http(s)://`` URL or ``open-mmlab://resnet101_v1c`` (cached
    under ``torch.hub.get_dir()/checkpoints``), or ``none`` for random initialisation; it has no
    default, so a study says which. ``norm``: ``bn`` or ``syncbn``.
    """

    name: str = "resnet_d8"
    depth: int = 101
    pretrained: str = ""
    norm: str = "bn"

    def as_dict(self) -> dict:
        return asdict(self)


def validate_resnet(raw: dict, where: str, prefix: str = "model.backbone.", base: ResNetSpec | None = None,
                    check_files: bool = True) -> ResNetSpec:
    """Parse ``model.backbone`` for ``resnet_d8``; raises :class:`StudyError` on any mistake.

    With ``check_files``, a ``pretrained`` path must exist (URLs are fetched only when the
    backbone is built).
    """
    if not isinstance(raw, dict):
        raise StudyError(where, prefix.rstrip("."), f"expected a mapping, got {raw!r}.")
    base = base or ResNetSpec()
    allowed = [f.name for f in fields(ResNetSpec)]
    for k in raw:
        if k not in allowed:
            raise StudyError(where, prefix + k, f"unknown key for backbone resnet_d8; valid keys here are: "
                             f"{', '.join(allowed)}.")
    spec = replace(base, **raw)
    if spec.name != "resnet_d8":
        raise StudyError(where, prefix + "name", f"expected resnet_d8, got {spec.name!r}.")
    if not isinstance(spec.depth, int) or isinstance(spec.depth, bool) or spec.depth not in DEPTHS:
        raise StudyError(where, prefix + "depth", f"{spec.depth!r} is not a ResNet depth; valid: "
                         f"{', '.join(map(str, DEPTHS))} (the papers use 50 and 101).")
    if spec.norm not in NORMS:
        raise StudyError(where, prefix + "norm", f"unknown norm {spec.norm!r}; valid: {', '.join(NORMS)}.")
    if not isinstance(spec.pretrained, str) or not spec.pretrained:
        raise StudyError(where, prefix + "pretrained", "missing; give a weights file path, a URL such as "
                         f"open-mmlab://resnet{spec.depth}_v1c, or none to train from random initialisation "
                         "(the papers start from ImageNet weights).")
    if check_files and spec.pretrained.lower() != "none" and not spec.pretrained.startswith(URL_PREFIXES):
        try:
            check_weights_file(spec.pretrained, spec.depth)
        except PretrainedWeightsError as e:
            raise StudyError(where, prefix + "pretrained", str(e)) from None
    return spec


def resnet_channels(depth: int) -> int:
    """The last stage's channels: 2048 for the bottleneck ResNets (50 and deeper), 512 below."""
    return 2048 if depth >= 50 else 512


def weights_hint(depth: int | None, target: str | None = None) -> str:
    """Where to get the V1c weights of ``depth`` and how to name them (the end of each weights error)."""
    url = openmmlab_url(f"resnet{depth}_v1c") if depth in DEPTHS else None  # open-mmlab has 18, 50 and 101
    name = f"resnet{depth}_v1c" if url else "resnet<depth>_v1c"
    to = target or f"<path>/{name}.pth"
    return (f"download open-mmlab://{name}{f' ({url})' if url else ''} to {to} and set model.backbone.pretrained: "
            f"{to}, or set pretrained: none to train from random initialisation")


def openmmlab_url(name: str) -> str | None:
    """The URL behind ``open-mmlab://<name>`` (mmengine's model table), or None."""
    try:
        from mmengine.runner.checkpoint import get_external_models

        return get_external_models().get(name)
    except Exception:  # pragma: no cover - mmengine without the table
        return None


def check_weights_file(path: str, depth: int | None) -> Path:
    """``path`` resolved, or :class:`PretrainedWeightsError` when no such file exists."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise PretrainedWeightsError(f"the pretrained weights file {p} does not exist; {weights_hint(depth, str(p))}.")
    return p
