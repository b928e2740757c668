"""Point searches (``search: {seeds_per_point, confirm, objectives, wilcoxon}``, ablate/run/search.py):
every sampled point runs on the same seeds, each (point, seed) exactly once whatever the workers;
Optuna is told the mean over a point's seeds; pruning judges the point; the best points and the
baseline are confirmed on fresh seeds. The runner's tests train nothing: ``run_trial`` is a fake
whose value is a known function of the cell's factors and the seed."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter

import numpy as np
import optuna
import pytest
import yaml

from ablate.config.errors import StudyError
from ablate.run import command as R
from ablate.storage import records as st
from ablate.storage.points import CONFIRM_ATTR, points_name
from ablate.study.load import load_study
from ablate.study.search import planned_trials

from support import tiny_study
from support.fakes import patch_trainer, two_workers

EFFECT = {"slope": 0.0}  # mIoU per doubling of K (0: the null, no factor matters)


def fake_value(cell: dict, seed: int) -> float:
    """The seed's shared offset (paired seeds), the cell's own small noise, and K's effect."""
    h = int(hashlib.sha1(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:8], 16)
    shared = np.random.default_rng([seed, 0]).normal(0, 0.02)
    effect = EFFECT["slope"] * math.log2(cell.get("K", 4))
    return float(0.6 + effect + shared + np.random.default_rng([seed, h]).normal(0, 0.01))


def fake_run_trial(config, reporter=None, logger=None, threads=1, wandb=None):
    from ablate.config.trial import TrialConfig

    c = TrialConfig.of(config)
    value = fake_value(dict(c.cell), c.seed)
    curve, pruned = [value - 0.1, value], None
    for e, v in enumerate(curve):
        if reporter is not None and reporter(e, v):
            curve, pruned = curve[:e + 1], e
            break
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    return {"value": curve[-1], "final_val_miou": curve[-1], "best_val_miou": max(curve), "curve": curve,
            "class_iou": [value], "val_pixels": 1, "pruned_epoch": pruned, "attention_params": 100,
            "attention_flops": 1000 * dict(c.args).get("K", 1), "total_params": 0, "compute_s": 0.01,
            "train_s": 0.01, "threads": 1, "fingerprint": None, "world_size": 1, "pid": os.getpid()}


@pytest.fixture
def fake(monkeypatch, tmp_path):
    EFFECT["slope"] = 0.0
    return patch_trainer(monkeypatch, tmp_path, fake_run_trial)


def search_file(tmp_path, name="ps", **search):
    spec = {"n_trials": 6, "seeds_per_point": 3, "sampler": "random", "confirm": {"top": 2, "seeds": 4}, **search}
    spec = {k: v for k, v in spec.items() if v is not None}  # None: the key left out
    return tiny_study(tmp_path, name=name, seeds=3, baseline={"gcn": True}, train={"epochs": 2},
                      factors={"K": {"low": 2, "high": 32, "log": True}, "gcn": [True, False]}, search=spec)


def run(path, *extra) -> int:
    return R.main([str(path), "--run-dir", "runs/ps", "--no-wandb", "--no-report", "--no-doctor", *extra])


def trials_of(tmp_path, name="ps", storage=None):
    store = st.open_storage(storage or str(tmp_path / "runs/ps/optuna.journal"))
    return (optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False),
            optuna.load_study(study_name=points_name(name), storage=store).get_trials(deepcopy=False),
            optuna.load_study(study_name=name, storage=store).user_attrs)


# --- the study format ------------------------------------------------------------------------

def test_point_search_parses_seeds_confirmation_and_objectives(tmp_path):
    study = load_study(search_file(tmp_path))
    assert study.point_search() and study.search_seeds() == [0, 1, 2]
    assert study.search["confirm"] == {"top": 2, "seeds": [3, 4, 5, 6]}  # fresh: after every listed seed
    assert planned_trials(study.search) == (18, 3 * 4 + 3)
    legacy = load_study(tiny_study(tmp_path, name="one", seeds=[0], baseline={}, factors={"K": {"low": 2, "high": 8}},
                                   search={"n_trials": 2}))
    assert not legacy.point_search() and legacy.search_seeds() == [0]
    multi = load_study(search_file(tmp_path, name="mo", objectives=["val_miou", "attn_flops"]))
    assert multi.search["sampler"] == "random" and multi.search["objectives"] == ["val_miou", "attn_flops"]
    assert load_study(search_file(tmp_path, name="mo2", sampler=None, objectives=["val_miou", "attn_flops"])) \
        .search["sampler"] == "nsga2"  # the default with several objectives


