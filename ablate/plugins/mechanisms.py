"""Plugins: a user's own attention block, task or backbone, in the same tables as the built-ins.

Three kinds, each named in a study by an importable ``module:attribute`` (``my_package.blocks:
GatedContext``), and mechanisms also by name once a package declares them:

* **Mechanism** (``model.mechanism`` or a ``mechanism`` factor value): a block class (an
  ``nn.Module`` subclass, or a function building one: registered with :func:`builder`, or
  defined in the plugin's module with ``channels`` as its first argument) called as
  ``Block(channels, **factors)`` whose module maps ``(B, C, H, W)`` to ``(B, C, H, W)``; or a
  :class:`~ablate.config.vocab.Preset` of one. What ``module:attr`` names is checked before
  anything calls it (:func:`check_kind`): ``sys:exit``, ``os:_exit`` or ``subprocess:Popen``
  are refused, and a ``SystemExit`` raised by plugin code is a :class:`PluginError` too. Its factors are
  its ``FACTORS`` (the built-ins' ``Factor`` records) or, without them, its constructor's annotated
  keyword arguments with defaults (``bool``, ``int``, ``float``, ``Literal[...]``;
  :func:`ablate.config.vocab.derive_factors`). An installed package declares presets under the
  entry-point group ``ablate.mechanisms`` (in its ``pyproject.toml``: ``[project.entry-points.
  "ablate.mechanisms"] gated_gc = "my_package.blocks:GatedContext"``); an entry point may name a
  block (the preset takes the entry point's name), a ``Preset`` or a list of presets. Each
  mechanism plugin is built at ``CHECK_CHANNELS`` channels with its defaults and run on a
  ``(2, C, 8, 8)`` tensor when first resolved (the generators' state is left as it was).
* **Task** (``data: {name: module:attr, size, train_images, val_images, seed, <options>}``): a
  function ``make(rng, size, **options)`` drawing one image from a ``numpy.random.Generator``:
  ``(image float (3, S, S), label int (S, S))``, labels in ``0 .. num_classes - 1`` or 255
  (ignored), with an int attribute ``num_classes``. ablate draws the train and val splits from
  their own streams of ``seed``, as it does the synthetic tasks; options are its annotated keyword
  arguments, as a mechanism's factors.
* **Backbone** (``model.backbone: {name: module:attr, <options>}``): a class (or function) called
  with the options as keywords, giving an ``nn.Module`` with int attributes ``out_channels`` and
  ``stride`` that maps ``(B, 3, H, W)`` to ``(B, out_channels, H / stride, W / stride)`` (rounded
  either way).

``module:attr`` needs no install: the study file's folder and then the current directory are
appended to ``sys.path`` when a plugin is resolved (appended, so an installed package of the same
name wins and no folder shadows a library), and recorded in ``$ABLATE_PLUGIN_PATH`` so worker and
DDP processes started from here find the same modules. The console script ``ablate`` does not put
the current directory on ``sys.path`` by itself (``python -m`` does), hence both.

Every way a plugin can be broken (its module fails to import, the attribute is missing or is no
class, a factor has no default or an unmappable annotation, the contract check fails, an entry
point fails to load) raises :class:`PluginError`: a :class:`~ablate.config.errors.StudyError` naming the
plugin and the problem, which the commands print as one paragraph with exit status 2; the study
loader re-raises it naming the file and key.

Where each part lives (all importable from here): :mod:`ablate.plugins.load` (``module:attr``,
``sys.path``, options, :class:`PluginError`), :mod:`ablate.plugins.tasks`,
:mod:`ablate.plugins.backbones`; this module holds the mechanisms: presets from plugins, their
contract check and the installed entry points.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, Mapping

from ..config.vocab import Preset, SchemaError
from ..config.errors import brief
from .backbones import BackboneSpec, backbone_geometry, backbone_spec, build_backbone
from .load import (
    PATH_ENV,
    PluginError,
    builder,
    check_kind,
    is_spec,
    load_object,
    make_importable,
    options_of,
    said,
)
from .tasks import TaskSpec, check_image, load_task, task_data, task_spec, task_spec_from_dict

__all__ = [
    "GROUP", "PATH_ENV", "PLUGIN_FAMILY", "builder", "check_kind", "CHECK_CHANNELS", "CHECK_SIDE", "PluginError", "is_spec", "make_importable",
    "load_object", "options_of", "as_preset", "check_block", "mechanism", "installed_presets", "TaskSpec", "load_task",
    "task_spec", "check_image", "task_spec_from_dict", "task_data", "BackboneSpec", "backbone_spec", "build_backbone",
    "backbone_geometry",
]

GROUP = "ablate.mechanisms"  # the entry-point group of installed mechanism presets
PLUGIN_FAMILY = "plugin"  # the family of a plugin preset that names none of ablate's
CHECK_CHANNELS = 32  # the contract check's channels (the small backbone's default width)
CHECK_SIDE = 8  # ... and its feature map side
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
KIND_RULE = ("a mechanism plugin is a torch.nn.Module subclass built as Block(channels, **factors), a Preset, or a "
             "function registered with @ablate.plugins.builder (or defined in your module with `channels` as its "
             "first argument)")


# -- mechanisms --------------------------------------------------------------------------------------

def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def as_preset(obj: Any, name: str, plugin: str, package: str = "") -> Preset:
    """``obj`` (a block class, a function building a block, or a ``Preset``) as a preset named ``name``."""
    try:
        if isinstance(obj, Preset):
            family = obj.family or PLUGIN_FAMILY
            return dataclasses.replace(obj, name=name, family=family, package=package or obj.package)
        if not callable(obj):
            what = brief(obj) if isinstance(obj, (str, int, float)) else f"a {type(obj).__name__}"
            raise PluginError(plugin, f"it is {what}, not a block class, a function that builds a block, or a Preset.")
        check_kind(obj, plugin, "channels", KIND_RULE)  # before anything calls it
        return Preset(name, obj, summary=_summary(obj), family=PLUGIN_FAMILY, package=package)
    except SchemaError as e:
        raise PluginError(plugin, f"its factors cannot be read from {getattr(obj, '__name__', 'it')}: {e}.") from None
    except (TypeError, ValueError) as e:  # bind_factors: FACTORS that do not match the signature
        raise PluginError(plugin, f"{e}.") from None


def check_block(preset: Preset, plugin: str, channels: int = CHECK_CHANNELS, side: int = CHECK_SIDE) -> None:
    """The contract: ``preset.build(channels)`` is an ``nn.Module`` mapping a ``(2, C, side, side)``
    tensor to one of the same shape. Run without gradients; the random generators' state is
    restored afterwards, so a check never moves a trial's draws."""
    import torch  # here, not at the top: naming a plugin (a study that loads) imports no torch
    from torch import nn

    shape = (2, channels, side, side)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            block = preset.build(channels)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the plugin's own constructor
            raise PluginError(plugin, f"building it as Block({channels}) with its default factors raised "
                              f"{said(e)}.") from None
        if not isinstance(block, nn.Module):
            raise PluginError(plugin, f"building it gave a {type(block).__name__}, not a torch.nn.Module.")
        try:
            y = block(x)
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise PluginError(plugin, f"its forward on a tensor of shape {shape} raised {said(e)}; the contract "
                              "is (B, C, H, W) in, the same shape out.") from None
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
    if got != shape:
        raise PluginError(plugin, f"its forward maps a tensor of shape {shape} to {got}; the contract is "
                          "(B, C, H, W) in, a tensor of the same shape out.")


