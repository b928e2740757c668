"""Fuzz: generated malformed study files each fail with a StudyError, fast, with a short message.

Every generated file is a valid base study with one mistake that no schema accepts: a value of
the wrong type or out of range at some key, a non-finite number, an unknown key at some level, a
huge or deeply nested value, an alias chain (some small, some that expand past the limit), a key
given twice, or bytes that are not UTF-8 text. The bulk goes through ``load_study`` in this
process (hypothesis draws the mistakes); a handful, drawn by a seeded ``random`` from the same
generator, go through the CLI (``python -m ablate.run FILE --dry-run``) and must exit 2 with one
paragraph and no traceback.
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.config.errors import StudyError
from ablate.study.load import load_study

SECONDS = 1.0  # each file must be refused within this
MESSAGE_CHARS = 2500  # and with a paragraph no longer than this


def _base() -> dict:
    return {
        "name": "fuzz",
        "question": "a valid base study",
        "model": {"backbone": {"name": "small_cnn", "width": 8, "depth": 3}, "mechanism": "glore",
                  "args": {"K": 4}, "head": {"channels": 0}},
        "data": {"name": "synthetic", "task": "global_cue", "size": 32, "train_images": 16, "val_images": 8,
                 "noise": 0.35},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "weight_decay": 0.0001, "threads": 1},
        "factors": {"gcn": [True, False], "train.lr": [0.01, 0.001]},
        "references": [{"mechanism": "none"}],
        "seeds": [0, 1],
        "metric": "val_miou",
        "baseline": {"gcn": True},
        "pruner": {"name": "median", "n_startup_trials": 1},
        "trainer": {"accelerator": "cpu", "devices": 1},
        "tracking": {"wandb": False, "project": "fuzz"},
    }


# key path -> what it takes; the values drawn for it are never valid there
KINDS = {
    "name": "name", "question": "text", "metric": "enum",
    "model.mechanism": "enum", "model.backbone.name": "enum", "model.backbone.width": "int1",
    "model.backbone.depth": "int1", "model.args.K": "int1", "model.head.channels": "int0",
    "data.task": "enum", "data.size": "int1", "data.train_images": "int1", "data.noise": "float0",
    "train.epochs": "int1", "train.batch_size": "int1", "train.lr": "float_pos", "train.weight_decay": "float0",
    "train.threads": "threads", "factors.gcn": "factor_list", "factors.train.lr": "factor_list",
    "references": "list_of_maps", "seeds": "seeds", "baseline.gcn": "baseline_bool", "pruner.name": "enum",
    "pruner.n_startup_trials": "int0", "trainer.devices": "int1", "trainer.accelerator": "enum",
    "tracking.wandb": "bool", "tracking.project": "project",
    "model": "map", "data": "map", "train": "map", "factors": "map", "pruner": "map",
}
MAPPINGS = ["", "model", "model.backbone", "model.args", "model.head", "data", "train", "factors",
            "references.0", "baseline", "pruner", "trainer", "tracking"]
NON_FINITE = [math.nan, math.inf, -math.inf]
ALPHABET = "abcxyz_-.:#@é\u00e9\u4e2d \t'\"{}[],&*!|>%"


class _Hypothesis:
    """Draws from hypothesis (the bulk of the fuzz)."""

    def __init__(self, data):
        self.data = data

    def choice(self, options):
        return self.data.draw(st.sampled_from(list(options)))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def text(self, n: int) -> str:
        return self.data.draw(st.text(alphabet=ALPHABET, min_size=0, max_size=n))


class _Random:
    """Draws from a seeded ``random`` (the cases sent through the CLI)."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def choice(self, options):
        return self.r.choice(list(options))

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def text(self, n: int) -> str:
        return "".join(self.r.choice(ALPHABET) for _ in range(self.r.randint(0, n)))


def _zz(src) -> str:
    """A string no key or setting accepts."""
    return "zz" + src.text(12)


def _nested(src, depth: int):
    """Lists and mappings ``depth`` levels deep around an invalid leaf."""
    leaf = src.choice([_zz(src), src.choice(NON_FINITE), {"zz_leaf": 1}])
    for _ in range(depth):
        leaf = src.choice([[leaf], {"zz_" + src.text(4): leaf}, [leaf, leaf]])
    return leaf


def _wrong(src, kind: str):
    """A value that ``kind`` does not accept."""
    common = [src.choice(NON_FINITE), [_zz(src)], {"zz_" + src.text(6): src.int(-5, 5)},
              _nested(src, src.int(2, 40)), ["zz"] * src.int(2_000, 20_000)]
    if kind not in ("name", "text", "project"):  # where some strings are valid
        common.append(_zz(src))
    extra = {
        "name": ["a b!", "", "x" * src.int(101, 5000), src.int(-9, 9), True],
        "text": [src.int(-9, 9), False],
        "enum": [src.int(-9, 9), True, None, "zz" * src.int(1, 5000)],
        "int1": [0, -src.int(1, 10**6), 2.5, 2.0, True, "3"],
        "int0": [-src.int(1, 10**6), 1.5, True, "0"],
        "threads": [-1, 1.5, True, 10 ** src.int(4, 90)],
        "float0": [-0.5, -src.int(1, 10**6), True, "0.1"],
        "float_pos": [0, -0.001, 0.0, False, "1e-3"],
        "bool": [src.int(0, 9), "maybe", 1.5],
        "baseline_bool": [src.int(2, 9), "maybe", 1.5],  # (1 == True: a baseline of 1 matches gcn=on)
        "project": [["a", "b"], "a/b", "", src.int(0, 9)],
        "factor_list": [[], "on", 3, [src.choice(NON_FINITE), 0.1], [[1], [2]], [True, True]],
        "list_of_maps": [["none"], 3, "zz", [[1]]],
        "seeds": [0, -1, 10 ** src.int(4, 90), [0, 0], [-1], [0.5], [2 ** 40], list(range(1001)), "3"],
        "map": [3, "zz", [1, 2]],
    }[kind]
    return src.choice(common + extra)


