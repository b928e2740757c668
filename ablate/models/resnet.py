"""Dilated ResNet with output stride 8 ("ResNet-D8"), the backbone of the attention papers.

Non-local (for segmentation), DANet, CCNet, OCNet, EMANet, ISANet, GCNet and APCNet all put
their block on a ResNet-50/101 whose last two stages trade stride for dilation, so the last
stage (2048 channels) sits at 1/8 of the input. This is mmsegmentation's ``ResNetV1c`` (deep
3x3 stem, the variant open-mmlab's pretrained ``resnet{50,101}_v1c`` weights belong to) with
``strides=(1, 2, 1, 1)``, ``dilations=(1, 1, 2, 4)`` and ``contract_dilation=True``, exactly as
in mmseg's ``configs/_base_/models/*_r50-d8.py`` (``depth: 101`` for R-101-D8).

Differences from mmseg's configs: the norm defaults to plain BatchNorm (``norm: syncbn`` gives
SyncBN for multi-GPU training, as the papers use; Lightning's ``sync_batchnorm=True`` does the
same); only the last stage is returned by ``forward`` (``forward_stages`` also returns stage 3,
1024 channels, which mmseg's auxiliary FCN head reads).

Pretrained weights (``pretrained:``) are never optional by omission: a path or URL loads them
(a file that is missing, cannot be fetched or does not match raises
:class:`PretrainedWeightsError` saying where to put the weights), and only ``none`` gives the
random (Kaiming) initialisation. mmseg is imported when a backbone is built, not on import. The
spec (``model.backbone``: :class:`ResNetSpec`, :func:`validate_resnet`) is in the torch-free
:mod:`ablate.models.resnet_spec`, re-exported here.
"""
from __future__ import annotations

import logging
import os
import pickle
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .resnet_spec import (DEPTHS, NORMS, URL_PREFIXES, PretrainedWeightsError, ResNetSpec,  # noqa: F401 (re-exported)
                          check_weights_file, openmmlab_url, resnet_channels, validate_resnet, weights_hint)

log = logging.getLogger(__name__)

TRUST_ENV = "ABLATE_TRUST_CHECKPOINTS"
_PREFIXES = ("model.backbone.", "backbone.")  # a whole segmenter's checkpoint: keep its backbone
MAX_MISSING = 0.1  # a file that leaves more of the backbone's tensors at init is the wrong file


# ======================================================================================
# the backbone
# ======================================================================================

class ResNetD8(nn.Module):
    """mmseg's ResNetV1c with output stride 8: ``forward(x)`` is the last stage, (B, 2048, H/8, W/8)
    for depth >= 50 (512 channels for 18/34). ``pretrained`` is required: path, URL or ``none``."""

    stride = 8

    def __init__(self, depth: int = 101, *, pretrained: str, norm: str = "bn", in_channels: int = 3):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {DEPTHS}, got {depth!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not isinstance(pretrained, str) or not pretrained:
            raise PretrainedWeightsError("ResNetD8 needs pretrained=<path or URL> or pretrained='none' (random init); "
                                         + weights_hint(depth) + ".")
        ResNetV1c = _import_resnet()
        self.depth = depth
        self.resnet = ResNetV1c(
            depth=depth, in_channels=in_channels, num_stages=4, out_indices=(2, 3), strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4), contract_dilation=True, style="pytorch", norm_eval=False,
            norm_cfg=dict(type="SyncBN" if norm == "syncbn" else "BN", requires_grad=True))
        self.out_channels = resnet_channels(depth)
        self.aux_channels = self.out_channels // 2
        _quiet_init(self.resnet)  # mmseg's init: Kaiming convs, BN 1/0, last BN of each block 0
        self.pretrained = pretrained
        self.load_report: LoadReport | None = None
        if pretrained.lower() != "none":
            self.load_report = load_pretrained(self, pretrained)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stage 3, stage 4): 1024 and 2048 channels, both at stride 8."""
        c3, c4 = self.resnet(x)
        return c3, c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(x)[-1]


def build_resnet(spec: ResNetSpec | dict) -> ResNetD8:
    d = spec.as_dict() if isinstance(spec, ResNetSpec) else dict(spec)
    d.pop("name", None)
    return ResNetD8(**d)


def _import_resnet():
    from ..compat import install_mmcv_ops

    install_mmcv_ops()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mmseg.models.backbones.resnet import ResNetV1c
    return ResNetV1c


def _quiet_init(module) -> None:
    """``init_weights()`` logs every parameter through mmengine's current logger; keep it quiet."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        module.init_weights()
    finally:
        logger.setLevel(level)


# ======================================================================================
# pretrained weights
# ======================================================================================

@dataclass(frozen=True)
class LoadReport:
    source: str
    file: str
    loaded: int
    missing: tuple
    unexpected: tuple

    def summary(self) -> str:
        s = f"loaded {self.loaded} tensors from {self.file}"
        if self.missing:
            s += f"; missing {len(self.missing)} (kept at init): {', '.join(self.missing[:5])}"
        if self.unexpected:
            s += f"; unexpected {len(self.unexpected)} (ignored): {', '.join(self.unexpected[:5])}"
        return s


