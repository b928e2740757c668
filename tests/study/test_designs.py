"""Comparison designs in study files (issue 29): ``comparisons: baseline | ladder | all_pairs |
factorial`` (the pairs, their families, the pre-flight's plan, the refusals), a fraction's runs and
aliasing, the report's ladder, every-pair and factorial sections, and the parameter warning with
its matched controls (``controls:``). The designs' error rates are simulated in
tests/stats/test_design_errors.py."""
from __future__ import annotations

import pytest
import yaml

from ablate.config.errors import StudyError
from ablate.report.markdown import render
from ablate.report.rows import table
from ablate.run.preflight import family_sizes
from ablate.study.designs import factorial_runs
from ablate.study.load import load_study

from support import tiny_study

SEEDS = [0, 1, 2, 3, 4, 5]
REFS = [{"K": 8, "label": "K 8"}, {"gcn": False, "K": 8, "label": "no gcn, K 8"}, {"mechanism": "none", "label": "plain"}]
EMA = {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "emanet",
       "args": {"K": 4, "T": 1, "T_eval": 1, "bases": "learned"}}
SWITCHES = {"gather": ["em", "softmax"], "shared_maps": [True, False], "descriptor_norm": ["l2", "none"],
            "out_relu": [True, False], "reduction": [1, 4]}
HALF = {"design": "factorial", "generators": {"reduction": "-gather*shared_maps*descriptor_norm*out_relu"}}


def _load(tmp_path, name="d", **kw):
    return load_study(tiny_study(tmp_path, name=name, **kw))


def _ema(tmp_path, name: str, comparisons, **kw):
    """The five EM/A2 switches of studies/em_factorial.yaml on a width-8 network."""
    path = tiny_study(tmp_path, name=name, model=EMA, comparisons=comparisons, **kw)
    doc = yaml.safe_load(path.read_text())
    doc["factors"], doc["baseline"] = SWITCHES, {}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_study(path)


def _ladder(tmp_path, **kw):
    return _load(tmp_path, kw.pop("name", "lad"), references=REFS, **kw)


def test_the_default_design_is_the_baseline_and_keeps_every_pair_and_key(tmp_path):
    plain = _ladder(tmp_path)
    said = _ladder(tmp_path, name="lad2", comparisons="baseline")
    assert [c.key for c in said.cells()] == [c.key for c in plain.cells()]
    pairs = [(c.title(), b.title()) for c, b in plain.comparison_pairs()]
    assert pairs == [(c.title(), b.title()) for c, b in said.comparison_pairs()]
    assert pairs == [("gcn=off", "gcn=on"), ("K 8", "gcn=on"), ("no gcn, K 8", "gcn=on"), ("plain", "gcn=on")]


def test_a_ladder_compares_each_rung_with_the_one_before_in_the_order_named(tmp_path):
    study = _ladder(tmp_path, comparisons={"design": "ladder", "rungs": ["gcn=on", "no gcn, K 8", "plain"]})
    pairs = [(c.title(), b.title(), study.family_of(c)) for c, b in study.comparison_pairs()]
    assert pairs == [("gcn=off", "gcn=on", "question"), ("K 8", "gcn=on", "references"),
                     ("no gcn, K 8", "gcn=on", "ladder"), ("plain", "no gcn, K 8", "ladder")]
    assert family_sizes(study) == {"question": 1, "references": 1, "ladder": 2}
    every = _ladder(tmp_path, comparisons="ladder")  # no rungs: every cell in the study's order
    assert [(c.title(), b.title()) for c, b in every.comparison_pairs()] == [
        ("gcn=off", "gcn=on"), ("K 8", "gcn=off"), ("no gcn, K 8", "K 8"), ("plain", "no gcn, K 8")]
    assert set(family_sizes(every)) == {"ladder"}


def test_all_pairs_is_one_family_with_each_cells_baseline_pair_first(tmp_path):
    study = _ladder(tmp_path, comparisons="all_pairs")
    pairs = study.comparison_pairs()
    assert len(pairs) == 10 and len({frozenset((c.key, b.key)) for c, b in pairs}) == 10
    assert [(c.title(), b.title()) for c, b in pairs[:4]] == [
        ("gcn=off", "gcn=on"), ("K 8", "gcn=on"), ("no gcn, K 8", "gcn=on"), ("plain", "gcn=on")]
    assert family_sizes(study) == {"all pairs": 10}


