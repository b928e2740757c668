"""The caps of smoke mode as command-line overrides (:func:`smoke_overrides`): one seed, one epoch
or two steps, 2 training batches and 1 validation batch, keeping cells that vary these apart.
``ablate/run/smoke.py`` runs them; ``ablate/study/overrides.py`` applies them. This module imports neither,
so the two depend on it one way."""
from __future__ import annotations

import json

from .errors import StudyError

TRAIN_BATCHES = 2  # training batches per smoke trial
ROUND_KEYS = {"epochs": 1, "iterations": 2}  # train key -> its smoke value (the smallest of a factor's)


def _seq(values, first: int, step: int = 1) -> list:
    """Small distinct replacements of ``values``, in the order of the originals."""
    order = sorted(set(values), key=lambda v: v if isinstance(v, (int, float)) else 0)  # validated: numbers
    rank = {v: i for i, v in enumerate(order)}
    return [first + step * rank[v] for v in values]


def _capped(values, cap: int) -> list:
    """``values`` (positive integers; 0 means all) capped at ``cap`` and kept apart: in increasing
    order each becomes ``min(value, cap)``, or one more than the one below it where that is larger."""
    order = sorted(set(values), key=lambda v: v if v > 0 else float("inf"))
    new, last = {}, 0
    for v in order:
        last = new[v] = max(min(v, cap) if v > 0 else cap, last + 1)
    return [new[v] for v in values]


def _batch_size(raw: dict) -> int:
    """The largest global batch the study trains with (its train.batch_size and any factor's)."""
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    sizes = [train.get("batch_size", 32)]
    factors = raw.get("factors") if isinstance(raw.get("factors"), dict) else {}
    spec = factors.get("train.batch_size")
    if isinstance(spec, dict):  # a search: its choices, or the high end of its range
        spec = spec.get("choices", [spec.get("high", 0)])
    sizes += spec if isinstance(spec, list) else []
    sizes += [r.get("train.batch_size", 0) for r in raw.get("references") or [] if isinstance(r, dict)]
    return max([s for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0] or [32])


def _data_caps(raw: dict) -> dict:
    """data key -> smoke value: 2 training batches, 1 validation batch (real data: 1 image per device)."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    batch = _batch_size(raw)
    trainer = raw.get("trainer") if isinstance(raw.get("trainer"), dict) else {}
    devices = trainer.get("devices", 1) if isinstance(trainer.get("devices", 1), int) else 1
    if data.get("name", "synthetic") == "synthetic":
        return {"train_images": TRAIN_BATCHES * batch, "val_images": batch}
    return {"train_images": TRAIN_BATCHES * batch, "val_images": max(1, devices)}


def smoke_overrides(raw: dict, source: str = "study") -> list[str]:
    """The overrides (``KEY=VALUE``) that make ``raw``, the mapping of the study file ``source``, a
    smoke run."""
    if not isinstance(raw, dict):
        return []
    factors = raw.get("factors") if isinstance(raw.get("factors"), dict) else {}
    refs = [r if isinstance(r, dict) else {} for r in raw.get("references") or []]
    if "train.val_interval" in factors or any("train.val_interval" in r for r in refs):
        raise StudyError(source, "factors.train.val_interval", "smoke mode cannot shrink a study that varies "
                         "train.val_interval (its values must divide train.iterations); smoke-test a copy of "
                         "the study without that factor.")
    seeds = raw.get("seeds", 3)
    out = [f"seeds=[{seeds[0] if isinstance(seeds, list) and seeds else 0}]"]
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    rounds = "iterations" if train.get("iterations") else "epochs"
    small = {f"train.{rounds}": ROUND_KEYS[rounds], **{f"data.{k}": v for k, v in _data_caps(raw).items()}}
    for key, value in small.items():
        new = _smaller(raw, key, value)
        section, _, name = key.partition(".")
        base = _base(raw, section, name)
        out.append(f"{key}={new.get(base, value)}")
        if key in factors:
            out.append(f"factors.{key}={json.dumps(_shrunk(factors[key], new, value))}")
        out += [f"references[{i}].{key}={new[r[key]]}" for i, r in enumerate(refs) if key in r]
    if train.get("val_interval"):
        out.append("train.val_interval=0")
    if isinstance(raw.get("search"), dict):
        out.append("search.n_trials=1")
        search = raw["search"]  # a point search: one point on one seed, no confirmation, no pruning between seeds
        out += [f"search.{k}={v}" for k, v in (("seeds_per_point", 1), ("confirm", "null"), ("wilcoxon", "null"))
                if k in search]
    return out


def _base(raw: dict, section: str, name: str):
    """The study's own value of ``section.name`` (the default where the file leaves it out)."""
    given = raw.get(section) if isinstance(raw.get(section), dict) else {}
    if name in given:
        return given[name]
    if section == "train":
        return {"epochs": 10, "iterations": 0}[name]  # as ablate.study.TrainSpec
    return {"train_images": 1536, "val_images": 384}[name] if given.get("name", "synthetic") == "synthetic" else 0


def _smaller(raw: dict, key: str, small: int) -> dict:
    """Every value the study gives ``key`` (its own, its grid's, its references') -> its smoke
    value: rounds become small, 2 small, ... in their order; sizes are capped at ``small``, kept
    apart where capping would merge two."""
    section, _, name = key.partition(".")
    spec = (raw.get("factors") or {}).get(key) if isinstance(raw.get("factors"), dict) else None
    refs = [r for r in raw.get("references") or [] if isinstance(r, dict)]
    used = spec is None or any(key not in r for r in refs)  # the study's own value is some cell's
    values = [_base(raw, section, name)] if used else []
    values += spec if isinstance(spec, list) else spec.get("choices", []) if isinstance(spec, dict) else []
    values += [r[key] for r in refs if key in r]
    values = [v for v in dict.fromkeys(values) if isinstance(v, int) and not isinstance(v, bool)]  # validated
    new = _capped(values, small) if section == "data" else _seq(values, small, small)
    return dict(zip(values, new))


def _shrunk(spec, new: dict, small: int):
    """A factor's grid list, choices or search range over a round or data-size key, made small."""
    if isinstance(spec, list):
        return [new[v] for v in spec]
    if isinstance(spec, dict) and isinstance(spec.get("choices"), list):
        return {**spec, "choices": [new[v] for v in spec["choices"]]}
    if isinstance(spec, dict):
        return {k: v for k, v in {**spec, "low": small, "high": small * 2, "step": None, "log": None}.items()
                if v is not None}
    return spec
