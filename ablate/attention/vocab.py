"""The shared vocabulary: a mechanism is a preset, a preset is a typed record of slots.

A :class:`Factor` is one switch a study may flip (``gcn``, ``shared_qk``, ``K`` ...):
its name, its default and what values are valid. A :class:`Preset` binds a
mechanism name to a block class and the factors that class exposes. Studies
override factors by name; anything a preset does not list is not a factor of
that mechanism, and asking for it is a validation error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import brief


class FactorConflict(ValueError):
    """A combination of factor values a block cannot build; ``key`` names the factor to blame."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _finite_number(value: Any) -> bool:
    """An int or float that is a finite float (.nan, .inf and ints past float's range are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 2 ** 1023


@dataclass(frozen=True)
class Factor:
    """One switch of a mechanism: a name, a default and its valid values."""

    name: str
    default: Any
    kind: str  # "bool" | "int" | "float" | "choice"
    choices: tuple = ()
    minimum: float | None = None
    help: str = ""
    # A factor added to a preset after results were stored: at its default (which must rebuild
    # the block exactly as before) it is left out of a cell's identity, so those results still
    # match their cells. See Preset.identity.
    added: bool = False

    def valid(self) -> str:
        """Say in words which values are valid (used in error messages)."""
        if self.kind == "bool":
            return "true/false (on/off)"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = "" if self.minimum is None else f" >= {self.minimum:g}"
        return f"{'an integer' if self.kind == 'int' else 'a finite number'}{low}"

    def coerce(self, value: Any) -> Any:
        """Return ``value`` in canonical form or raise ``ValueError`` saying what is valid."""
        ok = True
        if self.kind == "bool":
            if isinstance(value, str) and value.lower() in ("on", "off", "true", "false", "yes", "no"):
                value = value.lower() in ("on", "true", "yes")
            ok = isinstance(value, bool)
        elif self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = _finite_number(value)
            value = float(value) if ok else value
        elif self.kind == "choice":
            ok = value in self.choices
        if ok and self.minimum is not None and self.kind in ("int", "float"):
            ok = value >= self.minimum
        if not ok:
            raise ValueError(f"{brief(value)} is not valid for {self.name}: expected {self.valid()}")
        return value


@dataclass(frozen=True)
class Preset:
    """A named mechanism: a block class bound to its factors and the paper's defaults."""

    name: str
    family: str  # "none" | "pairwise" | "lowrank" | "gating"
    block: Callable[..., nn.Module]
    factors: tuple[Factor, ...]
    paper: str
    summary: str
    fixed: dict = field(default_factory=dict)  # block kwargs bound by the preset, not switchable

    @property
    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.factors}

    def factor(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        have = ", ".join(f.name for f in self.factors) or "none"
        raise KeyError(f"mechanism {self.name!r} has no factor {name!r}; its factors are: {have}")

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults with ``overrides`` applied and checked; raises KeyError/ValueError."""
        args = self.defaults
        for key, value in overrides.items():
            args[key] = self.factor(key).coerce(value)
        check = getattr(self.block, "check_args", None)  # combinations the block cannot build
        if check is not None:
            check(args)
        return args

    def identity(self, args: dict[str, Any]) -> dict[str, Any]:
        """The resolved arguments that identify a cell: all of them, but added factors at their default."""
        added = {f.name: f.default for f in self.factors if f.added}
        return {k: v for k, v in args.items() if not (k in added and v == added[k])}

    def build(self, channels: int, **overrides: Any) -> nn.Module:
        return self.block(channels, **self.fixed, **self.resolve(overrides))
