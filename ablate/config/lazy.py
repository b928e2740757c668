"""Names a package exports but imports on first use (PEP 562's module ``__getattr__``): a package
whose torch modules export names beside torch-free ones (``attention``, ``costs``, ``doctor``,
``data``) can be imported for the torch-free ones without importing torch; and an object named by
where it is (``module:attr``, :func:`named`), imported when it is used."""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], object]:
    """A ``__getattr__`` for ``package`` that imports each name of ``where`` from its module (a
    name relative to the package, e.g. ``".blocks"``) when first asked for, and keeps it in the
    package so that later reads do not come back here."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def named(ref: str):
    """The object ``ref`` (``module:attr``, attr possibly dotted) names, importing its module. For
    the harness's own references (a preset's block, a backbone's class); a user's plugin goes through
    :func:`ablate.plugins.load.load_object`, which says what is wrong with a bad one."""
    module, attr = ref.split(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
