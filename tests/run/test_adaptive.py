"""Sequential seeds (``seeds: {start, max, step}``): the study format, one look's bookkeeping,
and the runner adding seeds only where a comparison is undecided, exactly once under two
workers and a kill. The runner's tests train nothing: ``run_trial`` is replaced by a fake whose
values come from known distributions, so the stopping rule can be checked exactly."""
from __future__ import annotations

import io
import math
import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest

from ablate.run import command as R
from ablate import stats as S
from ablate.storage import records as st
from ablate.config.errors import StudyError
from ablate.stats.decide import exact_pvalue
from ablate.study.load import load_study

from support import run_cli, tiny_study
from support.fakes import two_workers, worker, ORDER, fake_value, seq_study_file

ALPHA = 0.05

# --- the study format ------------------------------------------------------------------------


def test_sequential_seeds_parse_and_plan_the_start(tmp_path):
    study = load_study(tiny_study(tmp_path, seeds={"start": 3, "max": 10}))
    assert study.sequential == {"start": 3, "max": 10, "step": 1}
    assert study.seeds == tuple(range(10))
    assert sorted({s for _, s in study.trials()}) == [0, 1, 2] and len(study.trials()) == 2 * 3
    fixed = load_study(tiny_study(tmp_path, name="fixed", seeds=[4, 2]))
    assert fixed.sequential is None and fixed.seeds == (4, 2) and len(fixed.trials()) == 4
    assert load_study(tiny_study(tmp_path, name="count", seeds=3)).seeds == (0, 1, 2)
    # the cells, and so the trials a fixed study with the same seeds ran, are the same
    assert [c.key for c in study.cells()] == [c.key for c in fixed.cells()]
    assert load_study(tiny_study(tmp_path, name="step", seeds={"start": 2, "max": 6, "step": 2})).sequential == \
        {"start": 2, "max": 6, "step": 2}


@pytest.mark.parametrize("seeds, key, words", [
    ({"start": 1, "max": 10}, "seeds.start", ">= 2"),
    ({"start": 5, "max": 4}, "seeds.max", ">= 5"),
    ({"start": 3, "max": 2000}, "seeds.max", "<= 1000"),
    ({"start": 3}, "seeds.max", "{start: 3, max: 10}"),
    ({"max": 10}, "seeds.start", "2 <= S <= M"),
    ({"start": 3, "max": 10, "every": 2}, "seeds.every", "start, max, step"),
    ({"start": 3, "max": 10, "step": 0}, "seeds.step", ">= 1"),
    ({"start": "3", "max": 10}, "seeds.start", "an integer"),
    ({"start": True, "max": 10}, "seeds.start", "an integer"),
])
def test_bad_sequential_seeds_name_the_key(tmp_path, seeds, key, words):
    with pytest.raises(StudyError) as e:
        load_study(tiny_study(tmp_path, seeds=seeds))
    assert e.value.key == key and words in e.value.message


def test_sequential_seeds_refuse_search_and_pruner(tmp_path):
    with pytest.raises(StudyError) as e:
        load_study(tiny_study(tmp_path, seeds={"start": 2, "max": 4}, baseline={},
                              factors={"K": {"low": 2, "high": 8}}, search={"n_trials": 2}))
    assert e.value.key == "seeds" and "search" in e.value.message
    with pytest.raises(StudyError) as e:
        load_study(tiny_study(tmp_path, seeds={"start": 2, "max": 4}, pruner="median"))
    assert e.value.key == "pruner" and "pruned" in e.value.message


