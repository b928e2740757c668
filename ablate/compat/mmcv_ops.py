"""A pure-PyTorch stand-in for ``mmcv.ops``, so mmsegmentation 1.2.2 imports with mmcv-lite.

mmcv-lite ships ``mmcv/ops/*.py`` but not the compiled extension ``mmcv._ext`` they load, so
``import mmcv.ops`` fails, and mmsegmentation imports it unconditionally
(``mmseg/utils/mask_classification.py``, ``mmseg/models/losses/focal_loss.py``, ...). Building the
full mmcv takes about ten minutes and has no wheel for this torch. :func:`install` registers,
**only when ``mmcv.ops`` cannot be imported**, a module under that name that provides exactly the
names mmsegmentation 1.2.2 imports from it (``grep -rn "mmcv.ops" mmseg``):

=========================  =====================================================================
``CrissCrossAttention``    real: mmcv 2.x's module (``query_conv``/``key_conv`` to C // 8,
                           ``value_conv`` to C, ``gamma`` a zero-initialised ``Scale``, output
                           ``gamma * out + x``; the centre counted once), computed by
                           :func:`ablate.attention.criss_cross.criss_cross_reference`. Same
                           parameter names, so mmcv state dicts load.
``PSAMask``                real: mmcv's ``PSAMask(psa_type, mask_size)`` for any odd or even mask
                           size (the kernel's window is centred at ``(mask - 1) // 2``; entries
                           outside the window are 0), via :func:`ablate.attention.psanet.psa_mask`.
``point_sample``,          real: mmcv's own, loaded from mmcv-lite's pure-PyTorch
``SimpleRoIAlign``,        ``mmcv/ops/point_sample.py`` (registered as ``mmcv.ops.point_sample``).
``rel_roi_point_to_...``
``carafe``,                real: mmcv's CARAFE op (``carafe``/``carafe_naive``, the same function:
``carafe_naive``,          the CUDA kernels' definition) and modules (``CARAFE``, ``CARAFENaive``,
``CARAFE``,                ``CARAFEPack`` with mmcv's parameter names and init), in pure PyTorch
``CARAFENaive``,           (:mod:`ablate.attention.carafe`); also as the submodule ``mmcv.ops.carafe``.
``CARAFEPack``             Not used by mmseg; there for code that imports it (mmdet's FPN_CARAFE).
``sigmoid_focal_loss``     raises ``NotImplementedError`` when called (not at import): used by
                           mmseg's focal loss, which ablate does not use.
``DeformConv2d``,          classes that raise ``NotImplementedError`` when constructed;
``ModulatedDeformConv2d``  ``isinstance`` checks against them (mmseg's optimiser constructor) work.
=========================  =====================================================================

Like mmcv's, the stand-in is a package: ``mmcv.ops.psa_mask``, ``mmcv.ops.cc_attention`` and
``mmcv.ops.carafe`` are stand-in submodules holding the classes above, and its ``__path__`` is mmcv-lite's ``mmcv/ops``
folder, so a pure-PyTorch submodule (``mmcv.ops.point_sample``, ``conv2d_gradfix``, ...) imports
from mmcv's own file; one that needs the compiled extension fails with mmcv's ``ImportError``.

Plus ``get_compiler_version`` / ``get_compiling_cuda_version``, which return ``"n/a"``: mmcv's own
``mmcv.utils.collect_env`` imports them from ``mmcv.ops`` and falls back only on
``ModuleNotFoundError``, which a stand-in without them would turn into an ``ImportError``.

Not registered in mmengine's ``MODELS`` registry (mmseg constructs both ops directly). Verified
against mmcv 2.1.0's ``mmcv/ops/cc_attention.py`` (pure PyTorch, loaded from the mmcv-lite files)
and a line-by-line transcription of ``mmcv/ops/csrc/pytorch/cpu/psamask.cpp`` in
``tests/compat/test_mmseg_parity.py``; CARAFE against a transcription of
``mmcv/ops/csrc/common/cuda/carafe_naive_cuda_kernel.cuh`` (forward and backward) and mmcv's own
``carafe.py`` run on it, in ``tests/attention/test_carafe.py``.

Usage: call ``install()`` before importing ``mmseg``::

    from ablate.compat import install_mmcv_ops
    install_mmcv_ops()
    import mmseg.models
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

from ablate.attention.criss_cross import criss_cross_reference
from ablate.attention.psanet import psa_mask
from ablate.attention.carafe import CARAFEPack, carafe

STANDIN_FLAG = "__ablate_standin__"


class _Scale(nn.Module):
    """mmcv's ``Scale``: one learnable 0-d factor named ``scale`` (state-dict compatible)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class CrissCrossAttention(nn.Module):
    """mmcv's ``CrissCrossAttention(in_channels)``: criss-cross attention with a gamma residual."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = _Scale(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = criss_cross_reference(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return (self.gamma(out) + x).contiguous()

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}"


def psa_mask_any_size(mask: torch.Tensor, psa_type: str, mask_size: tuple[int, int]) -> torch.Tensor:
    """mmcv's PSAMask crop for a ``mask_size`` mask, (B, hm*wm, H, W) -> (B, H*W, H, W).

    Mask row ``r`` of pixel (h, w) is the weight for image row ``h + r - (hm - 1) // 2`` (likewise
    for columns). Placing the mask inside an over-complete (2H-1) x (2W-1) one, at the offset that
    keeps that correspondence, and zero elsewhere, reduces every mask size to the over-complete
    crop of :func:`ablate.attention.psanet.psa_mask`; mask entries that fall off the image are
    dropped, image positions outside the window get 0, as in mmcv's kernel.
    """
    b, m, h, w = mask.shape
    hm, wm = mask_size
    if m != hm * wm:
        raise ValueError(f"PSAMask: input has {m} channels, mask_size {hm}x{wm} needs {hm * wm}")
    full_h, full_w = 2 * h - 1, 2 * w - 1
    if (hm, wm) == (full_h, full_w):
        return psa_mask(mask, psa_type)
    top, left = h - 1 - (hm - 1) // 2, w - 1 - (wm - 1) // 2  # where mask (0, 0) lands
    r0, r1 = max(0, top), min(full_h, top + hm)
    c0, c1 = max(0, left), min(full_w, left + wm)
    full = mask.new_zeros(b, full_h, full_w, h, w)
    if r0 < r1 and c0 < c1:
        full[:, r0:r1, c0:c1] = mask.view(b, hm, wm, h, w)[:, r0 - top:r1 - top, c0 - left:c1 - left]
    return psa_mask(full.view(b, full_h * full_w, h, w), psa_type)


class PSAMask(nn.Module):
    """mmcv's ``PSAMask(psa_type, mask_size)``: crop per-pixel masks to an (HW, H, W) map.

    ``mask_size=None`` (which mmcv does not accept) means the over-complete (2H-1, 2W-1).
    """

    def __init__(self, psa_type: str, mask_size=None):
        super().__init__()
        if psa_type not in ("collect", "distribute"):
            raise ValueError(f"psa_type must be 'collect' or 'distribute', got {psa_type!r}")
        self.psa_type = psa_type
        self.psa_type_enum = 0 if psa_type == "collect" else 1
        self.mask_size = mask_size

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (mmcv's argument name)
        h, w = input.shape[2:]
        size = self.mask_size
        if size is None:
            size = (2 * h - 1, 2 * w - 1)
        elif isinstance(size, int):
            size = (size, size)
        return psa_mask_any_size(input, self.psa_type, tuple(size)).contiguous()  # mmcv's is contiguous

    def extra_repr(self) -> str:
        return f"psa_type={self.psa_type}, mask_size={self.mask_size}"


class CARAFE(nn.Module):
    """mmcv's ``CARAFE(kernel_size, group_size, scale_factor)``: ``forward(features, masks)`` is
    :func:`~ablate.attention.carafe.carafe` (masks already normalised)."""

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int):
        super().__init__()
        for name, value in (("kernel_size", kernel_size), ("group_size", group_size), ("scale_factor", scale_factor)):
            if not isinstance(value, int):
                raise TypeError(f"CARAFE: {name} must be an int, got {value!r}")
        self.kernel_size, self.group_size, self.scale_factor = kernel_size, group_size, scale_factor

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return carafe(features, masks, self.kernel_size, self.group_size, self.scale_factor)


class CARAFENaive(CARAFE):
    """mmcv's ``CARAFENaive``: the same function as :class:`CARAFE` (mmcv's naive kernel)."""


def _unavailable_message(name: str) -> str:
    return (f"mmcv.ops.{name} is a compiled mmcv op; this environment has mmcv-lite, and ablate's "
            f"stand-in (ablate.compat.mmcv_ops) implements only CrissCrossAttention, PSAMask, CARAFE and point_sample. "
            f"Install the full mmcv (mmcv<2.2.0) to use {name}.")


def _unavailable_function(name: str):
    def op(*args, **kwargs):
        raise NotImplementedError(_unavailable_message(name))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Not available: {_unavailable_message(name)}"
    return op


def _unavailable_module(name: str) -> type:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(_unavailable_message(name))

    return type(name, (nn.Module,), {"__init__": __init__, "__doc__": f"Not available: {_unavailable_message(name)}"})


def _not_compiled() -> str:
    return "n/a (ablate.compat.mmcv_ops stand-in, no compiled mmcv ops)"


def _functional_psa_mask(input: torch.Tensor, psa_type, mask_size) -> torch.Tensor:  # noqa: A002
    """mmcv's ``psa_mask(input, psa_type, mask_size)``; ``psa_type`` is 0/1 (mmcv's enum) or the name."""
    mode = ("collect", "distribute")[psa_type] if isinstance(psa_type, int) else psa_type
    return PSAMask(mode, mask_size)(input)


_CARAFE_NAMES = {"carafe": carafe, "carafe_naive": carafe, "CARAFE": CARAFE, "CARAFENaive": CARAFENaive,
                 "CARAFEPack": CARAFEPack}


def _ops_dir() -> list[str]:
    """mmcv-lite's ``mmcv/ops`` folder as a package ``__path__`` ([] when it ships none)."""
    spec = importlib.util.find_spec("mmcv")
    folder = Path(spec.origin).parent / "ops" if spec is not None and spec.origin else None
    return [str(folder)] if folder is not None and folder.is_dir() else []


