"""Reading a study file into plain Python values, with bounds on everything a file can make us do.

PyYAML's ``safe_load`` builds what the text describes, and a short text can describe a lot: nine
nested aliases ("billion laughs") are a tree of 10^9 leaves in 600 bytes, and one ``repr`` of it
in an error message never returns. This reader is PyYAML's safe loader with limits checked while
the document is composed, before anything is built or validated:

- the file: at most :data:`MAX_STUDY_BYTES`, UTF-8 (a UTF-8 byte-order mark is fine);
- nesting: at most :data:`MAX_DEPTH` levels of mappings and lists;
- size after alias expansion: at most :data:`MAX_NODES` values and :data:`MAX_TEXT_CHARS`
  characters of scalar text (an alias counts as everything it stands for), and no alias inside
  the node it names;
- a key given twice in one mapping is an error naming both lines (PyYAML keeps the last);
- integers of more than :data:`MAX_INT_DIGITS` digits, and values an explicit tag cannot
  construct (``!!int abc``, ``!!timestamp foo``), are errors with their line;
- ``.nan``, ``.inf`` and ``-.inf`` are refused wherever they appear (no setting takes them).

Every failure is a :class:`~ablate.config.errors.StudyError` naming the file and, where known, the key.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from .errors import StudyError, brief

MAX_STUDY_BYTES = 256 * 1024  # the shipped studies are under 4 KB
MAX_DEPTH = 32  # a study nests 4 or 5 levels
MAX_NODES = 5_000  # values after alias expansion; the largest shipped study has about 150
MAX_TEXT_CHARS = 1_000_000  # scalar characters after alias expansion
MAX_INT_DIGITS = 100

_EXAMPLE = "give the path of a YAML study file such as studies/gcn_effect.yaml."


class _Refusal(Exception):
    """A limit the loader refuses to pass; ``mark`` is where in the text, ``key`` the dotted key."""

    def __init__(self, mark, message: str, key: str = ""):
        super().__init__(message)
        self.mark, self.message, self.key = mark, message, key


def read_study(path: Path, where: str):
    """The file's YAML document as plain Python values (None for an empty file)."""
    text = _read_text(path, where)
    loader = None
    try:
        loader = _Loader(text)  # PyYAML's reader checks the characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_keys(loader, node, where)
        data = loader.construct_document(node)
    except _Refusal as e:
        raise StudyError(where, e.key, f"{e.message.rstrip('.')}{_at(e.mark)}.") from None
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        raise StudyError(where, "", f"the file holds the control character U+{e.character:04X} at line {line}, column "
                         f"{col}, which YAML does not allow; remove it (is this a text file?).") from None
    except yaml.YAMLError as e:
        raise StudyError(where, "", f"the file is not valid YAML{_at(getattr(e, 'problem_mark', None))} "
                         f"({_yaml_problem(e)}).") from None
    finally:
        if loader is not None:
            loader.dispose()
    _reject_non_finite(data, where)
    return data


def _read_text(path: Path, where: str) -> str:
    """The bytes of ``path`` (at most MAX_STUDY_BYTES) decoded as UTF-8."""
    try:
        if path.is_dir():
            raise StudyError(where, "", f"this is a folder, not a study file; {_EXAMPLE}")
        if not path.exists():
            raise StudyError(where, "", f"the study file does not exist; {_EXAMPLE}")
        with open(path, "rb") as f:
            data = f.read(MAX_STUDY_BYTES + 1)
    except OSError as e:
        raise StudyError(where, "", f"the study file cannot be read ({e.strerror or type(e).__name__}); "
                         f"{_EXAMPLE}") from None
    if len(data) > MAX_STUDY_BYTES:
        raise StudyError(where, "", f"the file is larger than {MAX_STUDY_BYTES // 1024} KiB, the limit for a study "
                         "file (the shipped studies are under 4 KB), so it was not read; is this the study you "
                         "meant? A study lists settings and factors, never data.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        hint = " It starts with a UTF-16 byte-order mark: it was saved as UTF-16." \
            if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise StudyError(where, "", f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} is not "
                         f"valid UTF-8.{hint} Save the study as UTF-8 (plain text); YAML study files are "
                         "read as UTF-8 only.") from None
    if "\x00" in text:
        line, col = _line_col(text, text.index("\x00"))
        raise StudyError(where, "", f"the file holds NUL bytes (the first at line {line}, column {col}): it is a "
                         "binary file or UTF-16 text, not a UTF-8 YAML study; save the study as UTF-8.")
    return text


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's context and problem in one phrase ("while parsing a flow mapping at line 1, ...")."""
    context, problem = getattr(e, "context", None), getattr(e, "problem", None)
    if not context and not problem:
        return _clip(str(e), 200)
    parts = [f"{context}{_at(getattr(e, 'context_mark', None))}" if context else "", problem or ""]
    return _clip(", ".join(p for p in parts if p), 200)


