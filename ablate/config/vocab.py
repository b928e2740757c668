"""The shared vocabulary: a mechanism is a preset, a preset is a record of values for a block's factors.

A :class:`Factor` is one switch a study may flip (``gcn``, ``shared_qk``, ``K`` ...): its name,
its kind and what values are valid. Each block class declares its factors once, beside it, as
``FACTORS`` (built with the constructors below: :func:`switch`, :func:`integer`, :func:`number`,
:func:`choice` and the shared :func:`reduction`, :func:`nodes`, :func:`gcn`); a factor's default
is the block's own keyword default, so it is written in one place, the signature. A
:class:`Preset` binds a mechanism name to a block and to the values where the mechanism differs
from the block's defaults (``Preset("nonlocal_gaussian", NonLocalBlock, {"theta": False, ...})``);
``ablate/attention/presets.py`` is the table of them, naming each block by a :class:`BlockRef`
(where it is and its factors) so that the table imports no torch. Studies override factors by name; anything
a block does not declare is not a factor of its mechanisms, and asking for it is a validation
error. A block without ``FACTORS`` (a plugin's, :mod:`ablate.plugins`) gets them from its
constructor instead: :func:`derive_factors` reads each keyword argument's annotation (``bool``,
``int``, ``float``, ``Literal[...]``) and default.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, get_args, get_origin

if TYPE_CHECKING:  # a type only: reading a study imports no torch
    from torch import nn

from .errors import brief
from .lazy import named


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


class _BlockDefault:
    """The default a factor takes before a preset binds it: the block signature's."""

    def __repr__(self) -> str:
        return "<the block's keyword default>"


BLOCK_DEFAULT = _BlockDefault()


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
    # A factor that acts only when a trained model is evaluated (EMANet's T_eval): every valid value
    # builds the block with the same weights (names and shapes) and a different value changes what
    # it computes in evaluation. A study's eval_factors: takes such a factor on this word, without
    # building the block (study/evaluations.py; so loading a study imports no torch); any other
    # factor set there is checked by building the block with each value.
    evaluation: bool = False

    def valid(self) -> str:
        """Say in words which values are valid (used in error messages)."""
        if self.kind == "bool":
            return "true/false (on/off)"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = "" if self.minimum is None else f" >= {self.minimum:g}"
        return f"{'an integer' if self.kind == 'int' else 'a finite number'}{low}"

    def bind(self, default: Any) -> "Factor":
        """This factor with ``default`` (checked) as its default."""
        try:
            return dataclasses.replace(self, default=self.coerce(default))
        except ValueError as e:
            raise ValueError(f"default of factor {self.name!r}: {e}") from None

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


# -- the constructors a block's FACTORS are written with ------------------------------------------

def switch(name: str, help: str = "", added: bool = False, *, evaluation: bool = False) -> Factor:
    """An on/off factor."""
    return Factor(name, BLOCK_DEFAULT, "bool", help=help, added=added, evaluation=evaluation)


def integer(name: str, minimum: int | None = 1, help: str = "", added: bool = False, *,
            evaluation: bool = False) -> Factor:
    return Factor(name, BLOCK_DEFAULT, "int", minimum=minimum, help=help, added=added, evaluation=evaluation)


def number(name: str, minimum: float | None = 0.0, help: str = "", added: bool = False, *,
           evaluation: bool = False) -> Factor:
    """A finite float factor."""
    return Factor(name, BLOCK_DEFAULT, "float", minimum=minimum, help=help, added=added, evaluation=evaluation)


def choice(name: str, choices: tuple, help: str = "", added: bool = False, *, evaluation: bool = False) -> Factor:
    return Factor(name, BLOCK_DEFAULT, "choice", choices=tuple(choices), help=help, added=added, evaluation=evaluation)


def reduction(help: str, added: bool = False) -> Factor:
    """``reduction``: an inner width C/reduction (at least 4, :mod:`.widths`)."""
    return integer("reduction", 1, help, added)