def test_a_full_factorial_has_no_pairs_but_its_effects_and_the_references_family(tmp_path):
    study = _load(tmp_path, "fac", factors={"gcn": [True, False], "K": [4, 8]}, references=[{"mechanism": "none"}],
                  comparisons="factorial")
    assert len(study.cells()) == 5
    assert [(c.title(), b.title()) for c, b in study.comparison_pairs()] == [("mechanism=none", "gcn=on, K=4")]
    assert family_sizes(study) == {"references": 1, "factorial": 3}
    levels = [lv for _, lv in factorial_runs(study, study.cells())]
    assert levels == [{"gcn": -1, "K": -1}, {"gcn": -1, "K": 1}, {"gcn": 1, "K": -1}, {"gcn": 1, "K": 1}]


def test_a_resolution_five_fraction_keeps_half_the_runs_and_leaves_the_other_keys_alone(tmp_path):
    full = _ema(tmp_path, "full", "factorial")
    half = _ema(tmp_path, "half", HALF)
    assert len(full.cells()) == 32 and len(half.cells()) == 16
    assert {c.key for c in half.cells()} <= {c.key for c in full.cells()}
    assert all(sum(v < 0 for v in lv.values()) % 2 == 1 for _, lv in factorial_runs(half, half.cells()))
    assert half.cells()[0].label_dict == {"gather": "em", "shared_maps": True, "descriptor_norm": "l2",
                                          "out_relu": True, "reduction": 1}  # the all-first run is in it
    assert family_sizes(half) == {"factorial": 15}


@pytest.mark.parametrize("change, key, words", [
    ({"comparisons": "pairs"}, "comparisons", "unknown design"),
    ({"comparisons": {"design": "ladder", "rungs": ["gcn=on"]}}, "comparisons.rungs", "at least two"),
    ({"comparisons": {"design": "ladder", "rungs": ["gcn=on", "nope"]}}, "comparisons.rungs[1]", "names no cell"),
    ({"comparisons": {"design": "baseline", "rungs": ["gcn=on", "gcn=off"]}}, "comparisons.rungs", "ladder"),
    ({"comparisons": "factorial", "factors": {"gcn": [True, False], "K": [4, 8, 16]}}, "comparisons", "two values"),
    ({"comparisons": "factorial"}, "comparisons", "at least two factors"),
    ({"comparisons": "factorial", "seeds": {"start": 3, "max": 6}, "factors": {"gcn": [True, False], "K": [4, 8]}},
     "comparisons", "sequential"),
    ({"comparisons": {"design": "factorial", "generators": {"K": "gcn"}},
      "factors": {"gcn": [True, False], "K": [4, 8]}}, "comparisons.generators", "resolution 2"),
    ({"comparisons": {"design": "factorial", "generators": {"K": "zz"}},
      "factors": {"gcn": [True, False], "K": [4, 8]}}, "comparisons.generators.K", "zz"),
    ({"comparisons": {"design": "ladder", "generators": {"K": "gcn"}}}, "comparisons.generators", "factorial"),
    ({"controls": {"gcn=off": "nope"}}, "controls.gcn=off", "names no cell"),
    ({"controls": ["gcn=off"]}, "controls", "mapping"),
])
def test_a_bad_design_is_an_error_naming_its_key(tmp_path, change, key, words):
    with pytest.raises(StudyError) as err:
        _load(tmp_path, "bad", **change)
    assert f"key '{key}'" in str(err.value) and words in str(err.value)


def _data(study, values: dict, params: dict) -> dict:
    recs = {k: [{"class_iou": [0.9, 0.5], "wall_s": 2.0, "compute_s": 1.5, "attention_params": params[k],
                 "attention_flops": 1000, "seed": s} for s in v] for k, v in values.items()}
    return {"values": values, "records": recs, "curves": {}, "pruned": [], "failed": [], "retry": []}