def _clip(text: str, limit: int) -> str:
    """PyYAML's or Python's own words about a problem, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _line_col(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _at(mark) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, counting as it composes: nesting depth, and values and scalar
    characters after alias expansion (an alias adds the size of the node it names)."""

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0
        self._nodes = 0
        self._chars = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, characters) it holds
        self._path: list[str] = []  # the keys (and [index]es) down to the node being composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(index, int):
            self._path.append(f"[{index}]")
        elif isinstance(index, yaml.ScalarNode):
            self._path.append(str(index.value))
        try:
            return self._compose_counted(event, parent, index)
        finally:
            if isinstance(index, (int, yaml.ScalarNode)):
                self._path.pop()

    def _compose_counted(self, event, parent, index):
        if isinstance(event, yaml.AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None:  # (an undefined alias is PyYAML's own error)
                if id(node) not in self._sizes:
                    raise _Refusal(event.start_mark, f"the alias *{event.anchor} stands for a value that contains "
                                   "it, a structure without end; a study cannot be recursive", self._key())
                self._grow(*self._sizes[id(node)], event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _Refusal(event.start_mark, f"values are nested more than {MAX_DEPTH} levels deep (a study "
                           "needs about 5)", self._key())
        before = (self._nodes, self._chars)
        self._grow(1, len(event.value) if isinstance(event, yaml.ScalarEvent) else 0, event.start_mark)
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = (self._nodes - before[0], self._chars - before[1])
        return node

    def _grow(self, nodes: int, chars: int, mark) -> None:
        self._nodes += nodes
        self._chars += chars
        if self._nodes > MAX_NODES or self._chars > MAX_TEXT_CHARS:
            what = f"{MAX_NODES:,} values" if self._nodes > MAX_NODES else f"{MAX_TEXT_CHARS:,} characters of text"
            raise _Refusal(mark, f"the document holds more than {what} (counting everything each alias *name "
                           "stands for), the limit for a study, which needs a few hundred; reading stopped",
                           self._key())

    def _key(self) -> str:
        out = ""
        for part in self._path:
            out += part if part.startswith("[") or not out else f".{part}"
        return out

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as e:
            # PyYAML's constructors fail this way on values an explicit tag (!!int, !!timestamp) cannot take
            value = f"{brief(node.value)} " if isinstance(node, yaml.ScalarNode) else ""
            why = f" ({_clip(str(e), 120)})" if isinstance(e, (ValueError, OverflowError)) else ""
            raise _Refusal(node.start_mark, f"the value {value}cannot be read as {node.tag.rsplit(':', 1)[-1]}"
                           f"{why}") from None

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_DIGITS:
            raise _Refusal(node.start_mark, f"an integer written with {len(node.value):,} characters; numbers in a "
                           f"study have at most {MAX_INT_DIGITS} digits")
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

# YAML 1.2's floats: PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so
# `lr: 1e-3` and `epochs: 1e12` would be text. The study reads them as YAML 1.2 (and every user)
# does: [-+]? digits with an optional dot or a leading-dot fraction, an optional exponent; .inf /
# .nan keep their 1.1 spellings (refused later anyway). A copy of the resolver table: PyYAML's
# add_implicit_resolver would append to lists SafeLoader shares.
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).append(("tag:yaml.org,2002:float", _FLOAT_12))
_WHOLE_E = re.compile(r"^[-+]?[0-9][0-9_]*[eE]\+?([0-9]+)$")  # 1e12, 5E+3: a whole number in exponent form


def _construct_float(loader: _Loader, node):
    """A YAML 1.2 float; written as digits and a non-negative exponent without a dot (``1e12``)
    it is the whole number it names, so an integer setting (``epochs: 1e12``) takes it."""
    whole = _WHOLE_E.match(node.value)
    if whole and int(whole.group(1)) <= MAX_INT_DIGITS:
        mantissa, exponent = node.value.replace("_", "").lower().split("e")
        return int(mantissa) * 10 ** int(exponent)
    return loader.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _check_keys(loader: _Loader, root, where: str) -> None:
    """Refuse a key given twice in one mapping (YAML would keep the last value silently)."""
    seen: set[int] = set()
    stack = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' merges; explicit keys override it
                    stack.append((value_node, path))
                    continue
                key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    if key in first:
                        raise StudyError(where, name, f"given twice in one mapping, at line {first[key]} and at line "
                                         f"{line}; YAML would silently keep the second value, so remove one of them.")
                    first[key] = line
                stack.append((value_node, name))


def _reject_non_finite(data, where: str) -> None:
    """Refuse .nan, .inf and -.inf anywhere in the document, naming the key."""
    seen: set[int] = set()
    stack = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise StudyError(where, path, f"{brief(value)} is not a finite number; no setting of a study takes "
                             ".nan, .inf or -.inf, so give a finite number.")
        if isinstance(value, (dict, list, tuple, set)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                stack += [(v, f"{path}.{k}" if path else str(k)) for k, v in reversed(value.items())]
            else:
                stack += [(v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value)))]