def nodes(help: str = "number of nodes / bases") -> Factor:
    """``K``: the number of nodes, bases or descriptors of a low-rank block."""
    return integer("K", 1, help)


def gcn(help: str) -> Factor:
    """``gcn``: the reasoning step between projection and reprojection (off: skipped)."""
    return switch("gcn", help)


class SchemaError(TypeError):
    """A block whose factors cannot be read from its constructor; ``argument`` names the culprit."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


_KINDS = {bool: switch, int: lambda n: integer(n, None), float: lambda n: number(n, None)}


def _derived(param: inspect.Parameter) -> Factor:
    """The factor of one keyword argument, from its annotation; its default is bound later."""
    name, ann = param.name, param.annotation
    if param.default is inspect.Parameter.empty:
        raise SchemaError(name, f"argument {name!r} has no default; every factor needs one (the value a study "
                          f"starts from), e.g. {name}: int = 4")
    if ann is inspect.Parameter.empty:
        raise SchemaError(name, f"argument {name!r} has no annotation; annotate it (bool, int, float or "
                          "Literal['a', 'b']) or declare the block's FACTORS")
    if ann in _KINDS:
        return _KINDS[ann](name)
    if get_origin(ann) is Literal and get_args(ann):
        return choice(name, get_args(ann))
    return _unmapped(name, ann)


def _unmapped(name: str, ann: Any) -> Factor:
    shown = ann.__name__ if isinstance(ann, type) else brief(str(ann)).strip("'")
    raise SchemaError(name, f"argument {name!r} is annotated {shown}, which is not a factor kind; use bool, "
                      "int, float or Literal[...], or declare the block's FACTORS (ablate.config.vocab)")


def derive_factors(block: Callable[..., Any], leading: tuple[str, ...] = ("channels",)) -> tuple[Factor, ...]:
    """The factors of a block that declares no ``FACTORS``: one per keyword argument after the
    first (``channels``), its kind from the annotation (``bool`` a switch, ``int`` an integer,
    ``float`` a number, ``Literal[...]`` a choice); ``*args`` and ``**kwargs`` are not factors.
    Raises :class:`SchemaError` naming the argument that has no default or an annotation that
    maps to no kind. ``leading``: the positional arguments the caller passes (and their names
    for the message); a task generator's are ``("rng", "size")``, a backbone's none."""
    try:
        params = list(inspect.signature(block, eval_str=True).parameters.values())
    except (NameError, SyntaxError, TypeError, ValueError) as e:  # an annotation that cannot be evaluated
        raise SchemaError("", f"its signature cannot be read: {type(e).__name__}: {e}") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    head = params[:len(leading)]
    if len(head) < len(leading) or any(p.kind not in positional for p in head):
        raise SchemaError("", f"it does not take {', '.join(leading)} as its first positional argument"
                          f"{'s' if len(leading) > 1 else ''}: the contract is ({', '.join(leading)}, **factors)")
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(_derived(p) for p in params[len(leading):] if p.kind not in skip)


def block_factors(name: str, block: Callable[..., nn.Module]) -> tuple[Factor, ...]:
    """``block.FACTORS`` (or, without them, :func:`derive_factors`), each with the block's keyword
    default as its default, not yet checked (:func:`bind_factors` checks it). A declared factor the
    block does not take as a keyword with a default is a mistake in preset ``name`` and raises."""
    schema = tuple(block.FACTORS) if hasattr(block, "FACTORS") else derive_factors(block)
    params = inspect.signature(block).parameters
    out = []
    for f in schema:
        p = params.get(f.name)
        if p is None or p.default is inspect.Parameter.empty:
            raise TypeError(f"preset {name!r}: factor {f.name!r} is not a keyword argument with a default "
                            f"of {block.__name__}")
        out.append(dataclasses.replace(f, default=p.default))
    return tuple(out)


def bind_factors(name: str, block: Callable[..., nn.Module] | BlockRef, values: Mapping[str, Any]) -> tuple[Factor, ...]:
    """The block's factors (:func:`block_factors`, or a :class:`BlockRef`'s) with each default
    bound: ``values[name]`` where given, else the block's keyword default. A value for an
    undeclared factor is a mistake in the preset table and raises at import."""
    lazy = isinstance(block, BlockRef)
    factors = block.factors if lazy else block_factors(name, block)
    declared = {f.name for f in factors}
    unknown = sorted(set(values) - declared)
    if unknown:
        raise TypeError(f"preset {name!r}: {block.name if lazy else block.__name__} declares no factor {', '.join(map(repr, unknown))}; "
                        f"its factors: {', '.join(sorted(declared)) or 'none'}")
    return tuple(f.bind(values.get(f.name, f.default)) for f in factors)


@dataclass(frozen=True)
class BlockRef:
    """A block class named by where it is, with the factors :func:`block_factors` reads from it, so
    that a preset's factors are known, and a study checked, without importing the block's module
    (the built-in blocks import torch, which a command that only reads a study never needs).

    ``check`` names the block's ``check_args`` (``module:qualified.name``, in a module that
    imports no torch; "" when it has none). The built-in presets' references come from
    :mod:`ablate.attention.manifest`; :attr:`Preset.block` imports the class on first use.
    """

    module: str
    name: str  # the class's name in the module
    factors: tuple[Factor, ...]
    check: str = ""

    def load(self) -> Callable[..., nn.Module]:
        """The block class (importing its module)."""
        return named(f"{self.module}:{self.name}")

    def check_args(self, args: dict[str, Any]) -> None:
        """The block's ``check_args(args)``, imported from ``check`` alone; nothing when there is none."""
        if self.check:
            named(self.check)(args)