def test_bad_sequential_seeds_exit_2_in_one_paragraph(tmp_path):
    path = tiny_study(tmp_path, seeds={"start": 3, "max": 2})
    res = run_cli(["ablate.run", str(path), "--dry-run"], cwd=tmp_path, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(path) in res.stderr and "seeds.max" in res.stderr and ">= 3" in res.stderr


def test_dry_run_prints_the_start_plan_and_the_max(tmp_path):
    study = load_study(tiny_study(tmp_path, seeds={"start": 3, "max": 10}, references=[{"mechanism": "none"}]))
    out = io.StringIO()
    R.print_plan(study, out)
    text = out.getvalue()
    assert "3 cells x 3 seeds to start = 9 trials, up to 10 seeds a cell = 30 trials" in text
    assert "seeds: 0, 1, 2 in every cell" in text and "3, 4, 5, 6, 7, 8, 9" in text
    assert ("at most 8 (seeds 3, 4, 5, 6, 7, 8, 9, 10); each compares an exact test with the Lan-DeMets "
            "obrien-fleming boundary at the family's holm share of alpha 0.05") in text
    assert "2 comparison(s)" in text


# --- one look's bookkeeping --------------------------------------------------------------------

def test_look_counts_and_the_per_look_alpha():
    assert S.look_counts(3, 10) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert S.look_counts(3, 10, 2) == [3, 5, 7, 9, 10] and S.look_counts(3, 9, 3) == [3, 6, 9]
    assert S.look_alpha(0.05, 3, 10) == pytest.approx(0.05 / 8)
    assert S.look_alpha(0.05, 3, 10, step=2) == pytest.approx(0.05 / 5)
    assert S.verdict_alpha(0.05, None) == 0.05
    # spending: the looks' nominal levels rise to the last one, which keeps most of alpha (O'Brien-Fleming),
    # far more than alpha / K over K looks (Bonferroni)
    levels = S.look_levels(0.05, 3, 10)
    assert len(levels) == 8 and all(a < b for a, b in zip(levels, levels[1:]))
    assert levels[0] < 1e-3 and 0.05 / 8 < levels[-1] < 0.05
    assert 0.05 / 8 < S.verdict_alpha(0.05, {"start": 3, "max": 10, "step": 1}) < 0.05
    with pytest.raises(ValueError):
        S.look_counts(4, 3)


def _vals(mapping):
    return {c: dict(enumerate(v)) for c, v in mapping.items()}


def test_a_look_grows_only_the_undecided_pairs_and_their_baseline():
    rng = np.random.default_rng(3)
    base = 0.5 + rng.normal(0, 0.01, 3)
    values = _vals({"base": base, "clear": base + 0.2 + rng.normal(0, 0.001, 3),  # better
                    "null": base.copy(),  # Δ = 0 exactly per seed: equivalent
                    "noisy": base + rng.normal(0, 0.05, 3),  # undecided, interval far wider than the margin
                    "other_base": 0.5 + rng.normal(0, 0.01, 3), "lonely": [0.3]})  # one value only
    done = {c: list(range(3)) for c in values}
    pairs = [("clear", "base"), ("null", "base"), ("noisy", "base"), ("lonely", "other_base")]
    look = S.sequential_look(values, done, pairs, 0.01, ALPHA, "holm", start=3, max_seeds=10)
    d = look.decisions
    assert d[("clear", "base")].label == "better" and d[("clear", "base")].look == 0
    assert d[("null", "base")].label == "equivalent"
    assert d[("noisy", "base")].label == "undecided" and d[("noisy", "base")].stop == ""
    assert d[("lonely", "other_base")].stop == "no test"
    assert look.decided == {("clear", "base"): True, ("null", "base"): True, ("noisy", "base"): False,
                            ("lonely", "other_base"): True}
    assert look.new == {"base": [3], "noisy": [3]}
    # the first look's level is the spending boundary's: tiny under O'Brien-Fleming
    assert look.index == 0 and look.n == 3 and look.alpha < 1e-3
    # step 2 adds two seeds a look and counts fewer looks
    look2 = S.sequential_look(values, done, pairs, 0.01, ALPHA, "holm", start=3, max_seeds=10, step=2)
    assert look2.new == {"base": [3, 4], "noisy": [3, 4]}


def test_a_precise_interval_stops_a_pair_even_when_inconclusive():
    # Δ = 0.8 points, spread 0.0118: not different from 0 at the first look's boundary, not equivalent
    # within ±1 (the TOST interval crosses +1 point), but the interval's half-width is below the
    # margin: more seeds would only narrow an interval already narrower than the margin
    d = 0.008 + np.array([-0.000118, 0.0, 0.000118])
    values = _vals({"base": np.zeros(3) + 0.5, "x": 0.5 + d})
    look = S.sequential_look(values, {"base": [0, 1, 2], "x": [0, 1, 2]}, [("x", "base")], 0.01, ALPHA, "none",
                             start=3, max_seeds=10)
    dec = look.decisions[("x", "base")]
    assert dec.label == "undecided" and dec.stop == "precise"
    assert look.decided[("x", "base")] and look.new == {}


def test_a_look_before_the_start_seeds_only_fills_them():
    look = S.sequential_look({"base": {0: 0.5}, "x": {}}, {"base": [0], "x": []}, [("x", "base")], 0.01, ALPHA,
                             "holm", start=3, max_seeds=10)
    assert look.new == {"base": [1, 2], "x": [0, 1, 2]} and look.index == -1


def test_bonferroni_decisions_stay_decided_under_holm():
    # the runner decides with Bonferroni; the report corrects with Holm: Holm's adjusted p is never
    # larger, so every pair the runner stopped on a verdict keeps a decided verdict in the report
    rng = np.random.default_rng(11)
    for _ in range(200):
        diffs = [S.paired_diff(rng.normal(rng.normal(0, 0.01), 0.01, 4), np.zeros(4)) for _ in range(4)]
        bon = S.judge_family(diffs, 0.01, ALPHA / 8, "bonferroni", seeds=False)
        holm = S.judge_family(diffs, 0.01, ALPHA / 8, "holm", seeds=False)
        for b, h in zip(bon, holm):
            if b.verdict.label != "inconclusive":
                assert h.verdict.label != "inconclusive"


def test_the_sequential_rule_keeps_wrong_calls_below_alpha():
    # null comparisons (true Δ = 0, spread 1-4 margins), run through sequential_look until it stops:
    # better/worse calls at the final look (the report's verdict) stay at or below alpha
    rng = np.random.default_rng(29)
    wrong = reps = 0
    for sd in (0.01, 0.02, 0.04):
        for _ in range(300):
            base = rng.normal(0.5, 0.01, 10)
            vals = {"base": base, "x": base + rng.normal(0, sd, 10)}
            n = 3
            while True:
                values = {c: dict(enumerate(v[:n])) for c, v in vals.items()}
                look = S.sequential_look(values, {c: list(range(n)) for c in vals}, [("x", "base")], 0.01, ALPHA,
                                         "holm", start=3, max_seeds=10)
                if not look.new:
                    break
                n = len(look.new["x"]) + n
            wrong += look.decisions[("x", "base")].label in ("better", "worse")
            reps += 1
    assert wrong / reps <= ALPHA


# --- the runner, with a fake trainer -----------------------------------------------------------

# mechanism -> (mean, own spread); every cell shares a per-seed offset (paired seeds)










def _trials(run_dir: Path):
    return optuna.load_study(study_name="seq", storage=st.open_storage(str(run_dir / "optuna.journal"))) \
        .get_trials(deepcopy=False)


def _finished(run_dir: Path) -> Counter:
    return Counter((t.params["mechanism"], t.user_attrs["seed"]) for t in _trials(run_dir)
                   if t.state == optuna.trial.TrialState.COMPLETE)


def _simulate(study) -> dict:
    """The seeds each mechanism ends with, by running sequential_look on the fake values alone."""
    seq, cells = study.sequential, study.cells()
    mech = {c.key: c.mechanism for c in cells}
    done = {c.key: list(range(seq["start"])) for c in cells}
    while True:
        values = {k: {s: fake_value(mech[k], s) for s in seeds} for k, seeds in done.items()}
        pairs = R.comparison_pairs(study, cells)
        by_key = {c.key: c for c in cells}
        look = S.sequential_look(values, done, pairs, study.margin / 100, ALPHA, study.correction, seq["start"],
                                 seq["max"], seq["step"], study.seeds, pvalue=exact_pvalue, kind="obf",
                                 families={p: study.family_of(by_key[p[0]]) for p in pairs}, precision=False)
        if not look.new:
            return {mech[k]: sorted(v) for k, v in done.items()}
        for k, seeds in look.new.items():
            done[k] = done[k] + seeds


def _run(path, *extra) -> int:
    return R.main([str(path), "--run-dir", "runs/seq", "--no-wandb", "--no-report", *extra])


def test_runner_adds_seeds_only_where_undecided_and_matches_the_rule(fake, capsys):
    path = seq_study_file(fake)
    study = load_study(path)
    assert _run(path) == 0
    got = _finished(fake / "runs/seq")
    assert set(got.values()) == {1}, "a cell x seed ran twice"
    seeds = {m: sorted(s for mm, s in got if mm == m) for m in ORDER}
    assert seeds == _simulate(study)
    # the null (nonlocal, equal in every seed) stops at the start; the clear one (glore) needs the seeds at
    # which the exact sign-flip test can pass the spending boundary (8); the noisy one (senet) runs to max
    assert seeds["nonlocal"] == [0, 1, 2]
    assert seeds["glore"] == seeds["senet"] == seeds["none"] == list(range(8))
    # the looks are recorded in storage, one seed at a time, for the undecided pairs only
    looks = optuna.load_study(study_name="seq", storage=st.open_storage(str(fake / "runs/seq/optuna.journal"))) \
        .user_attrs[R.LOOKS_ATTR]
    keys = {c.mechanism: c.key for c in study.cells()}
    assert [lk["added"] for lk in looks] == [{keys["none"]: [s], keys["glore"]: [s], keys["senet"]: [s]}
                                             for s in range(3, 8)]
    assert [lk["n"] for lk in looks] == [3, 4, 5, 6, 7]
    assert all(a["spent"] < b["spent"] < ALPHA for a, b in zip(looks, looks[1:]))  # alpha spent grows
    out = capsys.readouterr().out
    assert "look 1: 2 comparison(s) undecided" in out
    assert "sequential seeds: 5 look(s) added seeds; 27 of at most 32 trials finished" in out
    # the report replays the looks on what ran: clear better, null equivalent, noisy undecided
    values = {c.key: {} for c in study.cells()}
    for t in _trials(fake / "runs/seq"):
        values[t.user_attrs["cell_key"]][t.user_attrs["seed"]] = t.value
    pairs = R.comparison_pairs(study, study.cells())
    rp = S.replay(values, pairs, study.seeds, 3, 8, 1, ALPHA, "obf", exact_pvalue, study.margin / 100, "holm",
                  precision=False)
    labels = {next(c.mechanism for c in study.cells() if c.key == a): d.label for (a, _), d in rp.decisions.items()}
    assert labels == {"glore": "better", "nonlocal": "equivalent", "senet": "undecided"}
    assert rp.trials == 27 and rp.saved == 5
    # a rerun of a finished study runs nothing
    n = len(_trials(fake / "runs/seq"))
    assert _run(path) == 0 and len(_trials(fake / "runs/seq")) == n


def _check_once(trials, path: Path) -> None:
    got = Counter((t.params["mechanism"], t.user_attrs["seed"]) for t in trials
                  if t.state == optuna.trial.TrialState.COMPLETE)
    assert set(got.values()) == {1} and len(trials) == sum(got.values()), "a seed was created twice"
    assert {m: sorted(s for mm, s in got if mm == m) for m in ORDER} == _simulate(load_study(path))
    assert len({t.system_attrs[st.ATTR + "pid"] for t in trials}) == 2, "both workers took trials"


def test_two_workers_run_each_seed_once(fake, monkeypatch):
    monkeypatch.setenv("H6_FAKE_SLEEP", "0.15")
    path = seq_study_file(fake)
    two_workers(path, "runs/seq")
    _check_once(_trials(fake / "runs/seq"), path)


def test_two_workers_on_postgresql_run_each_seed_once(fake, monkeypatch, pg_url):
    monkeypatch.setenv("H6_FAKE_SLEEP", "0.15")
    path = seq_study_file(fake)
    two_workers(path, "runs/seq", pg_url)
    _check_once(optuna.load_study(study_name="seq", storage=st.open_storage(pg_url)).get_trials(deepcopy=False), path)


def test_a_killed_sequential_study_resumes_without_losing_or_repeating(fake, monkeypatch):
    path = seq_study_file(fake)
    monkeypatch.setenv("H6_FAKE_BLOCK", "senet:4")  # a seed a look added: the worker hangs there
    proc = multiprocessing.get_context("fork").Process(target=worker, args=(str(path), 0, "runs/seq"))
    proc.start()
    deadline, hung = time.time() + 120, None
    while time.time() < deadline and hung is None:
        time.sleep(0.2)
        if (fake / "runs/seq/optuna.journal").exists():
            try:
                hung = next((t for t in _trials(fake / "runs/seq") if t.state == optuna.trial.TrialState.RUNNING
                             and t.params["mechanism"] == "senet" and t.user_attrs["seed"] == 4), None)
            except KeyError:
                continue
    assert hung is not None, "the blocked trial never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    before = {(t.params["mechanism"], t.user_attrs["seed"]): t.value for t in _trials(fake / "runs/seq")
              if t.state == optuna.trial.TrialState.COMPLETE}
    monkeypatch.delenv("H6_FAKE_BLOCK")
    assert _run(path) == 0
    trials = _trials(fake / "runs/seq")
    got = _finished(fake / "runs/seq")
    assert set(got.values()) == {1}
    assert {m: sorted(s for mm, s in got if mm == m) for m in ORDER} == _simulate(load_study(path))
    assert trials[hung.number].system_attrs[st.ATTR + "fail_kind"] == "lost"
    for t in trials:  # what finished before the kill was kept, not run again
        pair = (t.params["mechanism"], t.user_attrs["seed"])
        if t.state == optuna.trial.TrialState.COMPLETE and pair in before:
            assert t.value == before[pair]
    assert math.isfinite(sum(before.values()))


