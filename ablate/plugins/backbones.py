"""Backbone plugins: ``model.backbone: {name: module:attr, <options>}`` validated into a
:class:`BackboneSpec`, the backbone built from a trial config, and its geometry (out_channels,
stride) from one build and one forward that check the contract (cached per process).

The contract is :mod:`ablate.plugins`' docstring's; everything here is re-exported there.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Mapping

from ..config.errors import StudyError, brief
from .load import PluginError, check_kind, is_spec, load_object, option_values, options_of, said


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """``model.backbone`` of a backbone plugin: its spec and its options."""

    name: str
    options: tuple = ()  # ((option, value), ...) in the constructor's order

    def as_dict(self) -> dict:
        return {"name": self.name, **dict(self.options)}


def backbone_spec(raw: Mapping, where: str, prefix: str = "model.backbone.",
                  base: BackboneSpec | None = None) -> BackboneSpec:
    """Validate ``model.backbone`` of a backbone plugin (or one ``backbone.X`` factor over
    ``base``), then build it and run it once to check the contract; StudyError naming the key."""
    name = raw.get("name", base.name if base else None)
    if not is_spec(name):
        raise StudyError(where, prefix + "name", f"expected a backbone plugin as module:attr, got {brief(name)}.")
    plugin = f"backbone plugin {brief(name)}"
    try:
        cls = load_object(name, "backbone", Path(where).parent)
        check_kind(cls, plugin, None, "a backbone plugin is a torch.nn.Module subclass, or a function registered "
                   "with @ablate.plugins.builder (or defined in your module) that builds one")
        options = options_of(cls, plugin, ())
        if {"name", "options"} & set(options):
            raise PluginError(plugin, "its keyword arguments may not be called name or options (ablate's own "
                              "keys of model.backbone); rename them.")
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    start = dict(base.options) if base else {k: f.default for k, f in options.items()}
    spec = BackboneSpec(name, tuple(option_values(raw, options, start, where, prefix, ("name",)).items()))
    try:
        backbone_geometry(spec.as_dict())
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    return spec


def _flat(spec: Mapping) -> dict:
    """``{"name": ..., option: value, ...}`` from ``BackboneSpec.as_dict()`` or from
    ``dataclasses.asdict`` of a :class:`BackboneSpec` (``{"name": ..., "options": ((k, v), ...)}``)."""
    if set(spec) == {"name", "options"} and isinstance(spec["options"], (tuple, list)):
        return {"name": spec["name"], **dict(spec["options"])}
    return dict(spec)


def build_backbone(spec: Mapping) -> Any:
    """The backbone of a trial config's ``backbone`` (``BackboneSpec.as_dict()``)."""
    spec = _flat(spec)
    options = {k: v for k, v in spec.items() if k != "name"}
    return load_object(spec["name"], "backbone")(**options)


@functools.lru_cache(maxsize=16)
def _geometry(name: str, options: tuple) -> tuple[int, int]:
    import torch  # here, not at the top: naming a plugin (a study that loads) imports no torch
    from torch import nn

    plugin = f"backbone plugin {brief(name)}"
    side = 32
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            net = build_backbone({"name": name, **dict(options)})
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the plugin's constructor
            raise PluginError(plugin, f"building it with {dict(options)} raised {said(e)}.") from None
        channels, stride = getattr(net, "out_channels", None), getattr(net, "stride", None)
        if not isinstance(net, nn.Module) or not all(isinstance(v, int) and v >= 1 for v in (channels, stride)):
            raise PluginError(plugin, "it must build a torch.nn.Module with int attributes out_channels and stride "
                              f"(>= 1); got a {type(net).__name__} with out_channels={brief(channels)}, "
                              f"stride={brief(stride)}.")
        try:
            y = net(torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0)))
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise PluginError(plugin, f"its forward on a (2, 3, {side}, {side}) image batch raised "
                              f"{said(e)}.") from None
    sides = {side // stride, -(-side // stride)}
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or got[:2] != (2, channels) or \
            got[2] not in sides or got[3] not in sides:
        raise PluginError(plugin, f"its forward maps (2, 3, {side}, {side}) to {got}; with out_channels={channels} "
                          f"and stride={stride} the contract is (2, {channels}, {side // stride}, {side // stride}).")
    return channels, stride


def backbone_geometry(spec: Mapping) -> tuple[int, int]:
    """(out_channels, stride) of a backbone plugin, from one build and one forward on a
    (2, 3, 32, 32) batch that checks the contract (cached; generators' state restored)."""
    spec = _flat(spec)
    return _geometry(spec["name"], tuple((k, v) for k, v in spec.items() if k != "name"))
