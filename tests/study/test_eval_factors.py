"""eval_factors: evaluation-time factors are checked when the study is loaded (one-paragraph
StudyError naming the key, exit 2 from the command, nothing run) and the dry run prints the
trainings, the evaluations and what they save against training every setting."""
from __future__ import annotations

import pytest
import yaml

from support import run_cli

from ablate.config.errors import StudyError
from ablate.study import load_study
from ablate.study.evaluations import eval_key, plan_lines

BASE = {"name": "ev", "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "emanet",
                                "args": {"K": 4, "T": 3, "T_eval": 3}},
        "data": {"task": "global_cue", "train_images": 16, "val_images": 8},
        "train": {"epochs": 1, "batch_size": 4, "threads": 1},
        "factors": {"T": [1, 3, 5]}, "seeds": 2, "screening": True,
        "eval_factors": {"T_eval": [1, 3, 5, 7]}}


def _write(tmp_path, **changes):
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes}, sort_keys=False))
    return path


def test_training_cells_keep_their_keys_and_settings_resolve(tmp_path):
    study = load_study(_write(tmp_path, eval_baseline={"T_eval": 3}))
    plain = load_study(_write(tmp_path, eval_factors=None))
    assert [c.key for c in study.cells()] == [c.key for c in plain.cells()]
    assert [dict(e.args) for e in study.evals] == [{"T_eval": t} for t in (1, 3, 5, 7)]
    keys = {eval_key(c.key, e) for c in study.cells() for e in study.evals}
    assert len(keys) == 12
    assert "3 trainings x 4 evaluations x 2 seeds: 6 trainings and 24 evaluations instead of 24 trainings " \
           "(saves 18 trainings)" in "\n".join(plan_lines(study))


def test_eval_mode_settings(tmp_path):
    study = load_study(_write(tmp_path, eval_factors={"eval.mode": ["whole", "ms_flip"], "T_eval": [3]}))
    whole, ms = (e.eval for e in study.evals)
    assert not whole.augmented and ms.flip and ms.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    slide = load_study(_write(tmp_path, eval_factors={"eval": [{"mode": "slide", "crop": [16, 16], "stride": [8, 8]}]}))
    assert slide.evals[0].eval.mode == "slide" and slide.evals[0].eval.crop == (16, 16)


@pytest.mark.parametrize("changes, key, words", [
    ({"eval_factors": {"K": [4, 8]}}, "eval_factors.K", "changes the trained weights"),
    ({"eval_factors": {"T": [1, 2]}, "factors": {"descriptor_norm": ["l2"]}}, "eval_factors.T", "training only"),
    ({"eval_factors": {"T": [1, 2]}}, "eval_factors.T", "also a training factor"),
    ({"eval_factors": {"gcn": [True]}}, "eval_factors.gcn", "is not a factor of emanet"),
    ({"eval_factors": {"eval.size": [1]}}, "eval_factors.eval.size", "unknown evaluation key"),
    ({"eval_factors": {"eval.mode": ["slide"]}}, "eval_factors.eval.crop", "mode slide needs crop"),
    ({"eval_factors": {"T_eval": 3}}, "eval_factors.T_eval", "non-empty list"),
    ({"eval_factors": {"T_eval": [0]}}, "eval_factors.T_eval", "not a valid value"),
    ({"eval_factors": {"T_eval": [3, 3]}}, "eval_factors.T_eval", "does not change what emanet computes"),
    ({"eval_baseline": {"T_eval": 9}}, "eval_baseline", "matches 0 evaluation settings"),
    ({"metric": "best_val_miou"}, "eval_factors", "must be val_miou"),
    ({"train": {"epochs": 1, "checkpoint_every": 0}}, "eval_factors", "final weights"),
    ({"eval_factors": None, "eval_baseline": {"T_eval": 3}}, "eval_baseline", "only valid with eval_factors"),
])
def test_bad_eval_factors_are_refused(tmp_path, changes, key, words):
    with pytest.raises(StudyError) as e:
        load_study(_write(tmp_path, **changes))
    assert e.value.key == key and words in e.value.message, e.value.message


def test_every_factor_declared_evaluation_only_keeps_the_weights_and_changes_the_output():
    """Factor.evaluation lets a study's eval_factors skip building the block: the declaration must be
    what building shows, for every built-in preset at its defaults."""
    from ablate.attention import MECHANISMS
    from ablate.study.evaluations import _check_weights_and_effect

    declared = [(p, f) for p in MECHANISMS.values() for f in p.factors if f.evaluation]
    assert {f.name for _, f in declared} == {"T_eval"}
    for preset, f in declared:
        low = f.minimum if f.minimum is not None else 0
        _check_weights_and_effect(preset, preset.defaults, f.name, [low, low + 2, f.default + 4], "test")


def test_command_prints_the_saving_and_exits_2_on_bad_input(tmp_path):
    ok = run_cli(["ablate.run", str(_write(tmp_path)), "--dry-run"], cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "3 trainings x 4 evaluations x 2 seeds: 6 trainings and 24 evaluations instead of 24 trainings" in ok.stdout
    bad = run_cli(["ablate.run", str(_write(tmp_path, eval_factors={"K": [4, 8]})), "--dry-run"], cwd=tmp_path,
                  timeout=300)
    assert bad.returncode == 2 and "eval_factors.K" in bad.stderr and "Nothing was run." in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 6 and not (tmp_path / "runs").exists()
