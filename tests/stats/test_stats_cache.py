"""The seeds advice's cache on disk (ablate.stats.cache): a hit is the simulated answer, any changed
input or code is another key, and the cache can be off or unwritable without changing the answer."""
from __future__ import annotations

import pytest

from ablate.stats import cache
from ablate.stats import power as pw

ARGS = dict(test="perm", model=pw.TwoValued(0.2, 0.9), alpha=0.05, target=0.8, max_seeds=20, reps=200, seed=3)


def _fresh(**kw):
    return pw._seeds_for_power(**{**ARGS, **kw})


def test_a_hit_is_the_simulated_answer_and_skips_the_simulation(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    first = pw.seeds_for_power(**ARGS)
    assert first == _fresh() and isinstance(first, int)
    assert len(list((tmp_path / "stats").glob("*.json"))) == 1

    def boom(**_):
        raise AssertionError("simulated again on a hit")

    monkeypatch.setattr(pw, "_seeds_for_power", boom)
    assert pw.seeds_for_power(**ARGS) == first


@pytest.mark.parametrize("change", [dict(alpha=0.05 * (1 + 1e-12)), dict(seed=4), dict(reps=201), dict(target=0.81),
                                    dict(max_seeds=21), dict(test="boschloo"),
                                    dict(model=pw.TwoValued(0.2, 0.9, learned_sd=0.0100001)),
                                    dict(model=pw.Normal(0.2, 0.9))])
def test_any_changed_input_is_another_key(change):
    assert cache.key("power.seeds_for_power", **{**ARGS, **change}) != cache.key("power.seeds_for_power", **ARGS)


def test_a_changed_input_misses_and_computes(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    pw.seeds_for_power(**ARGS)
    expected = _fresh(model=pw.TwoValued(0.1, 0.9))
    calls = []
    real = pw._seeds_for_power
    monkeypatch.setattr(pw, "_seeds_for_power", lambda **kw: calls.append(kw) or real(**kw))
    assert pw.seeds_for_power(**dict(ARGS, model=pw.TwoValued(0.1, 0.9))) == expected
    assert len(calls) == 1
    assert pw.seeds_for_power(**ARGS) == real(**ARGS) and len(calls) == 1  # the first entry is still there


def test_other_code_is_another_key(monkeypatch):
    before = cache.key("power.seeds_for_power", **ARGS)
    monkeypatch.setattr(cache, "code_version", lambda module: "edited")
    assert cache.key("power.seeds_for_power", **ARGS) != before


def test_off_or_unwritable_gives_the_same_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CACHE", "off")
    assert pw.seeds_for_power(**ARGS) == _fresh()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("ABLATE_CACHE", str(blocked))
    assert pw.seeds_for_power(**ARGS) == _fresh()
    assert blocked.read_text() == "not a folder"


def test_a_corrupt_entry_is_computed_again(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    pw.seeds_for_power(**ARGS)
    (entry,) = (tmp_path / "stats").glob("*.json")
    entry.write_text("{not json")
    assert pw.seeds_for_power(**ARGS) == _fresh()


def test_the_key_covers_the_code_the_simulation_runs_and_no_other():
    names = {p.stem for p in cache.sources("power")}
    assert {"power", "exact", "robust", "ttests"} <= names  # what seeds_for_power calls, directly or not
    assert not names & {"decide", "feasibility", "sequential", "selection"}  # callers and strangers do not enter
