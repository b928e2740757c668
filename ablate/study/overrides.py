"""Command-line overrides of a study: ``ablate run STUDY.yaml train.epochs=3 seeds=2 model.args.K=32``.

An override is ``KEY=VALUE``: ``KEY`` a dotted path into the study file (``[i]`` picks an item of
a list: ``references[0].mechanism=none``), ``VALUE`` YAML read by the study reader
(:mod:`ablate.config.text`), so it is typed as the same text in the file would be: ``3`` an
integer, ``3.0`` a number, ``on`` true, ``[0, 1]`` a list, ``{K: 8}`` a mapping. Overrides edit
the mapping read from the file, in the order given, and the result is validated by
:func:`ablate.study.load_study` exactly as the file would be; a mistake is one paragraph naming
the file, the override and the key.

Where a mapping is missing it is made (``model.head.channels=512`` in a study without
``head:``); where a value that is not a mapping is in the way (``seeds.x=1``) the override is
refused. Under ``factors``, ``baseline`` and a reference, a factor named with a dot is one key:
``factors.data.task=[local]`` sets the factor ``data.task`` (so does ``factors.train.lr=...``),
and ``factors.K.low=2`` the low end of a search range of ``K``.

``seeds=N`` is a count, as in the file: seeds 0..N-1.

Name: an overridden study is another study, and must never share the unmodified study's
storage, run folder or report. It gets the name ``<name>-o<8 hex digits>``, a hash of the
overrides (repeated keys resolved, order-independent where the keys are independent), so the
same command resumes the same run and ``runs/<name>/`` and ``reports/<name>.md`` are its own.
This holds with ``--run-dir`` and ``--storage`` too (one storage may hold both studies). An
override ``name=...`` names the study instead (it may not be the file's own name).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import yaml

from ..config.errors import StudyError, brief

MAX_OVERRIDE_CHARS = 10_000  # one KEY=VALUE on a command line
# sections whose keys are factor names, which may hold one dot (data.task, train.lr, backbone.width, head.upsample)
_FACTOR_SECTIONS = ("factors", "baseline", "references")
_DOTTED_FACTORS = ("train", "data", "backbone", "head")
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]|(\.)")
_SYNTAX = ("write KEY=VALUE with a dotted key of the study file and a YAML value, e.g. train.epochs=3, "
           "seeds=[0,1], model.args.K=32 or references[0].mechanism=none")


def parse_override(text: str, source: str) -> tuple[list, object]:
    """``KEY=VALUE`` as (path, value): the path a list of keys (str) and list indexes (int)."""
    if not isinstance(text, str) or "=" not in text:
        raise StudyError(source, "", f"the override {brief(text)} has no '='; {_SYNTAX}.")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise StudyError(source, "", f"an override of {len(text):,} characters is longer than the "
                         f"{MAX_OVERRIDE_CHARS:,} allowed; put large settings in the study file.")
    key, _, value_text = text.partition("=")
    return _parse_key(key.strip(), text, source), _parse_value(value_text, key.strip(), text, source)


def _parse_key(key: str, text: str, source: str) -> list:
    path, pos, expect_name = [], 0, True
    while pos < len(key):
        m = _SEGMENT.match(key, pos)
        if m is None or (m.group(3) and expect_name) or (m.group(1) is not None and not expect_name):
            raise StudyError(source, key, f"the override {brief(text)} has a malformed key; {_SYNTAX}.")
        if m.group(1) is not None:
            path.append(m.group(1))
        elif m.group(2) is not None:
            if not path:
                raise StudyError(source, key, f"the override {brief(text)} starts with an index; {_SYNTAX}.")
            path.append(int(m.group(2)))
        expect_name = bool(m.group(3))
        pos = m.end()
    if not path or expect_name:
        raise StudyError(source, key, f"the override {brief(text)} has an empty or malformed key; {_SYNTAX}.")
    return path


def _parse_value(value_text: str, key: str, text: str, source: str):
    """The value as the study reader reads YAML: its limits, no duplicate keys, no .nan/.inf."""
    from ..config import text as stx

    loader = stx._Loader(value_text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        stx._check_keys(loader, node, source)
        value = loader.construct_document(node)
        stx._reject_non_finite(value, source)
    except (StudyError, stx._Refusal, yaml.YAMLError) as e:
        why = e.message if isinstance(e, (StudyError, stx._Refusal)) else stx._yaml_problem(e)
        raise StudyError(source, key, f"the value of the override {brief(text)} is not a valid YAML value "
                         f"({why.rstrip('.')}); give a YAML scalar (3, 0.5, on, glore), a flow list "
                         "([0, 1]) or a flow mapping ({K: 8}).") from None
    finally:
        loader.dispose()
    return value


def _step(node, path: list, i: int, section: str | None) -> tuple[object, int]:
    """The key at ``path[i]`` to use in ``node``, and how many path items it takes: a factor
    name under a factor section may span two items (data.task), or any existing dotted key."""
    names = [p for p in path[i:] if isinstance(p, str)]
    for n in range(len(path) - i, 1, -1):  # an existing key with dots in it, longest first
        part = path[i:i + n]
        if all(isinstance(p, str) for p in part) and ".".join(part) in node:
            return ".".join(part), n
    if section in _FACTOR_SECTIONS and len(names) > 1 and names[0] in _DOTTED_FACTORS \
            and isinstance(path[i + 1], str):
        return f"{path[i]}.{path[i + 1]}", 2
    return path[i], 1


def _set(raw: dict, path: list, value, text: str, source: str) -> str:
    """Set ``value`` at ``path`` in ``raw`` (made mappings where missing); returns the dotted key."""
    node, i, shown, section = raw, 0, "", None
    while True:
        item = path[i]
        if isinstance(item, int):
            if not isinstance(node, list) or not -len(node) <= item < len(node):
                what = f"a list of {len(node)} items" if isinstance(node, list) else f"not a list ({brief(node)})"
                raise StudyError(source, shown, f"the override {brief(text)} indexes [{item}], but {shown} is "
                                 f"{what}; give an index of an existing item, or the whole list "
                                 f"({shown}=[...]).")
            key, used, shown = item, 1, f"{shown}[{item}]"
        else:
            if not isinstance(node, dict):
                raise StudyError(source, shown, f"the override {brief(text)} sets a key inside {shown}, which "
                                 f"is {brief(node)}, not a mapping; set {shown} itself ({shown}=...).")
            key, used = _step(node, path, i, section)
            shown = f"{shown}.{key}" if shown else str(key)
        section = section or (key if isinstance(key, str) else None)
        i += used
        if i == len(path):
            node[key] = value
            return shown
        child = node[key] if (isinstance(node, list) or key in node) else None
        if child is None and isinstance(path[i], str):
            child = node[key] = {}  # a missing (or empty) section: made, validation checks its keys
        node = child


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    """A copy of the study mapping ``raw`` with ``overrides`` applied in order (see the module
    docstring); raises :class:`StudyError` on a malformed override or a path that cannot be set."""
    if not isinstance(raw, dict):
        raise StudyError(source, "", f"the file holds {brief(raw)}, not a mapping of settings, so the overrides "
                         "have nothing to change; give a study file (key: value lines).")
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text, source)
        _set(out, path, value, text, source)
    return out


def override_digest(overrides: list[str], source: str) -> str:
    """8 hex digits naming a set of overrides: a key given twice counts once (the last), and
    independent keys are sorted, so ``a=1 b=2`` and ``b=2 a=1`` name the same study."""
    last: dict = {}
    for text in overrides:
        path, value = parse_override(text, source)
        key = json.dumps(path)
        last.pop(key, None)
        last[key] = value
    keys = list(last)
    nested = any(a != b and json.loads(b)[:len(json.loads(a))] == json.loads(a) for a in keys for b in keys)
    items = [[k, last[k]] for k in (keys if nested else sorted(keys))]
    return hashlib.sha1(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _base_name(raw: dict, path: Path, source: str) -> str:
    """The unmodified study's name (``name:`` or the file's stem), as load_study derives it."""
    from .load import study_name

    return study_name(raw, path, source)


def read_raw(path: str | Path):
    """The study file's mapping, read once (:func:`ablate.config.text.read_study`); the functions
    below take it as ``raw`` so that a command reads its study file once."""
    from ..config.text import read_study

    return read_study(Path(path), str(path))


def effective_raw(path: str | Path, overrides: list[str], smoke: bool = False, raw=None) -> dict:
    """The study mapping after ``overrides`` (and smoke mode's caps), with its new name; ``raw``:
    the file's mapping if already read (:func:`read_raw`)."""
    from .load import MAX_NAME_CHARS

    path, source = Path(path), str(path)
    raw = read_raw(path) if raw is None else raw
    base = _base_name(raw if isinstance(raw, dict) else {}, path, source)
    out = apply_overrides(raw, overrides, source) if overrides or smoke else copy.deepcopy(raw)  # raw is reused
    named = any(parse_override(t, source)[0] == ["name"] for t in overrides)
    if named:
        if out.get("name") == base:
            raise StudyError(source, "name", f"the override name={base} is the unmodified study's own name; an "
                             "overridden study must not share its storage and report, so give another name "
                             "(or leave name= out: the study is then named <name>-o<hash of the overrides>).")
    elif overrides:
        digest = override_digest(overrides, source)
        out["name"] = f"{base[:MAX_NAME_CHARS - 10]}-o{digest}"
    if smoke:
        out = smoke_transform(out, source)
        out["name"] = f"{str(out.get('name', base))[:MAX_NAME_CHARS - 6]}-smoke"
    return out


def smoke_transform(raw: dict, source: str = "study") -> dict:
    """``raw`` with smoke mode's caps (:func:`ablate.config.smoke.smoke_overrides`) applied."""
    from ..config.smoke import smoke_overrides

    return apply_overrides(raw, smoke_overrides(raw, source), source)


def load_with_overrides(path: str | Path, overrides: list[str], check_files: bool = True, smoke: bool = False,
                        raw=None):
    """The :class:`~ablate.study.Study` of ``path`` with ``overrides`` applied, validated as the
    file is. A validation error names the overrides that set the key at fault. With ``smoke``,
    the study without smoke mode's caps is validated first, then the smoke study is returned.
    ``raw``: the file's mapping if already read (:func:`read_raw`); else it is read here, once."""
    from .load import load_study

    raw = read_raw(path) if raw is None else raw
    if smoke:  # the study that will run on the cluster must be valid too, not only its smoke version
        load_with_overrides(path, overrides, check_files, raw=raw)
    effective = effective_raw(path, overrides, smoke, raw=raw)
    try:
        study = load_study(path, check_files, raw=effective)
    except StudyError as e:
        raise _blame(e, overrides, smoke) from None
    if overrides:
        study = dataclasses.replace(study, overrides=tuple(overrides))
    return study


def _blame(e: StudyError, overrides: list[str], smoke: bool) -> StudyError:
    """``e`` with the overrides that touched its key named (the file may not say what failed)."""
    def touches(text: str) -> bool:
        key = text.partition("=")[0].strip().replace("[", ".[")
        err = e.key.replace("[", ".[")
        return bool(key) and bool(err) and (err == key or err.startswith(key + ".") or key.startswith(err + "."))

    mine = [t for t in overrides if touches(t)]
    if mine:
        said = ", ".join(brief(t) for t in mine)
        return StudyError(e.where, e.key, f"{e.message} (set on the command line by {said}.)")
    if overrides or smoke:
        said = " ".join(overrides) + (" --smoke" if smoke else "")
        return StudyError(e.where, e.key, f"{e.message} (the study as changed by: {said.strip()}.)")
    return e


def effective_yaml(path: str | Path, overrides: list[str], smoke: bool = False, raw=None) -> str:
    """The effective study as YAML text, headed by where it comes from (for ``--dry-run``);
    ``raw``: the file's mapping if already read (:func:`read_raw`)."""
    raw = read_raw(path) if raw is None else raw
    effective = effective_raw(path, overrides, smoke, raw=raw)
    said = " ".join(overrides) + (" --smoke" if smoke else "")
    head = f"# effective study: {path} with {said.strip() or 'no overrides'}\n"
    if smoke:
        from ..config.smoke import smoke_overrides

        first = apply_overrides(raw, overrides, str(path))
        head += f"# smoke mode sets: {' '.join(smoke_overrides(first, str(path)))}\n"
    return head + yaml.safe_dump(effective, sort_keys=False, default_flow_style=None, width=100)
