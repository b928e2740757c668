"""The one parser of a study file's sections: a mapping's keys checked against what is valid there,
each value checked against its record's field (its type, and the bounds in the record's ``_rules``).
Every section of :mod:`ablate.study.sections` reads its values through these; each mistake is a
:class:`~ablate.config.errors.StudyError` naming the file and the key."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .errors import StudyError, brief
from .trial import fields_dict


BACKBONE_INITS = ("scratch", "pretrained_synthetic")  # model.backbone.init of small_cnn


@dataclass(frozen=True)
class BackboneSpec:
    """The small backbone of a study's ``model.backbone`` (the ResNet's spec lives with its model).
    ``init``: ``scratch`` (random, seeded) or ``pretrained_synthetic`` (the weights of the synthetic
    pretext, :mod:`ablate.models.pretext`); ``freeze``: its weights and BN statistics stay as built."""

    name: str = "small_cnn"
    width: int = 32
    depth: int = 3
    init: str = "scratch"
    freeze: bool = False

    _rules = {"width": ("int", 1), "depth": ("int", 2)}
    _added = ("init", "freeze")  # settings added after the first studies: in a key only when not at default

    def identity(self) -> dict:
        """The spec as a cell's key and a trial's config hold it: ``init`` and ``freeze`` only when
        not at their defaults, so every study written before them keeps its keys."""
        base = BackboneSpec()
        return {k: v for k, v in fields_dict(self).items() if k not in self._added or v != getattr(base, k)}


def parse_small_backbone(raw: dict, where: str, prefix: str, base=None) -> BackboneSpec:
    """``model.backbone`` of ``small_cnn`` (or a ``backbone.X`` factor over ``base``), ``init`` checked."""
    spec = parse_spec(BackboneSpec, raw, where, prefix, base)
    if spec.init not in BACKBONE_INITS:
        raise StudyError(where, prefix + "init", f"unknown backbone init {brief(spec.init)}; valid: scratch (random "
                         "weights from the trial's seed) or pretrained_synthetic (the small_cnn trained once on the "
                         "synthetic appearance pretext, cached under $ABLATE_CACHE/pretext; docs/study_files.md).")
    return spec


def spec_identity(spec) -> dict:
    """A backbone spec's dict as keys and trial configs hold it (:meth:`BackboneSpec.identity`; any
    other spec: all its fields)."""
    return spec.identity() if isinstance(spec, BackboneSpec) else fields_dict(spec)


def expect_mapping(obj, where: str, key: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise StudyError(where, key, f"expected a mapping (key: value lines), got {type(obj).__name__} {brief(obj)}.")
    return obj


def unknown_keys(obj: dict, allowed, where: str, prefix: str) -> None:
    for k in obj:
        if k not in allowed:
            raise StudyError(where, f"{prefix}{k}", f"unknown key; valid keys here are: {', '.join(allowed)}.")


def typed_value(value, kind: str, minimum, where: str, key: str, strict: bool = False, maximum=None):
    """``value`` as an int or a finite float, checked against ``minimum`` (and ``maximum``)."""
    ok = (kind == "int" and isinstance(value, int) and not isinstance(value, bool)) or \
         (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise StudyError(where, key, f"expected {'an integer' if kind == 'int' else 'a number'}, got {brief(value)}.")
    if kind == "float" and not (math.isfinite(value) if isinstance(value, float) else abs(value) < 2 ** 1023):
        raise StudyError(where, key, f"{brief(value)} is not a finite number; give a finite one.")
    value = float(value) if kind == "float" else value
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = ">" if strict else ">="
        raise StudyError(where, key, f"{brief(value)} is out of range: it must be {bound} {minimum:g}.")
    if maximum is not None and value > maximum:
        raise StudyError(where, key, f"{brief(value)} is out of range: it must be <= {maximum:g}.")
    return value


def parse_spec(cls, raw: dict, where: str, prefix: str, base=None):
    """Build a frozen spec dataclass from ``raw``, checking keys and types against its defaults."""
    base = base or cls()
    allowed = [f.name for f in fields(cls)]
    unknown_keys(raw, allowed, where, prefix)
    rules = getattr(cls, "_rules", {})
    values = fields_dict(base)
    for k, v in raw.items():
        default = values[k]
        if k in rules:
            v = typed_value(v, *rules[k][:2], where, prefix + k, *rules[k][2:])
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise StudyError(where, prefix + k, f"expected true or false, got {brief(v)}.")
        elif isinstance(default, int):
            v = typed_value(v, "int", 0, where, prefix + k)
        elif isinstance(default, float):
            v = typed_value(v, "float", 0.0, where, prefix + k)
        elif isinstance(default, str) and not isinstance(v, str):
            raise StudyError(where, prefix + k, f"expected a string, got {brief(v)}.")
        values[k] = v
    return cls(**values)


def unknown_name(what: str, value) -> str:
    """"unknown metric 'x'" for a string; "expected a metric name, got a list of 3 items" otherwise."""
    return f"unknown {what} {brief(value)}" if isinstance(value, str) else f"expected a {what} name, got {brief(value)}"
