"""What a user types into a study file (issue 10, defects 3, 4, 5, 7 and 8): every mistake is a
one-paragraph StudyError naming the file and the key, found at load time, quickly, with any
quoted value summarised. The CLI cases run once, concurrently, in a module fixture.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from ablate.attention import MECHANISMS
from ablate.config.errors import MAX_MESSAGE_CHARS, StudyError, brief
from ablate.study.load import MAX_CELLS, MAX_SEED, MAX_SEEDS, load_study
from ablate.config.text import MAX_DEPTH, MAX_NODES, MAX_STUDY_BYTES

from support import REPO, base_study

BOUND = MAX_MESSAGE_CHARS + 300  # the longest paragraph: message, file and key


def _base() -> dict:
    s = base_study()
    del s["baseline"]  # these cases leave the baseline at its default
    return s


def _text(**changes) -> str:
    """The base study with ``changes``: ``train__lr=x`` sets a nested key, None deletes it."""
    s = _base()
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        d = s
        for p in parents:
            d = d.setdefault(p, {})
        if value is None:
            d.pop(leaf, None)
        else:
            d[leaf] = value
    return yaml.safe_dump(s, sort_keys=False)


def _write(tmp_path: Path, text: str | bytes, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _error(path: Path) -> StudyError:
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert len(e.value.paragraph()) <= BOUND, len(e.value.paragraph())
    return e.value


def _bomb(levels: int, fan: int = 9) -> str:
    """Billion laughs as the seeds list: each anchor repeats the one before ``fan`` times."""
    parts = [f"&a0 [{','.join(['lol'] * fan)}]"] + [f"&a{i} [{','.join([f'*a{i - 1}'] * fan)}]"
                                                     for i in range(1, levels)]
    return "model: {mechanism: glore}\nfactors: {gcn: [on, off]}\nseeds: [" + ",".join(parts) + "]\n"


# --------------------------------------------------------------------------------------------
# cases that hang or crash today's loader: run in subprocesses
# --------------------------------------------------------------------------------------------

# id -> (file bytes, or "DIR" for a folder; expected key; substrings of the message)
CLI = {
    "billion_laughs": (_bomb(10).encode(), "seeds[3][4]", ["5,000 values", "alias"]),  # 9^10 leaves, 480 bytes
    "two_million_laughs": (_bomb(7, 8).encode(), "seeds[3][7]", ["5,000 values"]),  # 8^7 leaves, 320 bytes
    "over_size_limit": (("question: " + "x" * (MAX_STUDY_BYTES + 10) + "\n").encode(), "", ["256 KiB"]),
    "latin1": ("# r\xe9sum\xe9\n".encode("latin-1") + _text().encode(), "", ["not UTF-8", "line 1"]),
    "utf16": (_text().encode("utf-16"), "", ["not UTF-8", "UTF-16"]),
    "binary": (bytes(range(256)) * 4, "", ["UTF-8"]),
    "directory": ("DIR", "", ["folder"]),
    "seeds_1e9": (_text(seeds=1_000_000_000).encode(), "seeds", [f"{MAX_SEEDS:,}"]),
    "search_range_below_minimum": (_text(factors={"K": {"low": -8, "high": -2}}, search={"n_trials": 4}).encode(),
                                   "factors.K.low", ["-8", "K", ">= 1"]),
    "nan_lr": (_text(train__lr=float("nan")).encode(), "train.lr", ["nan", "finite"]),
    "duplicate_key": ((_text() + "seeds: 3\n").encode(), "seeds", ["twice", "line"]),
}


def _run(args: list, cwd: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Each CLI case through ``python -m ablate.run FILE --dry-run``, and every case through
    ``load_study`` in one more process that times each load (a hang kills only that process)."""
    jobs, paths = {}, {}
    for case, (content, _, _) in CLI.items():
        cwd = tmp_path_factory.mktemp(case)
        path = cwd / "study.yaml"
        if content == "DIR":
            path.mkdir()
        else:
            path.write_bytes(content)
        paths[case] = path
        jobs[case] = (["-m", "ablate.run", str(path), "--dry-run"], cwd)
    timer = ("import json, sys, time\nfrom ablate.config.errors import StudyError\nfrom ablate.study import load_study\n"
             "out = {}\nfor case, path in json.loads(sys.argv[1]).items():\n"
             "    t0 = time.perf_counter()\n    try:\n        load_study(path)\n        out[case] = 'loaded'\n"
             "    except StudyError:\n        out[case] = time.perf_counter() - t0\n"
             "print(json.dumps(out))\n")
    import json

    jobs["timer"] = (["-c", timer, json.dumps({c: str(p) for c, p in paths.items()})], REPO)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case: pool.submit(_run, *job) for case, job in jobs.items()}
        results = {case: f.result() for case, f in futures.items()}
    return paths, results


