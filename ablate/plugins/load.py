"""Plugins by ``module:attr``: making the study's folder importable, importing the named object,
checking what the name refers to before anything calls it (:func:`check_kind`: an ``nn.Module``
subclass or a registered function, so ``sys:exit`` or ``os:_exit`` never runs), reading a task's or
backbone's options from its annotated keyword arguments, and the one error every broken plugin
raises (:class:`PluginError`).

The study's folder and then the current directory are appended to ``sys.path`` (appended, so an
installed package of the same name wins) and recorded in ``$ABLATE_PLUGIN_PATH`` for worker and
DDP processes; :mod:`ablate.plugins` says why both. Used by :mod:`ablate.plugins` (mechanisms),
:mod:`ablate.plugins.tasks` and :mod:`ablate.plugins.backbones`.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from ..config.vocab import Factor, SchemaError, derive_factors
from ..config.errors import StudyError, brief

PATH_ENV = "ABLATE_PLUGIN_PATH"  # folders appended to sys.path for module:attr plugins (os.pathsep)
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


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


def said(e: BaseException) -> str:
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
        raise PluginError(plugin, f"importing module {module_name!r} failed: {said(e)}.") from None
    except Exception as e:  # noqa: BLE001 - whatever the module's own code raises
        raise PluginError(plugin, f"importing module {module_name!r} failed: {said(e)}.") from None
    except SystemExit as e:  # the module's own code called sys.exit: not the end of ablate
        raise PluginError(plugin, f"importing module {module_name!r} called sys.exit({e.code!r}).") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")
                           and v.__module__ == module.__name__)
            raise PluginError(plugin, f"module {module_name!r} has no attribute {attr!r}; its classes: "
                              f"{', '.join(names[:20]) or 'none'}.")
        obj = getattr(obj, part)
    return obj


# -- what a module:attr may name: resolved without calling anything -----------------------------------

BUILDER_ATTR = "__ablate_builder__"  # set by :func:`builder` on a function registered as a plugin


def builder(fn):
    """Register a function that builds a block or a backbone as a plugin (a decorator): such a
    function may be named by ``module:attr`` although it is no ``nn.Module`` class."""
    if not inspect.isfunction(fn):
        raise TypeError(f"ablate.plugins.builder registers a function defined with def, got {type(fn).__name__}")
    setattr(fn, BUILDER_ATTR, True)
    return fn


def describe(obj: Any) -> str:
    """What an object is, in words, without calling it: 'the built-in function sys.exit', 'the
    class subprocess.Popen', 'the function shutil.rmtree', '3', 'a dict'."""
    name = f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    if inspect.isclass(obj):
        return f"the class {name}"
    if inspect.isbuiltin(obj) or type(obj).__name__ in ("builtin_function_or_method", "method-wrapper"):
        return f"the built-in function {name}"
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return f"the function {name}"
    if isinstance(obj, (str, int, float)) and not isinstance(obj, bool):
        return brief(obj)
    return f"a {type(obj).__name__}"


def _from_stdlib(obj: Any) -> bool:
    top = (getattr(obj, "__module__", None) or "").split(".")[0]
    return top in getattr(sys, "stdlib_module_names", ()) or top in ("builtins", "")


def check_kind(obj: Any, plugin: str, first: str, what: str) -> None:
    """Refuse, before anything calls it, what a ``module:attr`` names unless it is a subclass
    of ``torch.nn.Module``, a function registered with :func:`builder`, or a function defined
    outside the standard library whose first parameter is ``first`` (the contract's
    ``Block(channels, ...)`` / ``Backbone(...)``): ``sys:exit``, ``os:_exit``, ``os:system``,
    ``subprocess:Popen`` or ``shutil:rmtree`` never run. ``what``: the plugin's kind in words."""
    from torch import nn

    if inspect.isclass(obj):
        if issubclass(obj, nn.Module):
            return
        raise PluginError(plugin, f"it is {describe(obj)}, not a torch.nn.Module subclass; {what}.")
    if inspect.isfunction(obj) and getattr(obj, BUILDER_ATTR, False) is True:
        return
    if inspect.isfunction(obj) and not _from_stdlib(obj):
        params = list(inspect.signature(obj).parameters)
        if first is None or (params and params[0] == first):
            return
        raise PluginError(plugin, f"it is {describe(obj)}, whose first argument is "
                          f"{repr(params[0]) if params else 'missing'}, not {first!r}; {what}.")
    raise PluginError(plugin, f"it is {describe(obj)}, not a block class or a function registered as a plugin; "
                      f"{what}.")


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


def option_values(raw: Mapping, options: dict[str, Factor], base: dict, where: str, prefix: str,
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