@pytest.mark.parametrize("search, key, words", [
    ({"seeds_per_point": 4}, "seeds", "seeds: 4"),
    ({"confirm": {"top": 2, "seeds": [1, 9]}}, "search.confirm.seeds", "fresh"),
    ({"confirm": {"top": 0}}, "search.confirm.top", ">= 1"),
    ({"objectives": ["attn_flops"]}, "search.objectives", "metric first"),
    ({"objectives": ["val_miou", "attn_speed"]}, "search.objectives[1]", "unknown cost"),
    ({"sampler": "nsga2"}, "search.sampler", "multi-objective"),
    ({"sampler": "grid", "objectives": ["val_miou", "attn_params"]}, "search.sampler", "several objectives"),
    ({"wilcoxon": {"p_threshold": 2}}, "search.wilcoxon.p_threshold", "<= 1"),
    ({"seeds_per_point": 1, "confirm": None, "wilcoxon": True}, "search.wilcoxon", "seeds_per_point >= 2"),
])
def test_bad_point_searches_name_the_key(tmp_path, search, key, words):
    with pytest.raises(StudyError) as e:
        load_study(search_file(tmp_path, **search))
    assert e.value.key == key and words in e.value.message


def test_a_point_search_refuses_pruners_it_cannot_use(tmp_path):
    path = search_file(tmp_path, objectives=["val_miou", "attn_flops"])
    text = path.read_text() + "pruner: median\n"
    path.write_text(text)
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.key == "pruner" and "several objectives" in e.value.message
    path = search_file(tmp_path, name="w", seeds_per_point=3, wilcoxon=True)
    path.write_text(path.read_text() + "pruner: median\n")
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert e.value.key == "pruner" and "choose one" in e.value.message


# --- the runner --------------------------------------------------------------------------------