@pytest.mark.parametrize("case", list(CLI))
def test_cli_exits_2_with_a_short_paragraph(cli, case):
    paths, results = cli
    proc, wall = results[case]
    assert proc is not None, f"no answer within 90 s ({wall:.0f} s)"
    _, key, needles = CLI[case]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    body = proc.stderr.strip()
    assert len(body) <= BOUND + 100 and "\n\n" not in body, len(body)
    flat = " ".join(body.split())
    at = f"error in {paths[case]}, key '{key}':" if key else f"error in {paths[case]}:"
    assert flat.startswith(at), flat
    for needle in needles:
        assert needle in flat, f"{needle!r} missing from: {flat}"


def test_every_cli_case_fails_within_a_second_in_process(cli):
    """The 600-byte billion laughs included: refused while composing, before anything is built."""
    import json

    proc, wall = cli[1]["timer"]
    assert proc is not None and proc.returncode == 0, f"the loads did not finish ({wall:.0f} s)"
    times = json.loads(proc.stdout)
    assert set(times) == set(CLI) and "loaded" not in times.values(), times
    assert max(times.values()) < 1.0, times


# --------------------------------------------------------------------------------------------
# defect 3: bounded documents, bounded quotations
# --------------------------------------------------------------------------------------------

def test_brief_summarises_large_values_and_keeps_small_ones():
    assert brief([0] * 10_000_000) == "a list of 10,000,000 items"
    assert brief({i: i for i in range(5000)}) == "a mapping of 5,000 keys"
    long = brief("x" * 100_000)
    assert "100,000 characters" in long and len(long) < 100
    assert "digits" in brief(10 ** 400) and len(brief(10 ** 400)) < 60
    nested = [[[["deep"] * 50]]]
    assert brief(nested) == "a list of 1 item"
    for small in (1, -8, 0.5, float("nan"), True, None, "ten", [1, 2], {"a": [1, "b"]}, (1,), []):
        assert brief(small) == repr(small)
    start = time.perf_counter()
    looped: list = []
    looped.append(looped)
    brief(looped)  # a recursive structure is cut, not walked forever
    brief([[i] * 1000 for i in range(1000)])
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("where, value, key, needle", [
    ("train__epochs", "y" * 100_000, "train.epochs", "100,000 characters"),
    ("seeds", ["s"] * 3000, "seeds", "a list of 3,000 items"),
    ("factors", {"gcn": list(range(4000))}, "factors", "4,000"),
    ("model__mechanism", "z" * 50_000, "model.mechanism", "50,000 characters"),
    ("name", "n" * 20_000, "name", "20,000 characters"),
])
def test_messages_quote_a_big_value_briefly(tmp_path, where, value, key, needle):
    e = _error(_write(tmp_path, _text(**{where: value})))
    assert e.key == key and needle in e.message, e.paragraph()
    assert len(e.message) < 600, len(e.message)


def test_a_huge_unknown_key_is_cut_in_the_message(tmp_path):
    e = _error(_write(tmp_path, _text(**{"k" * 50_000: 1})))
    assert "unknown key" in e.message and len(e.key) < 200


def test_a_file_over_the_size_limit_is_not_read(tmp_path):
    path = _write(tmp_path, "question: " + "q" * MAX_STUDY_BYTES + "\n" + _text())
    e = _error(path)
    assert e.key == "" and "KiB" in e.message and "q" * 100 not in e.message


@pytest.mark.parametrize("text, needle", [
    ("seeds: &a [*a]\n", "contains it"),  # an alias inside the node it names
    ("seeds: " + "[" * (MAX_DEPTH + 5) + "1" + "]" * (MAX_DEPTH + 5) + "\n", "nested"),
    ("seeds: " + "[" * 20_000 + "\n", "nested"),  # PyYAML's composer would recurse past Python's limit
    ("seeds: [" + ", ".join(["1"] * (MAX_NODES + 10)) + "]\n", f"{MAX_NODES:,} values"),
    ("seeds: " + "9" * 5000 + "\n", "digits"),  # int() of 5,000 digits raises ValueError
    ("seeds: !!timestamp foo\n", "timestamp"),  # AttributeError inside PyYAML
    ("seeds: !!int abc\n", "int"),
    ("seeds: !!bool maybe\n", "bool"),  # KeyError inside PyYAML
    ("seeds: !!python/object:os.system x\n", "YAML"),
    ("a: 1\n---\nb: 2\n", "YAML"),
    ("seeds: \x07\n", "control character"),
])
def test_what_the_reader_refuses(tmp_path, text, needle):
    e = _error(_write(tmp_path, text))
    assert needle in e.message, e.paragraph()