_RESOLVED: dict[str, Preset] = {}  # plugin mechanism name -> its checked preset


def mechanism(name: str, builtins: Mapping[str, Preset], base: str | Path | None = None) -> Preset:
    """The preset ``name`` names: a built-in, a ``module:attr`` plugin or an installed entry point's
    preset (checked once per process). KeyError when nothing has that name; PluginError when a
    plugin does but cannot be used."""
    if builtins.get(name) is not None:  # .get: the registry's `in` and [] would come back here
        return builtins.get(name)
    if name in _RESOLVED:
        return _RESOLVED[name]
    if is_spec(name):
        plugin = f"mechanism plugin {brief(name)}"
        preset = as_preset(load_object(name, "mechanism", base), name, plugin)
    else:
        found = _installed(name, builtins)
        if found is None:
            raise KeyError(name)
        preset, plugin = found
    check_block(preset, plugin)
    _RESOLVED[name] = preset
    return preset


# -- installed presets (entry points) -----------------------------------------------------------------

def _entry_points() -> list:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=GROUP), key=lambda ep: (ep.name, ep.value))


def _package(ep) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "an unnamed package"


def _from_entry_point(ep, builtins: Mapping[str, Preset]) -> list[tuple[Preset, str]]:
    """The presets an entry point declares, each with its plugin label; PluginError if it is broken."""
    package = _package(ep)
    plugin = f"mechanism plugin {ep.name!r} of package {package!r} ({ep.value})"
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - whatever importing the package raises
        raise PluginError(plugin, f"its entry point fails to load: {said(e)}.") from None
    many = isinstance(obj, (list, tuple))
    if many and not all(isinstance(o, Preset) for o in obj):
        raise PluginError(plugin, "its entry point names a list that holds something other than Preset records.")
    out = []
    for o in (obj if many else [obj]):
        name = o.name if isinstance(o, Preset) else ep.name
        label = plugin if name == ep.name else f"mechanism plugin {name!r} of package {package!r} ({ep.value})"
        if not _NAME.match(name):
            raise PluginError(label, "its name must be letters, digits, '_' and '-' (starting with a letter or '_').")
        if builtins.get(name) is not None:
            raise PluginError(label, f"{name!r} is the name of a built-in mechanism; give the plugin's preset "
                              "another name.")
        out.append((as_preset(o, name, label, package), label))
    return out


def _installed(name: str, builtins: Mapping[str, Preset]) -> tuple[Preset, str] | None:
    """The installed preset called ``name`` with its plugin label, or None. Entry points named
    ``name`` are loaded first; the others (which may hold a list of presets) only if needed. A
    broken entry point raises only when ``name`` is found nowhere else."""
    eps = _entry_points()
    broken = None
    for ep in sorted(eps, key=lambda ep: ep.name != name):
        try:
            found = _from_entry_point(ep, builtins)
        except PluginError as e:
            broken = broken or e
            continue
        for preset, label in found:
            if preset.name == name:
                return preset, label
    if broken is not None:
        raise broken
    return None


def installed_presets(builtins: Mapping[str, Preset]) -> list[Preset]:
    """Every preset installed packages declare (``package`` set), each checked against the
    contract, in name order; PluginError for a broken one or a name two packages declare."""
    seen: dict[str, tuple[Preset, str]] = {}
    for ep in _entry_points():
        for preset, label in _from_entry_point(ep, builtins):
            if preset.name in seen:
                raise PluginError(label, f"the name {preset.name!r} is also declared by package "
                                  f"{seen[preset.name][0].package!r}; rename one of them.")
            seen[preset.name] = (preset, label)
    for name, (preset, label) in seen.items():
        if name not in _RESOLVED:
            check_block(preset, label)
            _RESOLVED[name] = preset
    return [seen[n][0] for n in sorted(seen)]