def _check_search(tmp_path, storage=None, workers=1, **search):
    study = load_study(search_file(tmp_path, **search))
    n_points, top = study.search["n_trials"], study.search["confirm"]["top"]
    fresh = study.search["confirm"]["seeds"]
    trials, points, attrs = trials_of(tmp_path, storage=storage)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pairs = Counter((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in done)
    assert set(pairs.values()) == {1} and len(done) == len(trials), "a (point, seed) ran twice"
    assert len(points) == n_points and all(p.state == optuna.trial.TrialState.COMPLETE for p in points)
    by_key = {}
    for t in done:
        by_key.setdefault(t.user_attrs["cell_key"], {})[t.user_attrs["seed"]] = t.value
    for p in points:  # told the mean over its seeds, which are the search seeds, for every point
        vals = by_key[p.user_attrs["cell_key"]]
        assert {s for s in vals if s in (0, 1, 2)} == {0, 1, 2}
        assert p.value == pytest.approx(np.mean([vals[s] for s in (0, 1, 2)]))
    plan = attrs[CONFIRM_ATTR]
    unique = {p.user_attrs["cell_key"]: p.value for p in points if "same_as" not in p.user_attrs}
    unique.pop(study.baseline_point().key, None)
    best = sorted(unique, key=lambda k: -unique[k])[:top]
    assert [k for k, _ in plan["cells"]] == best and plan["seeds"] == fresh
    for key in best + [plan["baseline"]]:  # the confirmation: fresh seeds, each once
        assert {s for s in by_key[key] if s >= 3} == set(fresh)
    assert {s for s in by_key[plan["baseline"]] if s < 3} == {0, 1, 2}  # the baseline on the search seeds too
    phases = Counter(t.user_attrs["phase"] for t in done)
    n_search = 3 * len(unique | {k: 0 for k in unique}) + 3 * (study.baseline_point().key in
                                                                {p.user_attrs["cell_key"] for p in points})
    assert phases["confirm"] == len(trials) - phases["search"] and phases["search"] == n_search
    if workers > 1:
        assert len({t.system_attrs[st.ATTR + "pid"] for t in trials}) == workers, "both workers took trials"
    return trials, points


def test_a_point_search_runs_each_seed_once_tells_means_and_confirms(fake):
    assert run(search_file(fake)) == 0
    _check_search(fake)
    # the report's table is the confirmation: the baseline and the two confirmed points on the fresh seeds
    # only, judged by the decisive engine; a null search confirms no "better"
    from ablate.report.rows import table
    from ablate.storage.summary import collect

    study = load_study(search_file(fake))
    data = collect(study, str(fake / "runs/ps/optuna.journal"))
    tab = table(study, data)
    plan = data["points"]["plan"]
    assert [c.key for c in tab["cells"]] == [plan["baseline"]] + [k for k, _ in plan["cells"]]
    assert [r["role"] for r in tab["rows"]] == ["baseline", "compared", "compared"]
    assert all(r["n"] == 4 and r["planned"] == 4 for r in tab["rows"])  # fresh seeds 3..6 alone
    assert all(x["d"].n == 4 for x in tab["comps"].values())
    assert not any(r.get("verdict") == "better" for r in tab["rows"])
    assert [r["mean"] for r in tab["search"]["rows"]][:2] == sorted([r["mean"] for r in tab["search"]["rows"]],
                                                                     reverse=True)[:2]
    assert data["pending"] == 0 and data["running"] == 0
    from ablate.report.markdown import render

    text = render(study, data, "journal", tab)
    for words in ("**The table is the confirmation**", "fresh seeds (3, 4, 5, 6)", "## Search (optimistic",
                  "### Search scores against confirmed verdicts", "### Which factor matters", "inflation"):
        assert words in text
    n = len(trials_of(fake)[0])
    assert run(search_file(fake)) == 0 and len(trials_of(fake)[0]) == n  # a finished search runs nothing more


def test_two_workers_run_each_point_seed_once(fake, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.1")
    two_workers(search_file(fake), "runs/ps", None, "--no-doctor")
    _check_search(fake, workers=2)


def test_two_workers_on_postgresql_run_each_point_seed_once(fake, monkeypatch, pg_url):
    monkeypatch.setenv("FAKE_SLEEP", "0.05")
    small = {"n_trials": 3, "confirm": {"top": 1, "seeds": 2}}  # 9 search and 7 confirmation trials
    two_workers(search_file(fake, **small), "runs/ps", pg_url, "--no-doctor")
    _check_search(fake, storage=pg_url, workers=2, **small)


def test_an_epoch_pruner_judges_the_point_mean_curve(fake):
    EFFECT["slope"] = 0.05  # large K is better: the pruner has points to stop
    path = search_file(fake, n_trials=10, confirm=None)
    path.write_text(path.read_text() + "pruner: {name: median, n_startup_trials: 2}\n")
    assert run(path) == 0
    trials, points, _ = trials_of(fake)
    stopped = [p for p in points if p.state == optuna.trial.TrialState.PRUNED]
    assert stopped, "no point was pruned"
    by_point = Counter(t.user_attrs["point"] for t in trials)
    for p in stopped:  # a stopped point: its curve is the mean over the seeds that reached epoch 0, and it
        assert p.user_attrs["stopped"] == "epoch 0"  # runs no seed after the one that stopped it
        assert by_point[p.number] < 3 or any(t.state == optuna.trial.TrialState.PRUNED for t in trials
                                             if t.user_attrs["point"] == p.number)
        seeds = [t for t in trials if t.user_attrs["point"] == p.number]
        mean0 = np.mean([t.intermediate_values[0] for t in seeds])
        assert p.intermediate_values[0] == pytest.approx(mean0)
    for p in points:
        if p.state == optuna.trial.TrialState.COMPLETE:
            assert len([t for t in trials if t.user_attrs["point"] == p.number]) == 3


def test_the_wilcoxon_pruner_stops_a_worse_point_between_seeds(fake):
    EFFECT["slope"] = 0.05
    path = tiny_study(fake, name="ps", seeds=8, baseline={}, train={"epochs": 2},
                      factors={"K": {"choices": [2, 32]}},
                      search={"n_trials": 4, "seeds_per_point": 8, "sampler": "grid",
                              "wilcoxon": {"p_threshold": 0.1, "n_startup_steps": 3}})
    assert run(path) == 0
    trials, points, _ = trials_of(fake)
    state = {p.params["K"]: p.state for p in points if "same_as" not in p.user_attrs}
    ran = Counter(json.loads(t.user_attrs["cell"])["K"] for t in trials)
    # the grid sampler (seeded) draws K = 32 first: K = 2, worse on every seed, is compared with it seed by
    # seed and stopped once the signed-rank test says so, before its eighth seed
    assert [p.params["K"] for p in points][0] == 32
    assert ran[32] == 8 and state[32] == optuna.trial.TrialState.COMPLETE
    assert state[2] == optuna.trial.TrialState.PRUNED and 3 <= ran[2] < 8
    assert next(p for p in points if p.params["K"] == 2).user_attrs["stopped"] == "wilcoxon"


# --- the report: importances, figures, the Pareto front --------------------------------------------

def _table(fake, path):
    from ablate.report.rows import table
    from ablate.storage.summary import collect

    study = load_study(path)
    return study, table(study, collect(study, str(fake / "runs/ps/optuna.journal")))


def test_importances_name_the_factor_that_matters_with_their_spread(fake):
    from ablate.report import importance

    EFFECT["slope"] = 0.03  # K matters (3 points of mIoU a doubling), gcn does not
    path = search_file(fake, n_trials=10, confirm=None)
    assert run(path) == 0
    study, tab = _table(fake, path)
    imp = importance.importances(study, tab["search"])
    for name in importance.EVALUATORS:
        assert set(imp[name]["seeds"]) == {0, 1, 2}  # one importance per search seed: the spread
        assert imp[name]["told"]["K"] > imp[name]["told"]["gcn"]
        assert sum(imp[name]["told"].values()) == pytest.approx(1.0)
    assert min(v["K"] for v in imp["fANOVA"]["seeds"].values()) > 0.5
    lines = "\n".join(importance.importance_lines(study, tab["search"]))
    assert "| K | " in lines and "over seeds [min, max]" in lines
    from ablate.report.figures import figures, svg

    drawn = {stem: fig for stem, _, fig in figures(study, tab, {"curves": {}})}
    assert [s for s in drawn if s in ("history", "importance", "dependence", "pareto")] == \
        ["history", "importance", "dependence"]  # one objective: no Pareto front
    for stem in ("history", "importance", "dependence"):  # the layout frozen once: the same bytes each time
        assert svg(drawn[stem], stem) == svg(drawn[stem], stem)


def test_a_multi_objective_search_confirms_its_pareto_front(fake):
    EFFECT["slope"] = 0.03  # a larger K is better and costs more FLOPs (the fake records 1000 K)
    path = search_file(fake, n_trials=8, objectives=["val_miou", "attn_flops"], confirm={"top": 3, "seeds": 3})
    assert run(path) == 0
    trials, points, attrs = trials_of(fake)
    assert all(len(p.values) == 2 for p in points if p.state == optuna.trial.TrialState.COMPLETE)
    for p in points:
        if p.state == optuna.trial.TrialState.COMPLETE:  # the cost told is the trials' record, the metric the mean
            assert p.values[1] == pytest.approx(1000 * json.loads(p.user_attrs["cell"])["K"])
    study = optuna.load_study(study_name=points_name("ps"), storage=st.open_storage(str(fake / "runs/ps/optuna.journal")))
    front = {t.user_attrs["cell_key"] for t in study.best_trials}
    plan = attrs[CONFIRM_ATTR]
    assert plan["cells"] and {k for k, _ in plan["cells"]} <= front and len(plan["cells"]) <= 3
    s, tab = _table(fake, path)
    from ablate.report import importance

    assert [stem for stem, _, _ in importance.figures(s, tab)][-1] == "pareto"


def test_dry_run_plans_the_points_and_the_confirmation_and_the_preflight_judges_it(tmp_path, monkeypatch):
    import io

    from ablate.run import preflight

    study = load_study(search_file(tmp_path))
    out = io.StringIO()
    R.print_plan(study, out)
    text = out.getvalue()
    assert "point search of 6 points x 3 seeds = 18 trials" in text and "then 15 confirmation trials" in text
    assert "fresh seeds 3, 4, 5, 6" in text and "search seeds: 0, 1, 2" in text
    # the verdicts come from the confirmation: its family (top 2 against the baseline) at its fresh seeds
    assert preflight.family_sizes(study) == {"question": 2}
    found = preflight.checks(study, power=False)
    assert [f.n for f in found] == [4] and not found[0].decidable  # 4 seeds cannot reach 0.05 / 2 exactly
    monkeypatch.delenv(preflight.ENV_ALLOW, raising=False)
    err = preflight.refusal(study, found, allow=False)
    assert err.key == "search.confirm.seeds" and "search.confirm.seeds: 5" in err.message
    enough = load_study(search_file(tmp_path, name="five", confirm={"top": 2, "seeds": 5}))
    assert preflight.refusal(enough, preflight.checks(enough, power=False), allow=False) is None


def test_a_conditional_search_samples_each_mechanisms_own_factors(fake):
    """mechanism x (K, T for EMANet; reduction for all three): each point has the factors of its mechanism."""
    path = tiny_study(fake, name="ps", seeds=2, train={"epochs": 2},
                      search={"n_trials": 8, "seeds_per_point": 2, "sampler": "random"})
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "emanet", "args": {}}
    raw["factors"] = {"mechanism": {"choices": ["emanet", "gcnet", "nonlocal"]},
                      "K": {"low": 2, "high": 16, "log": True}, "T": {"low": 1, "high": 3}, "reduction": {"low": 1, "high": 4}}
    raw["baseline"] = {"mechanism": "emanet"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(path)
    assert study.distributions()["T"].__class__.__name__ == "IntDistribution"
    assert run(path) == 0
    _, points, _ = trials_of(fake)
    mechs = set()
    for p in points:
        mech = p.params["mechanism"]
        mechs.add(mech)
        want = {"mechanism", "reduction"} | ({"K", "T"} if mech == "emanet" else set())
        assert set(p.params) == want, p.params
    assert len(mechs) >= 2
    raw["factors"] = {"mechanism": {"choices": ["gcnet", "nonlocal"]}, "K": {"low": 2, "high": 8}}
    raw["model"]["mechanism"], raw["baseline"] = "gcnet", {}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(StudyError) as e:  # a factor no sampled mechanism has
        load_study(path)
    assert e.value.key == "factors.K"
