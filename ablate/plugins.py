"""Plugins: a user's own attention block, task or backbone, in the same tables as the built-ins.

Three kinds, each named in a study by an importable ``module:attribute`` (``my_package.blocks:
GatedContext``), and mechanisms also by name once a package declares them:

* **Mechanism** (``model.mechanism`` or a ``mechanism`` factor value): a block class (or a
  function building one) called as ``Block(channels, **factors)`` whose module maps ``(B, C, H,
  W)`` to ``(B, C, H, W)``; or a :class:`~ablate.attention.vocab.Preset` of one. Its factors are
  its ``FACTORS`` (the built-ins' ``Factor`` records) or, without them, its constructor's annotated
  keyword arguments with defaults (``bool``, ``int``, ``float``, ``Literal[...]``;
  :func:`ablate.attention.vocab.derive_factors`). An installed package declares presets under the
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
point fails to load) raises :class:`PluginError`: a :class:`~ablate.errors.StudyError` naming the
plugin and the problem, which the commands print as one paragraph with exit status 2; the study
loader re-raises it naming the file and key.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .attention.vocab import Factor, Preset, SchemaError, bind_factors, derive_factors
from .errors import StudyError, brief

GROUP = "ablate.mechanisms"  # the entry-point group of installed mechanism presets
PATH_ENV = "ABLATE_PLUGIN_PATH"  # folders appended to sys.path for module:attr plugins (os.pathsep)
PLUGIN_FAMILY = "plugin"  # the family of a plugin preset that names none of ablate's
CHECK_CHANNELS = 32  # the contract check's channels (the small backbone's default width)
CHECK_SIDE = 8  # ... and its feature map side
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


class PluginError(StudyError):
    """A plugin that cannot be used: ``plugin`` says which (its spec or entry point), ``problem`` why."""

    def __init__(self, plugin: str, problem: str):
        self.plugin, self.problem = plugin, problem
        super().__init__(plugin, "", problem)

    def at(self, where: str, key: str) -> StudyError:
        """The same problem as a study file's error at ``key``."""
        return StudyError(where, key, f"{self.plugin}: {self.problem}")


def is_spec(name: Any) -> bool:
    """Whether ``name`` names a plugin by ``module:attr`` (built-in names never hold a colon)."""
    return isinstance(name, str) and ":" in name