@pytest.mark.parametrize("where, value, key", [
    ("model__mechanism", ["glore"], "model.mechanism"),  # unhashable: was a TypeError
    ("model__backbone__name", {"a": 1}, "model.backbone.name"),
    ("pruner", {"name": ["median"]}, "pruner.name"),
    ("factors", {1: [True]}, "factors.1"),  # a non-string factor name: was an AttributeError
    ("references", [{2: 3}], "references[0].2"),
    ("tracking", {"project": ["a", "b"]}, "tracking.project"),  # W&B refused it in every trial
    ("tracking", {"project": "a/b"}, "tracking.project"),
])
def test_values_of_the_wrong_shape_are_study_errors(tmp_path, where, value, key):
    e = _error(_write(tmp_path, _text(**{where: value})))
    assert e.key == key, e.paragraph()


# --------------------------------------------------------------------------------------------
# defect 4: search ranges and choices checked against the factor at load time
# --------------------------------------------------------------------------------------------

def _search(factors: dict, mechanism: str = "glore", sampler: str = "random", **args) -> str:
    return _text(model={"mechanism": mechanism, "args": args}, factors=factors,
                 search={"n_trials": 4, "sampler": sampler})


@pytest.mark.parametrize("mechanism, factors, key, needles", [
    ("glore", {"K": {"low": -8, "high": -2}}, "factors.K.low", ["-8", ">= 1"]),
    ("glore", {"K": {"low": 0, "high": 8}}, "factors.K.low", ["0", ">= 1"]),
    ("glore", {"K": {"low": 2.5, "high": 8}}, "factors.K.low", ["integer"]),
    ("glore", {"K": {"low": 2, "high": 16, "step": 0.5}}, "factors.K.step", ["integer"]),
    ("glore", {"K": {"low": 2, "high": 16, "step": -1}}, "factors.K.step", ["> 0"]),
    ("glore", {"K": {"low": 2, "high": 16, "log": True, "step": 2}}, "factors.K.step", ["not both"]),
    ("glore", {"K": {"low": 8, "high": 2}}, "factors.K", ["low < high"]),
    ("glore", {"K": {"low": 2}}, "factors.K.high", ["expected a number"]),
    ("glore", {"gcn": {"low": 0, "high": 1}}, "factors.gcn", ["true or false", "choices"]),
    ("glore", {"mapping": {"low": 0, "high": 1}}, "factors.mapping", ["named choices"]),
    ("glore", {"K": {"choices": [4, -1]}}, "factors.K.choices[1]", ["-1", ">= 1"]),
    ("glore", {"K": [4, "many"]}, "factors.K[1]", ["'many'"]),
    ("glore", {"K": {"choices": [4, 8], "low": 1}}, "factors.K.low", ["unknown key"]),
    ("glore", {"mechanism": {"choices": ["glore", "nope"]}}, "factors.mechanism.choices[1]", ["'nope'"]),
    ("glore", {"train.lr": {"low": -1.0, "high": 0.1}}, "factors.train.lr.low", ["> 0"]),
    ("glore", {"train.epochs": {"low": 0, "high": 4}}, "factors.train.epochs.low", [">= 1"]),
    ("glore", {"data.size": {"low": 4.5, "high": 64}}, "factors.data.size.low", ["integer"]),
    ("local_window", {"window": {"low": 3, "high": 9}}, "factors.window", ["odd", "4"]),
    ("nonlocal", {"pattern": {"choices": ["full", "criss_cross"]}, "affinity": ["dot", "concat"]},
     "factors.pattern", ["criss_cross", "concat"]),
])
def test_search_ranges_are_checked_against_the_factor(tmp_path, mechanism, factors, key, needles):
    args = {"pattern": "local_window"} if mechanism == "local_window" else {}
    e = _error(_write(tmp_path, _search(factors, "nonlocal" if args else mechanism, **args)))
    assert e.key == key, e.paragraph()
    for needle in needles:
        assert needle in e.message, f"{needle!r} missing from: {e.message}"


def test_a_grid_sampler_needs_choices(tmp_path):
    e = _error(_write(tmp_path, _search({"K": {"low": 2, "high": 8}}, sampler="grid")))
    assert e.key == "factors.K" and "grid sampler" in e.message