def _submodule(name: str, doc: str, names: dict) -> types.ModuleType:
    mod = types.ModuleType(f"mmcv.ops.{name}", doc)
    mod.__package__ = "mmcv.ops"
    for key, value in names.items():
        setattr(mod, key, value)
    mod.__all__ = list(names)
    setattr(mod, STANDIN_FLAG, True)
    return mod


def _real_submodule(name: str, path: list[str]) -> types.ModuleType | None:
    """mmcv's own pure-PyTorch ``mmcv/ops/<name>.py``, executed but not registered (None if absent)."""
    file = Path(path[0]) / f"{name}.py" if path else None
    if file is None or not file.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"mmcv.ops.{name}", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def standin_module(reason: str = "") -> types.ModuleType:
    """A fresh ``mmcv.ops`` stand-in package (not registered anywhere; its submodules are in
    ``__ablate_submodules__``, which :func:`install` registers too)."""
    mod = types.ModuleType("mmcv.ops", __doc__.split("\n\n")[0] + ("\n\nReal mmcv.ops failed: " + reason if reason else ""))
    path = _ops_dir()
    mod.__path__ = path
    mod.__package__ = "mmcv.ops"
    mod.__spec__ = importlib.machinery.ModuleSpec("mmcv.ops", None, is_package=True)
    mod.__spec__.submodule_search_locations = path
    subs = {
        "psa_mask": _submodule("psa_mask", "Stand-in for mmcv.ops.psa_mask.", {"PSAMask": PSAMask, "psa_mask": _functional_psa_mask}),
        "cc_attention": _submodule("cc_attention", "Stand-in for mmcv.ops.cc_attention.", {"CrissCrossAttention": CrissCrossAttention}),
        "carafe": _submodule("carafe", "Stand-in for mmcv.ops.carafe.", _CARAFE_NAMES),
    }
    names = {
        "CrissCrossAttention": CrissCrossAttention,
        "PSAMask": PSAMask,
        **_CARAFE_NAMES,
        "point_sample": _unavailable_function("point_sample"),
        "sigmoid_focal_loss": _unavailable_function("sigmoid_focal_loss"),
        "DeformConv2d": _unavailable_module("DeformConv2d"),
        "ModulatedDeformConv2d": _unavailable_module("ModulatedDeformConv2d"),
        "get_compiler_version": _not_compiled,
        "get_compiling_cuda_version": _not_compiled,
    }
    point = _real_submodule("point_sample", path)
    if point is not None:
        subs["point_sample"] = point
        names.update({k: getattr(point, k) for k in ("point_sample", "SimpleRoIAlign", "rel_roi_point_to_rel_img_point")})
    for key, value in {**subs, **names}.items():  # as in mmcv, ``mmcv.ops.point_sample`` is the function
        setattr(mod, key, value)
    mod.__all__ = list(names)
    mod.__ablate_submodules__ = subs
    setattr(mod, STANDIN_FLAG, True)
    return mod