@pytest.mark.slow
def test_a_real_sequential_study_with_two_worker_processes(tmp_path):
    """The whole path with the real trainer: `ablate.run --workers 2` on a tiny sequential study,
    every cell x seed once, each cell's seeds where the rule puts them given the values that ran,
    and the report."""
    path = tiny_study(tmp_path, seeds={"start": 2, "max": 4}, train={"epochs": 1})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--workers", "2", "--no-wandb"],
                  cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr + res.stdout
    study = load_study(path)
    trials = optuna.load_study(study_name="tiny", storage=st.open_storage(str(tmp_path / "runs/tiny/optuna.journal"))) \
        .get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pairs = Counter((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in done)
    assert set(pairs.values()) == {1} and len(trials) == len(done)
    values = {c.key: {} for c in study.cells()}
    for t in done:
        values[t.user_attrs["cell_key"]][t.user_attrs["seed"]] = t.value
    # replay the rule on the values that ran: it must stop exactly where the runner stopped
    seeds = {k: [0, 1] for k in values}
    while True:
        look = S.sequential_look({k: {s: values[k][s] for s in v} for k, v in seeds.items()}, seeds,
                                 R.comparison_pairs(study, study.cells()), study.margin / 100, ALPHA,
                                 study.correction, 2, 4)
        if not look.new:
            break
        seeds = {k: v + look.new.get(k, []) for k, v in seeds.items()}
    assert {k: sorted(v) for k, v in values.items()} == seeds
    assert "sequential seeds:" in res.stdout and (tmp_path / "reports/tiny.md").exists()