@dataclass(frozen=True)
class Preset:
    """A named mechanism: a block class and the values where it differs from the block's defaults.

    ``source`` is the block class, or a :class:`BlockRef` to it (the built-in table's, so that
    naming a preset imports no torch); :attr:`block` is the class either way. ``factors`` (the
    block's ``FACTORS`` with this preset's defaults) is derived; ``family`` is set by the table
    (:mod:`.presets`) from the group the preset sits in; ``module`` is where the block's code is;
    ``package`` names the installed distribution of a plugin's preset.
    """

    name: str
    source: Callable[..., nn.Module] | BlockRef
    values: Mapping[str, Any] = field(default_factory=dict)
    paper: str = "-"
    summary: str = ""
    family: str = ""  # "none" | "pairwise" | "lowrank" | "gating"
    fixed: dict = field(default_factory=dict)  # block kwargs bound by the preset, not switchable
    package: str = ""  # the installed distribution a plugin preset comes from ("" for built-ins)
    factors: tuple[Factor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "factors", bind_factors(self.name, self.source, self.values))

    @property
    def block(self) -> Callable[..., nn.Module]:
        """The block class (a :class:`BlockRef`'s imported on first use)."""
        return self.source.load() if isinstance(self.source, BlockRef) else self.source

    @property
    def module(self) -> str:
        """The module that holds the block's code (``ablate.attention.non_local``)."""
        return self.source.module if isinstance(self.source, BlockRef) else self.source.__module__

    @property
    def block_name(self) -> str:
        """The block class's name in :attr:`module` (``NonLocalBlock``), without importing it."""
        return self.source.name if isinstance(self.source, BlockRef) else self.source.__name__

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
        # combinations the block cannot build
        check = self.source.check_args if isinstance(self.source, BlockRef) else getattr(self.source, "check_args", None)
        if check is not None:
            check(args)
        return args

    def identity(self, args: dict[str, Any]) -> dict[str, Any]:
        """The resolved arguments that identify a cell: all of them, but added factors at their default."""
        added = {f.name: f.default for f in self.factors if f.added}
        return {k: v for k, v in args.items() if not (k in added and v == added[k])}

    def build(self, channels: int, **overrides: Any) -> nn.Module:
        return self.block(channels, **self.fixed, **self.resolve(overrides))