def _said(e: BaseException) -> str:
    """An exception in one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


# -- importing module:attr ---------------------------------------------------------------------------

def make_importable(base: str | Path | None = None) -> list[str]:
    """Append the study's folder ``base`` (when given), the current directory and the folders in
    ``$ABLATE_PLUGIN_PATH`` to ``sys.path`` (those not on it yet), and record the first two in
    ``$ABLATE_PLUGIN_PATH`` for child processes. Returns the folders searched, in order."""
    recorded = [f for f in os.environ.get(PATH_ENV, "").split(os.pathsep) if f]
    folders = ([str(Path(base).resolve())] if base is not None else []) + [os.getcwd()] + recorded
    folders = list(dict.fromkeys(folders))
    for folder in folders:
        if folder not in sys.path:
            sys.path.append(folder)
    os.environ[PATH_ENV] = os.pathsep.join(dict.fromkeys(recorded + folders[:2 if base is not None else 1]))
    return folders


def load_object(spec: str, what: str, base: str | Path | None = None) -> Any:
    """The object ``spec`` (``module:attr``, attr possibly dotted) names; :class:`PluginError`
    saying why when the module does not import or has no such attribute."""
    plugin = f"{what} plugin {brief(spec)}"
    if not _SPEC.match(spec):
        raise PluginError(plugin, "expected module:attribute, both Python names (dotted where nested), e.g. "
                          "my_package.blocks:MyAttention.")
    module_name, attr = spec.split(":")
    folders = make_importable(base)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name) and module_name[len(e.name):][:1] in ("", "."):
            raise PluginError(plugin, f"there is no module {e.name!r}: it is not installed and not in "
                              f"{' or '.join(folders[:2])}; install its package (pip install -e ...) or run "
                              "from the folder that holds it.") from None
        raise PluginError(plugin, f"importing module {module_name!r} failed: {_said(e)}.") from None
    except Exception as e:  # noqa: BLE001 - whatever the module's own code raises
        raise PluginError(plugin, f"importing module {module_name!r} failed: {_said(e)}.") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")
                           and v.__module__ == module.__name__)
            raise PluginError(plugin, f"module {module_name!r} has no attribute {attr!r}; its classes: "
                              f"{', '.join(names[:20]) or 'none'}.")
        obj = getattr(obj, part)
    return obj


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
        return Preset(name, obj, summary=_summary(obj), family=PLUGIN_FAMILY, package=package)
    except SchemaError as e:
        raise PluginError(plugin, f"its factors cannot be read from {getattr(obj, '__name__', 'it')}: {e}.") from None
    except (TypeError, ValueError) as e:  # bind_factors: FACTORS that do not match the signature
        raise PluginError(plugin, f"{e}.") from None


def check_block(preset: Preset, plugin: str, channels: int = CHECK_CHANNELS, side: int = CHECK_SIDE) -> None:
    """The contract: ``preset.build(channels)`` is an ``nn.Module`` mapping a ``(2, C, side, side)``
    tensor to one of the same shape. Run without gradients; the random generators' state is
    restored afterwards, so a check never moves a trial's draws."""
    shape = (2, channels, side, side)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            block = preset.build(channels)
        except Exception as e:  # noqa: BLE001 - the plugin's own constructor
            raise PluginError(plugin, f"building it as Block({channels}) with its default factors raised "
                              f"{_said(e)}.") from None
        if not isinstance(block, nn.Module):
            raise PluginError(plugin, f"building it gave a {type(block).__name__}, not a torch.nn.Module.")
        try:
            y = block(x)
        except Exception as e:  # noqa: BLE001
            raise PluginError(plugin, f"its forward on a tensor of shape {shape} raised {_said(e)}; the contract "
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
        raise PluginError(plugin, f"its entry point fails to load: {_said(e)}.") from None
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


# -- options of tasks and backbones (their keyword arguments, as a mechanism's factors) ---------------

def options_of(obj: Any, plugin: str, leading: tuple[str, ...]) -> dict[str, Factor]:
    """The options of a task or backbone plugin: its annotated keyword arguments after
    ``leading``, each bound to its default (PluginError naming the argument otherwise)."""
    if not callable(obj):
        raise PluginError(plugin, f"it is a {type(obj).__name__}, not a function or class.")
    try:
        schema = derive_factors(obj, leading)
        params = inspect.signature(obj).parameters
        return {f.name: f.bind(params[f.name].default) for f in schema}
    except SchemaError as e:
        raise PluginError(plugin, f"its options cannot be read from {getattr(obj, '__name__', 'it')}: {e}.") from None
    except ValueError as e:  # a default its own annotation refuses (a Literal without it, ...)
        raise PluginError(plugin, f"{e}.") from None


def _option_values(raw: Mapping, options: dict[str, Factor], base: dict, where: str, prefix: str,
                   fixed: tuple[str, ...]) -> dict:
    """``base`` with the options in ``raw`` checked by their factors (keys in ``fixed`` skipped)."""
    values = dict(base)
    for k, v in raw.items():
        if k in fixed:
            continue
        if k not in options:
            valid = ", ".join([*fixed, *options]) or "none"
            raise StudyError(where, f"{prefix}{k}", f"unknown key; valid keys here are: {valid}.")
        try:
            values[k] = options[k].coerce(v)
        except ValueError as e:
            raise StudyError(where, f"{prefix}{k}", f"{e}.") from None
    return values


# -- tasks --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """``data:`` of a task plugin: the generator's spec, the split sizes, the seed and its options."""

    name: str
    size: int = 32
    train_images: int = 1536
    val_images: int = 384
    seed: int = 0
    options: tuple = ()  # ((option, value), ...) in the generator's order

    _rules = {"size": 8, "train_images": 1, "val_images": 1, "seed": 0}  # key -> minimum

    @property
    def task(self) -> str:
        """The generator's spec (what ``SceneConfig.task`` says of a synthetic task)."""
        return self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "train_images": self.train_images,
                "val_images": self.val_images, "seed": self.seed, **dict(self.options)}


def load_task(name: str, base: str | Path | None = None) -> tuple[Callable, int, dict[str, Factor]]:
    """(generator, class count, options) of the task plugin ``name`` (``module:attr``)."""
    plugin = f"task plugin {brief(name)}"
    make = load_object(name, "task", base)
    options = options_of(make, plugin, ("rng", "size"))
    classes = getattr(make, "num_classes", None)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise PluginError(plugin, f"it needs an int attribute num_classes >= 2 (the labels' classes), has "
                          f"{brief(classes) if classes is not None else 'none'}; set e.g. {name.split(':')[1]}."
                          "num_classes = 3.")
    bad = sorted(set(options) & set(TaskSpec._rules))
    if bad:
        raise PluginError(plugin, f"its option {bad[0]!r} is a key ablate sets itself (size, train_images, "
                          "val_images, seed); rename it.")
    return make, classes, options