def resolve_weights(source: str, depth: int | None = None, timeout: float = 30.0) -> Path:
    """A local file for ``source``: the path itself, or a URL's copy in torch's hub cache
    (fetched if absent). Raises :class:`PretrainedWeightsError` saying where to put the file."""
    if not source.startswith(URL_PREFIXES):
        return check_weights_file(source, depth)
    url = source
    if source.startswith(("open-mmlab://", "openmmlab://")):
        name = source.split("://", 1)[1]
        url = openmmlab_url(name)
        if url is None:
            raise PretrainedWeightsError(f"{source} is not in mmengine's open-mmlab model table; give a file path "
                                         f"or an http(s) URL instead; {weights_hint(depth)}.")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as e:  # no network, HTTP error, timeout
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        raise PretrainedWeightsError(
            f"could not fetch the pretrained weights {source} ({url}): {reason}. Download {url} on a machine with "
            f"network access and put it at {cached} (torch's hub cache, found without network) or anywhere and set "
            f"model.backbone.pretrained: <that path>; set pretrained: none to train from random initialisation"
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    return cached


def _numpy_globals() -> list:
    """numpy objects that mmengine checkpoints carry in their ``meta`` (scalars, arrays, dtypes),
    under both numpy 2's (``numpy._core``) and numpy 1's (``numpy.core``) names."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    out = [np.ndarray, np.dtype, (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
           (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
           core.multiarray.scalar, core.multiarray._reconstruct]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def load_checkpoint(path: str | Path):
    """``torch.load`` with ``weights_only=True``, allowing numpy scalars/arrays (mmengine's meta).

    A checkpoint that needs anything else (mmengine's HistoryBuffer, ConfigDict, ...) is refused
    unless ``ABLATE_TRUST_CHECKPOINTS=1`` is set, which loads it with ``weights_only=False``
    (this executes code from the file: only for files you trust).
    """
    path = str(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
    except (RuntimeError, EOFError, OSError) as e:
        raise PretrainedWeightsError(f"cannot read {path} as a torch checkpoint: {e}".splitlines()[0]) from None
    if os.environ.get(TRUST_ENV) == "1":
        log.warning("loading %s with weights_only=False (%s=1)", path, TRUST_ENV)
        return torch.load(path, map_location="cpu", weights_only=False)
    raise PretrainedWeightsError(
        f"{path} holds Python objects beyond tensors and numpy values ({first}); torch >= 2.6 refuses them in a "
        f"weights-only load. Save just the weights once (torch.save(torch.load(f, weights_only=False)"
        f"['state_dict'], 'weights.pth') with a file you trust) and point pretrained at that, or set "
        f"{TRUST_ENV}=1 to load the whole file unrestricted (only for files you trust).")


def backbone_state(ckpt) -> dict:
    """The backbone's tensors from a checkpoint: unwrap ``state_dict``/``model``, drop ``module.``,
    keep only ``backbone.``/``model.backbone.`` keys when there are any, drop ``resnet.``."""
    sd = ckpt
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise PretrainedWeightsError(f"expected a state dict, found {type(sd).__name__}")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    for p in _PREFIXES:
        if any(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
            break
    return {k[7:] if k.startswith("resnet.") else k: v for k, v in sd.items()}


def load_pretrained(backbone: ResNetD8, source: str) -> LoadReport:
    """Load ``source`` into ``backbone.resnet``; report what was missing or unexpected.

    Raises :class:`PretrainedWeightsError` if the file cannot be had, if a tensor's shape differs,
    or if no tensor, or less than 90% of the backbone's (``MAX_MISSING``), matches: a silent
    (partly) random init. Fewer missing or any unexpected keys are logged as a warning and kept
    in the returned :class:`LoadReport`.
    """
    depth = getattr(backbone, "depth", None)
    path = resolve_weights(source, depth)
    sd = backbone_state(load_checkpoint(path))
    own = backbone.resnet.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise PretrainedWeightsError(f"{path} does not fit ResNet-{depth}-D8: {len(bad)} tensor(s) differ in shape, "
                                     f"e.g. {'; '.join(bad[:3])}. Is it another depth?")
    matched = [k for k in sd if k in own]
    if not matched:
        sample = ", ".join(list(sd)[:4]) or "no tensors"
        raise PretrainedWeightsError(
            f"no tensor of {path} matches the ResNetV1c backbone (its keys look like: {sample}); a torchvision "
            f"ResNet (7x7 stem) does not fit the deep-stem V1c; {weights_hint(depth)}.")
    wanted = [k for k in own if not k.endswith("num_batches_tracked")]
    absent = [k for k in wanted if k not in sd]
    if len(absent) > MAX_MISSING * len(wanted):
        raise PretrainedWeightsError(
            f"{path} covers only {len(wanted) - len(absent)} of the {len(wanted)} tensors of ResNet-{depth}-D8 "
            f"(missing e.g. {', '.join(absent[:3])}); is it another depth? {weights_hint(depth)}.")
    extra = [k for k in sd if k not in own and k.startswith(("stem.", "layer", "conv1.", "bn1."))]
    if extra:
        what = ("it looks like a torchvision ResNet (7x7 stem), which does not fit the deep-stem V1c"
                if "conv1.weight" in extra else "is it another depth?")
        raise PretrainedWeightsError(f"{path} has backbone tensors that ResNet-{depth}-D8 lacks, e.g. "
                                     f"{', '.join(extra[:3])}; {what} {weights_hint(depth)}.")
    result = backbone.resnet.load_state_dict(sd, strict=False)
    missing = tuple(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))
    report = LoadReport(source, str(path), len(matched), missing, tuple(result.unexpected_keys))
    (log.warning if missing or report.unexpected else log.info)("ResNet-%s-D8 pretrained: %s", depth, report.summary())
    return report


__all__ = ["LoadReport", "PretrainedWeightsError", "ResNetD8", "ResNetSpec", "backbone_state",
           "build_resnet", "load_checkpoint", "load_pretrained", "openmmlab_url", "resnet_channels",
           "resolve_weights", "validate_resnet"]