def test_the_report_shows_the_ladder_and_warns_where_parameters_move_without_a_control(tmp_path):
    study = _ladder(tmp_path, seeds=SEEDS, comparisons={"design": "ladder", "rungs": ["gcn=on", "gcn=off", "plain"]},
                    controls={"K 8": "gcn=on"})
    level = {"gcn=on": 0.80, "gcn=off": 0.81, "K 8": 0.85, "no gcn, K 8": 0.86, "plain": 0.42}
    values = {c.key: {s: level[c.title()] + 0.002 * s for s in SEEDS} for c in study.cells()}
    params = {c.key: p for c, p in zip(study.cells(), [2160, 1632, 2150, 1700, 0])}  # plain: no block
    md = render(study, _data(study, values, params), "mem")
    ladder = md.split("## Ladder")[1].split("##")[0]
    assert "1. gcn=off vs gcn=on" in ladder and "2. plain vs gcn=off" in ladder
    warn = md.split("**Parameters.**")[1].split("##")[0]
    # gcn=off vs gcn=on changes 24.4%: gcn=on has a declared control within 5% (2,150 vs 2,160)
    assert "gcn=off vs gcn=on: the block's parameters change by -24.4% (2,160 → 1,632); matched control " \
           "declared: K 8 for gcn=on (2,150 vs 2,160 parameters" in warn
    assert "plain vs" not in warn  # a block against no block (0 parameters) is not an ablation of a part
    assert "- K 8 vs gcn=on" not in warn  # -0.5%: within 5%
    assert "no gcn, K 8 vs gcn=on: the block's parameters change by -21.3% (2,160 → 1,700); matched" in warn
    tab = table(study, _data(study, values, params))
    assert {r["title"]: r["base"] for r in tab["rows"]}["plain"] == study.cells()[1].key  # the rung before
    bare = _ladder(tmp_path, name="lad3", seeds=SEEDS, comparisons="ladder")  # no control declared
    assert [c.key for c in bare.cells()] == list(params)
    md = render(bare, _data(bare, values, params), "m")
    assert "- ⚠ K 8 vs gcn=off: the block's parameters change by +31.7% (1,632 → 2,150), and no matched control " \
           "is declared" in md


def test_the_report_decides_a_fractions_effects_with_their_aliases(tmp_path):
    study = _ema(tmp_path, "half", HALF, seeds=SEEDS)
    # unimodal values with a large effect of gather and nothing else
    values = {}
    for c, lv in factorial_runs(study, study.cells()):
        values[c.key] = {s: 0.80 + 0.05 * lv["gather"] + 0.001 * ((s * 7 + hash(c.key)) % 5) for s in SEEDS}
    params = {c.key: 840 if c.label_dict["reduction"] == 4 else 2656 for c in study.cells()}
    md = render(study, _data(study, values, params), "mem")
    fac = md.split("## Factorial effects")[1].split("\n## ")[0]
    assert "A 2^(5-1) fraction (16 runs)" in fac and "resolution 5" in fac
    assert "I = -gather×shared_maps×descriptor_norm×out_relu×reduction" in fac
    row = next(ln for ln in fac.splitlines() if ln.startswith("| gather |"))
    assert "-shared_maps×descriptor_norm×out_relu×reduction" in row and "+10.0" in row and "**better" in row
    assert "| gather×shared_maps | -descriptor_norm×out_relu×reduction |" in fac
    assert "factorial run" in md.split("## Verdict")[0]
    assert "⚠ main effect of reduction: its second value changes the block's parameters by -68.4%" in md
    assert fac.count("\n| ") == 16  # the header and 15 effects


def test_a_factorial_without_every_run_says_what_is_missing(tmp_path):
    study = _load(tmp_path, "fac", factors={"gcn": [True, False], "K": [4, 8]}, comparisons="factorial", seeds=SEEDS)
    values = {c.key: {s: 0.8 for s in SEEDS} for c in study.cells()[:3]}
    md = render(study, _data(study, values, {k: 10 for k in values}), "mem")
    assert "Not decided yet: runs without a finished seed: gcn=off, K=8." in md