def is_standin(module) -> bool:
    return bool(getattr(module, STANDIN_FLAG, False))


def install() -> bool:
    """Make ``import mmcv.ops`` work. Returns True if the stand-in is in place, False if mmcv's own is.

    Does nothing when the real ``mmcv.ops`` imports (full mmcv) or a stand-in is already
    installed. Raises ``ModuleNotFoundError`` if mmcv itself is not installed. Call it before
    importing mmseg: mmseg modules that import ``mmcv.ops`` optionally (``cc_head``, ``psa_head``)
    remember a failed import.
    """
    present = sys.modules.get("mmcv.ops")
    if present is not None:
        return is_standin(present)
    import mmcv

    try:
        importlib.import_module("mmcv.ops")
        return False
    except ImportError as err:  # mmcv-lite: "No module named 'mmcv._ext'"
        reason = f"{type(err).__name__}: {err}"
    for name in [n for n in sys.modules if n.startswith("mmcv.ops.")]:  # half-imported submodules
        del sys.modules[name]
    mod = standin_module(reason)
    sys.modules["mmcv.ops"] = mod
    for name, sub in mod.__ablate_submodules__.items():
        sys.modules[f"mmcv.ops.{name}"] = sub
    mmcv.ops = mod
    return True


__all__ = ["CARAFE", "CARAFENaive", "CrissCrossAttention", "PSAMask", "install", "is_standin", "psa_mask_any_size", "standin_module"]