def test_valid_ranges_load_with_the_factors_own_kind(tmp_path):
    """An integer factor samples integers; a number factor samples floats even from 0 to 1
    (integer bounds used to make it an integer distribution: only 0 and 1)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    study = load_study(_write(tmp_path, _search({
        "K": {"low": 2, "high": 64, "log": True}, "gcn": [True, False],
        "train.weight_decay": {"low": 0, "high": 1}, "train.lr": {"low": 0.0001, "high": 0.1, "log": True},
        "data.size": {"low": 32, "high": 64, "step": 16}})))
    d = study.distributions()
    assert isinstance(d["K"], IntDistribution) and (d["K"].low, d["K"].high, d["K"].log) == (2, 64, True)
    assert isinstance(d["gcn"], CategoricalDistribution)
    assert isinstance(d["train.weight_decay"], FloatDistribution) and d["train.weight_decay"].high == 1.0
    assert isinstance(d["train.lr"], FloatDistribution) and d["train.lr"].log
    assert isinstance(d["data.size"], IntDistribution) and d["data.size"].step == 16
    assert study.search_cell({"K": 7, "gcn": False, "train.weight_decay": 0.5, "train.lr": 0.01,
                              "data.size": 48}).key


def test_a_window_range_of_odd_values_loads(tmp_path):
    """The block wants an odd window: a range stepping over odd values is valid."""
    study = load_study(_write(tmp_path, _search({"window": {"low": 3, "high": 9, "step": 2}}, "nonlocal",
                                                pattern="local_window")))
    assert study.search and study.distributions()["window"].step == 2


# --------------------------------------------------------------------------------------------
# defect 5: non-finite numbers
# --------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("where, value, key", [
    ("train__lr", NAN, "train.lr"),
    ("train__lr", INF, "train.lr"),
    ("train__lr", -INF, "train.lr"),
    ("train__weight_decay", NAN, "train.weight_decay"),
    ("train__weight_decay", INF, "train.weight_decay"),
    ("data__noise", NAN, "data.noise"),
    ("data__noise", INF, "data.noise"),
    ("factors", {"gcn": [True, False], "train.lr": [NAN, 0.01]}, "factors.train.lr[0]"),
    ("factors", {"gcn": [True, False], "data.noise": [0.1, INF]}, "factors.data.noise[1]"),
    ("model", {"mechanism": "nonlocal", "args": {"init_std": NAN}}, "model.args.init_std"),
    ("pruner", {"name": "percentile", "percentile": NAN}, "pruner.percentile"),
    ("search", {"n_trials": 2}, None),  # with factors: a range with an infinite end (below)
])
def test_non_finite_numbers_are_refused(tmp_path, where, value, key):
    changes = {where: value}
    if where == "search":
        changes["factors"], key = {"train.lr": {"low": 0.001, "high": INF}}, "factors.train.lr.high"
    if where == "model":
        changes["factors"] = {"shared_qk": [True, False]}
    e = _error(_write(tmp_path, _text(**changes)))
    assert e.key == key, e.paragraph()
    assert "finite" in e.message


def test_a_float_factor_refuses_non_finite_values_itself():
    """Also when a study is built in Python, not read from YAML."""
    factor = MECHANISMS["nonlocal"].factor("init_std")
    for bad in (NAN, INF, -INF, 10 ** 400):
        with pytest.raises(ValueError, match="finite"):
            factor.coerce(bad)
    assert factor.coerce(0.02) == 0.02


# --------------------------------------------------------------------------------------------
# defect 7: files that are not UTF-8 text, folders, seeds
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, needles", [
    ("# r\xe9sum\xe9\n".encode("latin-1") + _text().encode(), ["not UTF-8", "0xe9", "line 1"]),
    (_text().encode("utf-16"), ["UTF-16"]),
    (_text().encode("utf-16-le"), ["NUL"]),  # no byte-order mark: valid UTF-8 full of NULs
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), ["UTF-8"]),
    (b"\xef\xbb\xbf" + _text().encode(), None),  # a UTF-8 byte-order mark is fine
])
def test_files_that_are_not_utf8_text(tmp_path, content, needles):
    path = _write(tmp_path, content)
    if needles is None:
        assert load_study(path).name == "case"
        return
    e = _error(path)
    assert e.where == str(path) and e.key == ""
    for needle in needles:
        assert needle in e.message, e.message


def test_a_folder_or_a_missing_file_is_a_study_error(tmp_path):
    assert "folder" in _error(tmp_path).message
    assert "does not exist" in _error(tmp_path / "gone.yaml").message


@pytest.mark.parametrize("seeds, key", [
    (1_000_000_000, "seeds"), (10 ** 12, "seeds"), (MAX_SEEDS + 1, "seeds"),
    (list(range(MAX_SEEDS + 1)), "seeds"), ([0, MAX_SEED + 1], "seeds[1]"), ([0, -1], "seeds[1]"),
    ([0, 0], "seeds"), ([0, True], "seeds[1]"),
])
def test_seeds_are_bounded(tmp_path, seeds, key):
    start = time.perf_counter()
    e = _error(_write(tmp_path, _text(seeds=seeds)))
    assert e.key == key and f"{MAX_SEEDS:,}" in e.message, e.paragraph()
    assert time.perf_counter() - start < 1.0


def test_seeds_at_the_bounds_load(tmp_path):
    assert len(load_study(_write(tmp_path, _text(seeds=MAX_SEEDS))).seeds) == MAX_SEEDS
    assert load_study(_write(tmp_path, _text(seeds=[MAX_SEED]))).seeds == (MAX_SEED,)


def test_a_grid_is_bounded(tmp_path):
    e = _error(_write(tmp_path, _text(factors={"gcn": [True, False], "K": list(range(1, MAX_CELLS))})))
    assert e.key == "factors" and f"{MAX_CELLS:,}" in e.message


# --------------------------------------------------------------------------------------------
# defect 8: duplicate keys, names from dotted file names, train.threads
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, lines", [
    (_text() + "seeds: 3\n", "seeds", (23, 24)),
    (_text().replace("  lr: 0.01\n", "  lr: 0.01\n  lr: 0.1\n"), "train.lr", (17, 18)),
    (_text().replace("model:\n", "model:\n  mechanism: none\n"), "model.mechanism", (3, 7)),
    ("model: {mechanism: glore, mechanism: none}\n", "model.mechanism", (1, 1)),
])
def test_duplicate_keys_name_both_lines(tmp_path, text, key, lines):
    assert f"{key.rsplit('.', 1)[-1]}:" in text
    e = _error(_write(tmp_path, text))
    assert e.key == key, e.paragraph()
    assert f"line {lines[0]} and at line {lines[1]}" in e.message, e.message


def test_a_merge_key_may_be_overridden(tmp_path):
    """'<<: *cell' then an explicit key is YAML's override, not a duplicate."""
    path = _write(tmp_path, "model: {mechanism: glore}\nfactors: {gcn: [on, off]}\nreferences:\n"
                            "- &cell {mechanism: nonlocal, shared_qk: on}\n- {<<: *cell, shared_qk: off}\n")
    study = load_study(path)
    assert [dict(c.label) for c in study.cells()][-2:] == [{"mechanism": "nonlocal", "shared_qk": True},
                                                          {"mechanism": "nonlocal", "shared_qk": False}]


