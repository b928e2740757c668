"""Which mechanisms ``model.head: {style: mmseg}`` can wrap, and in which of mmseg's decode-head
layouts: :data:`LAYOUTS`, :func:`layout_of` and :func:`check_style`.

Separate from :mod:`ablate.models.mmseg_heads` (the heads themselves, which import torch) because a
study checks its cells' head style when it loads, and loading a study (``load_study``,
``python -m ablate.run.status``) imports no torch: the table is keyed on where each block is
(its module and class name, as a preset names it), not on the block classes. The layouts are
described in :mod:`ablate.models.mmseg_heads`, which re-exports this module's names.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadLayout:
    """The convolutions an mmseg decode head puts around its block."""

    head: str  # mmseg's class name
    after: bool = True  # a 3x3 conv + BN + ReLU after the block (convs[1], EMAHead's bottleneck)
    concat: bool = True  # the input concatenated with the features, fused by a 3x3 conv (conv_cat)
    branches: bool = False  # DAHead: the block's PAM and CAM on branches of their own


DANET = ("ablate.attention.danet", "DANetBlock")

# (the block's module, its class name) -> the layout of mmseg's head for it
LAYOUTS: dict[tuple[str, str], HeadLayout] = {
    ("ablate.attention.none", "NoAttention"): HeadLayout("FCNHead"),
    ("ablate.attention.non_local", "NonLocalBlock"): HeadLayout("NLHead"),
    ("ablate.attention.gcnet", "GlobalContextBlock"): HeadLayout("GCHead"),
    ("ablate.attention.dnl", "DisentangledNonLocalBlock"): HeadLayout("DNLHead"),
    ("ablate.attention.criss_cross", "CCNetBlock"): HeadLayout("CCHead"),
    ("ablate.attention.ema", "EMABlock"): HeadLayout("EMAHead"),
    ("ablate.attention.interlaced", "ISABlock"): HeadLayout("ISAHead", after=False, concat=False),
    DANET: HeadLayout("DAHead", concat=False, branches=True),
}


def block_key(preset) -> tuple[str, str] | None:
    """(module, class name) of ``preset``'s block, without importing it (None: not a preset)."""
    if not hasattr(preset, "source"):
        return None
    return preset.module, preset.block_name


def layout_of(preset) -> HeadLayout | None:
    """The mmseg head layout for a preset's block (None: mmseg has no such head)."""
    return LAYOUTS.get(block_key(preset))


def check_style(preset, args: dict | None = None) -> str | None:
    """Why ``style: mmseg`` cannot wrap ``preset`` with the block arguments ``args`` (None: it can)."""
    if layout_of(preset) is not None:
        if block_key(preset) == DANET and (args or {}).get("branch", "both") != "both":
            return (f"mmseg's DAHead has both branches (PAM and CAM); mechanism {preset.name!r} with branch "
                    f"{args['branch']!r} has no mmseg head; use branch: both (mechanism danet) or style: plain")
        return None
    from ..attention import MECHANISMS

    ok = sorted(name for name, p in MECHANISMS.items() if layout_of(p) is not None)
    return (f"mmseg has no decode head that wraps mechanism {preset.name!r} (block {preset.block_name}) "
            f"in convolutions we reproduce; style mmseg supports: {', '.join(ok)}; use style: plain for "
            "the others")


__all__ = ["DANET", "LAYOUTS", "HeadLayout", "block_key", "check_style", "layout_of"]