def task_spec(raw: Mapping, where: str, prefix: str = "data.", base: TaskSpec | None = None) -> TaskSpec:
    """Validate ``data:`` of a task plugin (or one ``data.X`` factor over ``base``) and draw one
    image to check the contract; StudyError naming the key."""
    name = raw.get("name", base.name if base else None)
    if not is_spec(name):
        raise StudyError(where, prefix + "name", f"expected a task plugin as module:attr, got {brief(name)}.")
    try:
        make, classes, options = load_task(name, Path(where).parent)
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    spec = base or TaskSpec(name, options=tuple((k, f.default) for k, f in options.items()))
    fields = {}
    for k, minimum in TaskSpec._rules.items():
        v = raw.get(k, getattr(spec, k))
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise StudyError(where, prefix + k, f"expected an integer >= {minimum}, got {brief(v)}.")
        fields[k] = v
    values = _option_values(raw, options, dict(spec.options), where, prefix, ("name", *TaskSpec._rules))
    spec = TaskSpec(name, **fields, options=tuple(values.items()))
    try:
        check_image(make(*_rng(spec, 0), **values), spec.size, classes, f"task plugin {brief(name)}")
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    except Exception as e:  # noqa: BLE001 - the generator's own code
        raise StudyError(where, prefix + "name", f"task plugin {brief(name)}: drawing an image raised "
                         f"{_said(e)}.") from None
    return spec


def _rng(spec: TaskSpec, split: int):
    return np.random.default_rng([spec.seed, split]), spec.size


def check_image(pair: Any, size: int, classes: int, plugin: str = "the task") -> None:
    """The task contract for one drawn pair: a (3, S, S) float image and an (S, S) int label
    with values below ``classes`` or 255."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise PluginError(plugin, "it must return a pair (image, label).")
    image, label = np.asarray(pair[0]), np.asarray(pair[1])
    if image.shape != (3, size, size) or image.dtype.kind != "f":
        raise PluginError(plugin, f"its image is {image.dtype} of shape {image.shape}; expected float of shape "
                          f"(3, {size}, {size}).")
    if label.shape != (size, size) or label.dtype.kind not in "iu":
        raise PluginError(plugin, f"its label is {label.dtype} of shape {label.shape}; expected integers of shape "
                          f"({size}, {size}).")
    wrong = np.unique(label[(label != 255)])
    wrong = wrong[(wrong < 0) | (wrong >= classes)]
    if wrong.size:
        raise PluginError(plugin, f"its label holds {int(wrong[0])}, outside 0 .. {classes - 1} (num_classes) "
                          "and not 255 (ignored).")


def task_spec_from_dict(data: Mapping) -> TaskSpec:
    """The :class:`TaskSpec` of a trial config's ``data`` (``TaskSpec.as_dict``'s inverse)."""
    fixed = {k: data[k] for k in TaskSpec._rules}
    return TaskSpec(data["name"], **fixed, options=tuple((k, v) for k, v in data.items()
                                                         if k != "name" and k not in fixed))


@functools.lru_cache(maxsize=4)
def _splits(spec: TaskSpec):
    make, _, _ = load_task(spec.name)
    out = []
    for split, count in ((0, spec.train_images), (1, spec.val_images)):
        rng, size = _rng(spec, split)
        pairs = [make(rng, size, **dict(spec.options)) for _ in range(count)]
        images = torch.from_numpy(np.stack([np.asarray(p[0], dtype=np.float32) for p in pairs]))
        labels = torch.from_numpy(np.stack([np.asarray(p[1]) for p in pairs]).astype(np.int64))
        out.append((images, labels))
    return tuple(out)


def task_data(data: Mapping) -> tuple[tuple, tuple, int]:
    """(train (images, labels), val (images, labels), class count) of a trial config's task
    plugin ``data``: images (N, 3, S, S) float32, labels (N, S, S) int64; each split from its own
    stream of the spec's seed (train [seed, 0], val [seed, 1]), so the val split does not depend
    on the trial seed. Cached per process and spec."""
    spec = task_spec_from_dict(data)
    train, val = _splits(spec)
    return train, val, load_task(spec.name)[1]


# -- backbones ----------------------------------------------------------------------------------------

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
        options = options_of(cls, plugin, ())
        if {"name", "options"} & set(options):
            raise PluginError(plugin, "its keyword arguments may not be called name or options (ablate's own "
                              "keys of model.backbone); rename them.")
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    start = dict(base.options) if base else {k: f.default for k, f in options.items()}
    spec = BackboneSpec(name, tuple(_option_values(raw, options, start, where, prefix, ("name",)).items()))
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
    plugin = f"backbone plugin {brief(name)}"
    side = 32
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            net = build_backbone({"name": name, **dict(options)})
        except Exception as e:  # noqa: BLE001 - the plugin's constructor
            raise PluginError(plugin, f"building it with {dict(options)} raised {_said(e)}.") from None
        channels, stride = getattr(net, "out_channels", None), getattr(net, "stride", None)
        if not isinstance(net, nn.Module) or not all(isinstance(v, int) and v >= 1 for v in (channels, stride)):
            raise PluginError(plugin, "it must build a torch.nn.Module with int attributes out_channels and stride "
                              f"(>= 1); got a {type(net).__name__} with out_channels={brief(channels)}, "
                              f"stride={brief(stride)}.")
        try:
            y = net(torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0)))
        except Exception as e:  # noqa: BLE001
            raise PluginError(plugin, f"its forward on a (2, 3, {side}, {side}) image batch raised "
                              f"{_said(e)}.") from None
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
