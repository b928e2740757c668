"""Compatibility shims for third-party packages (nothing here changes an installed package).

``mmcv_ops``: a pure-PyTorch stand-in for ``mmcv.ops``, so mmsegmentation imports with mmcv-lite.
"""
from .mmcv_ops import install as install_mmcv_ops

__all__ = ["install_mmcv_ops"]