@pytest.mark.parametrize("filename, name", [("my.study.yaml", "my_study"), ("a b+c.yaml", "a_b_c"),
                                            ("plain.yaml", "plain"), ("x.yml", "x")])
def test_a_name_is_derived_from_a_dotted_file_name(tmp_path, filename, name):
    assert load_study(_write(tmp_path, _text(name=None), filename)).name == name


def test_a_file_name_that_gives_no_name_says_to_add_one(tmp_path):
    e = _error(_write(tmp_path, _text(name=None), "....yaml"))
    assert e.key == "" and "name:" in e.message and "'....yaml'" in e.message


def test_an_invalid_name_written_in_the_file_is_blamed_on_name(tmp_path):
    e = _error(_write(tmp_path, _text(name="my.study")))
    assert e.key == "name" and "'my.study'" in e.message


@pytest.mark.parametrize("threads", [-1, 1.5, True, "2", 10 ** 6])
def test_train_threads_is_validated(tmp_path, threads):
    e = _error(_write(tmp_path, _text(train__threads=threads)))
    assert e.key == "train.threads", e.paragraph()


def test_train_threads_zero_means_automatic_and_stays_valid(tmp_path):
    for threads in (0, 1, 16):
        assert load_study(_write(tmp_path, _text(train__threads=threads))).train.threads == threads


def test_a_dotted_file_name_runs_through_the_cli(tmp_path):
    path = _write(tmp_path, _text(name=None), "my.study.yaml")
    proc, _ = _run(["-m", "ablate.run", str(path), "--dry-run"], tmp_path)
    assert proc is not None and proc.returncode == 0, proc and proc.stderr
    assert proc.stdout.startswith("study my_study:")
