"""A content-addressed cache on disk for the seeded simulations of :mod:`ablate.stats.power`.

A simulation's answer is a pure function of its inputs: the outcome model (its class and every
field), the test, the level, the power target, the seed cap, the repetitions and the seed of the
simulation's generator, and of the code and libraries that compute it. :func:`key` hashes all of
these (SHA-256): the source text of the function's module and of every package module it imports
(:func:`sources`), and numpy's and scipy's versions (their generators and distributions), so an
edit of that code or a library update gives new keys and the old entries are never read again. A hit returns the stored answer, which
is the computed one bit for bit (an integer or None); a miss computes and stores it.

Where: ``$ABLATE_CACHE/stats`` (the folder ablate's block costs also use, under ``costs``), else
``~/.cache/ablate/stats``; one small JSON file a key, written atomically. ``ABLATE_CACHE=off``
turns it off. A cache that cannot be read or written is skipped (the answer is computed).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

OFF = "off"


def cache_dir(kind: str = "stats") -> Path | None:
    """``$ABLATE_CACHE/<kind>``, else ``~/.cache/ablate/<kind>``; None when ``ABLATE_CACHE=off``."""
    root = os.environ.get("ABLATE_CACHE")
    if root == OFF:
        return None
    return (Path(root) if root else Path.home() / ".cache" / "ablate") / kind


def sources(module: str) -> list[Path]:
    """The source files of the package's ``module`` and of the package modules it imports,
    directly or not (relative imports, read from the source), in name order; this module, which
    keeps answers but computes none, is left out (an edit of it keeps the entries)."""
    import ast

    here, todo, seen = Path(__file__).parent, [module], set()
    while todo:
        name = todo.pop()
        path = here / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names] + ["__init__"]
    return [here / f"{n}.py" for n in sorted(seen - {Path(__file__).stem})]


@functools.lru_cache(maxsize=8)
def code_version(module: str) -> str:
    """A hash of the source of ``module`` and of what it imports from the package (:func:`sources`),
    and of numpy's and scipy's versions: an edit of the code that computes an answer is a new key;
    a module that does not enter it leaves the keys as they were."""
    import numpy
    import scipy

    h = hashlib.sha256(f"numpy {numpy.__version__} scipy {scipy.__version__}".encode())
    for path in sources(module):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _plain(value):
    """A JSON-able form of an input: a dataclass (an outcome model) as its class name and fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"class": type(value).__name__, **{f.name: _plain(getattr(value, f.name))
                                                  for f in dataclasses.fields(value)}}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return value


def key(name: str, **inputs) -> str:
    """The content address of ``name`` ("module.function", a module of this package) at ``inputs``:
    floats enter as their exact repr, so any change of an input, however small, is another key."""
    content = {"fn": name, "inputs": {k: _plain(v) for k, v in sorted(inputs.items())},
               "code": code_version(name.split(".")[0])}
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=True).encode()).hexdigest()[:32]


def get(k: str, kind: str = "stats"):
    """(True, the stored answer) or (False, None) when absent, unreadable or the cache is off."""
    folder = cache_dir(kind)
    if folder is None:
        return False, None
    try:
        return True, json.loads((folder / f"{k}.json").read_text())["answer"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, None


def put(k: str, answer, kind: str = "stats") -> None:
    """Store ``answer`` under ``k`` (atomically); skipped when the cache is off or not writable."""
    from ..config.atomic import write_text

    folder = cache_dir(kind)
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{k}.json", json.dumps({"answer": answer}))
    except Exception:  # noqa: BLE001 - a cache that cannot be written is skipped
        pass


def cached(name: str, compute: Callable, **inputs):
    """``compute(**inputs)``, through the cache under :func:`key` (``name``, ``inputs``); inputs
    that are not plain numbers, strings or dataclasses of them are computed without it."""
    return cached_many(name, compute, [inputs])[0]


def cached_many(name: str, compute: Callable, calls: list[dict], run_all: Callable | None = None) -> list:
    """:func:`cached` of each keyword set in ``calls``, in order; the misses are computed by
    ``run_all(fn, misses)`` (default: one by one here), e.g. side by side on the cores
    (:func:`ablate.config.forks.fork_map`), then stored."""
    work = pending_many(name, compute, calls)
    return work.finish(run_all(work.fn, work.items) if run_all is not None else [work.fn(c) for c in work.items])


def pending_many(name: str, compute: Callable, calls: list[dict]):
    """:func:`cached_many` as work not yet run (:class:`ablate.config.forks.Pending`): its items
    are the misses' keyword sets, its finish stores their answers and returns every answer in order."""
    from ..config.forks import Pending

    keys, out, todo = [], [None] * len(calls), []
    for i, inputs in enumerate(calls):
        try:
            k = key(name, **inputs)
        except (TypeError, ValueError):
            k = None
        hit, answer = get(k) if k else (False, None)
        keys.append(k)
        if hit:
            out[i] = answer
        else:
            todo.append(i)

    def one(inputs: dict):
        return compute(**inputs)

    def finish(answers: list) -> list:
        for i, answer in zip(todo, answers):
            out[i] = answer
            if keys[i]:
                put(keys[i], answer)
        return out

    return Pending(one, [calls[i] for i in todo], finish)