def _set(doc: dict, path: str, value) -> None:
    parts = path.split(".") if path else []
    if path.startswith("factors.") and path != "factors":
        parts = ["factors", path[len("factors."):]]  # factor names hold dots
    d = doc
    for p in parts[:-1]:
        d = d[int(p)] if isinstance(d, list) else d[p]
    if parts:
        d[parts[-1]] = value


def _get(doc: dict, path: str):
    d = doc
    for p in path.split(".") if path else []:
        d = d[int(p)] if isinstance(d, list) else d[p]
    return d


def _alias_chain(src) -> str:
    """A flow list of anchors, each repeating the one before: small ones are a nested list of
    invalid strings, large ones expand past the reader's limit."""
    levels, fan = src.int(1, 12), src.int(2, 10)
    parts = [f"&a0 [{', '.join(['zz'] * fan)}]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10**9)


def malformed(src) -> tuple[bytes, str]:
    """One malformed study file (its bytes) and what is wrong with it."""
    doc = _base()
    kind = src.choice(["wrong", "non_finite", "unknown_key", "alias", "duplicate_key", "bytes"])
    if kind == "wrong":
        path = src.choice(sorted(KINDS))
        _set(doc, path, _wrong(src, KINDS[path]))
        return _dump(doc).encode(), f"{path}: wrong value"
    if kind == "non_finite":
        path = src.choice([p for p, k in KINDS.items() if k.startswith(("float", "int", "factor"))])
        value = src.choice(NON_FINITE)
        _set(doc, path, [0.01, value] if KINDS[path] == "factor_list" else value)
        return _dump(doc).encode(), f"{path}: non-finite"
    if kind == "unknown_key":
        path = src.choice(MAPPINGS)
        _get(doc, path)["zz_" + src.text(20)] = _nested(src, src.int(0, 3))
        return _dump(doc).encode(), f"{path or 'top level'}: unknown key"
    if kind == "alias":
        path = src.choice(sorted(KINDS))
        _set(doc, path, "ALIAS_CHAIN_HERE")
        return _dump(doc).replace("ALIAS_CHAIN_HERE", _alias_chain(src), 1).encode(), f"{path}: alias chain"
    if kind == "duplicate_key":
        lines = _dump(doc).splitlines()
        keyed = [i for i, ln in enumerate(lines) if ":" in ln and not ln.lstrip().startswith("-")]
        i = src.choice(keyed)
        lines.insert(i + 1, lines[i])
        return ("\n".join(lines) + "\n").encode(), f"line {i + 1} twice"
    data = _dump(doc).encode()
    at = src.int(0, len(data))
    how = src.choice(["byte", "latin-1", "utf-16", "nul", "control"])
    if how == "utf-16":
        return _dump(doc).encode("utf-16"), "UTF-16"
    insert = {"byte": bytes([src.choice([0x80, 0xC3, 0xFE, 0xFF])]), "latin-1": "é".encode("latin-1"),
              "nul": b"\x00", "control": bytes([src.choice([0x01, 0x07, 0x1B, 0x7F])])}[how]
    return data[:at] + insert + data[at:], f"{how} at byte {at}"


def _check_refused(path, what: str) -> None:
    t0 = time.perf_counter()
    try:
        load_study(path)
    except StudyError as e:
        elapsed = time.perf_counter() - t0
        assert elapsed < SECONDS, f"{what}: {elapsed:.2f} s"
        assert len(e.paragraph()) <= MESSAGE_CHARS, f"{what}: a message of {len(e.paragraph())} characters"
        assert e.paragraph().startswith(f"error in {path}") and e.paragraph().endswith("Nothing was run.")
        return
    raise AssertionError(f"{what}: the malformed study loaded")


def test_the_base_study_is_valid(tmp_path):
    """The control: the generator's base study loads; only its one mistake makes a case fail."""
    path = tmp_path / "base.yaml"
    path.write_text(_dump(_base()))
    study = load_study(path)
    assert len(study.cells()) == 5 and study.seeds == (0, 1)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_studies_are_refused(fuzz_dir, data):
    text, what = malformed(_Hypothesis(data))
    path = fuzz_dir / "study.yaml"
    path.write_bytes(text)
    _check_refused(path, what)


CLI_CASES = 8


def _cli(path, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ablate.run", str(path), "--dry-run"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - t0


def test_a_sample_through_the_cli_exits_2(tmp_path):
    """A seeded sample of the same generator through ``python -m ablate.run FILE --dry-run``."""
    cases = []
    for seed in range(CLI_CASES):
        text, what = malformed(_Random(seed))
        path = tmp_path / f"case{seed}.yaml"
        path.write_bytes(text)
        cases.append((path, what))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: _cli(c[0], tmp_path), cases))
    for (path, what), (proc, _) in zip(cases, results):
        assert proc.returncode == 2, (what, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and proc.stdout == "", what
        body = proc.stderr.strip()
        assert body.startswith(f"error in {path}") and "\n\n" not in body, what
        assert len(body) <= MESSAGE_CHARS + 100, (what, len(body))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p, _ in cases)  # nothing created
