"""ablate estimate (ablate/run/estimate.py): measured seconds per iteration, the arithmetic of the
table, real-data studies without their data, and exit code 2 on bad input."""
from __future__ import annotations

import math
import textwrap

import pytest
import torch

from ablate.run import estimate as est
from ablate.study.load import load_study

TINY = textwrap.dedent("""\
    name: tiny_estimate
    question: how long
    model: {backbone: {name: small_cnn, width: 8, depth: 2}, mechanism: none}
    data: {name: synthetic, size: 32, train_images: 40, val_images: 8}
    train: {epochs: 2, batch_size: 16}
    factors: {mechanism: [none, nonlocal]}
    seeds: 3
    """)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_measured_times_are_positive_and_finite(tiny):
    study = load_study(tiny)
    rows, notes = est.estimate(study, torch.device("cpu"), iterations=1, warmup=1)
    assert [r.title for r in rows] == ["mechanism=none", "mechanism=nonlocal"] and notes == []
    for r in rows:
        assert math.isfinite(r.seconds_per_iteration) and r.seconds_per_iteration > 0
        assert r.iterations == 2 * math.ceil(40 / 16)  # epochs x batches (the last short one kept)
        assert r.seeds == 3 and not r.extrapolated


def test_the_table_multiplies_iterations_time_and_seeds(tiny, monkeypatch, capsys):
    times = iter([0.25, 0.5])
    monkeypatch.setattr(est, "time_step", lambda *a, **k: next(times))
    assert est.main([str(tiny), "--cpu"]) == 0
    out = capsys.readouterr().out
    assert "[CPU figure]" in out
    none = next(line for line in out.splitlines() if line.startswith("mechanism=none "))
    assert none.split()[1:] == ["0.2500", "6", "1.5", "3", "4.5"]  # no spread from a bare number
    nonlocal_ = next(line for line in out.splitlines() if line.startswith("mechanism=nonlocal"))
    assert nonlocal_.split()[1:] == ["0.5000", "6", "3.0", "3", "9.0"]
    assert "6 trials, 13.5 s" in out  # (0.25 + 0.5) x 6 iterations x 3 seeds


def test_each_column_has_one_unit_and_the_spread_is_printed(tiny, monkeypatch, capsys):
    """One cell's trial under 6 minutes, the other's over: the column is in hours for both (the
    unit in its head), and each row carries its IQR."""
    times = iter([(0.25, 0.01), (100.0, 4.0)])
    monkeypatch.setattr(est, "time_step", lambda *a, **k: next(times))
    assert est.main([str(tiny), "--cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(ln for ln in lines if ln.startswith("cell "))
    assert "IQR s/iter" in head and "trial h" in head and "all seeds h" in head
    none = next(ln for ln in lines if ln.startswith("mechanism=none ")).split()
    big = next(ln for ln in lines if ln.startswith("mechanism=nonlocal")).split()
    assert none[1:] == ["0.2500", "0.0100", "6", f"{1.5 / 3600:.1f}", "3", f"{4.5 / 3600:.1f}"]
    assert big[1:] == ["100.0000", "4.0000", "6", f"{600 / 3600:.1f}", "3", f"{1800 / 3600:.1f}"]


def test_overrides_change_what_is_estimated(tiny, monkeypatch, capsys):
    monkeypatch.setattr(est, "time_step", lambda *a, **k: 1.0)
    assert est.main([str(tiny), "train.epochs=5", "seeds=2", "--cpu"]) == 0
    out = capsys.readouterr().out
    assert "4 trials, 60.0 s" in out  # 2 cells x 2 seeds x 5 epochs x 3 batches x 1 s


def test_budget_extrapolates_the_remaining_cells(tiny, monkeypatch):
    calls = []

    def fake(*a, **k):
        calls.append(1)
        return 0.7

    monkeypatch.setattr(est, "time_step", fake)
    monkeypatch.setattr(est.time, "perf_counter", iter(range(0, 1000, 10)).__next__)  # 10 s per cell
    rows, _ = est.estimate(load_study(tiny), torch.device("cpu"), budget=5)
    assert len(calls) == 1 and rows[1].extrapolated and rows[1].seconds_per_iteration == pytest.approx(0.7)


def test_a_real_study_without_its_data_is_shaped_from_the_standard_split():
    study = load_study("studies/voc_zoo.yaml", check_files=False)
    cell = study.cells()[0]
    config = study.trial_config(cell, 0)
    shape = est.cell_shape(config, study.trainer.world_size)
    assert (shape.classes, shape.batch, shape.crop) == (21, 16 // 4, (512, 512))
    assert shape.train_images == 1464 + 10582 and "not found" in shape.images_note
    assert est.iterations_per_trial(config["train"], shape, real=True) == 40000
    assert est._timing_config(config)["backbone"]["pretrained"] == "none"



def test_the_split_size_note_only_where_epochs_need_it(monkeypatch):
    monkeypatch.setattr(est, "time_step", lambda *a, **k: 1.0)
    study = load_study("studies/voc_zoo.yaml", check_files=False)
    _, notes = est.estimate(study, torch.device("cpu"))
    assert not any("split size" in n for n in notes)  # train.iterations: the split size does not matter
    from ablate.study.overrides import load_with_overrides

    study = load_with_overrides("studies/voc_zoo.yaml", ["train.iterations=0", "train.val_interval=0",
                                                         "train.epochs=2"], check_files=False)
    rows, notes = est.estimate(study, torch.device("cpu"))
    assert any("standard split size (12,046 images)" in n for n in notes)
    assert rows[0].iterations == 2 * (12046 // 16)  # the real loader drops the last short batch


def test_epochs_on_real_data_drop_the_last_short_batch():
    shape = est.Shape(21, 4, (64, 64), 10)
    assert est.iterations_per_trial({"epochs": 3, "batch_size": 4}, shape, real=True) == 3 * 2
    assert est.iterations_per_trial({"epochs": 3, "batch_size": 4}, shape, real=False) == 3 * 3


def test_real_class_counts_are_mmsegs():
    pytest.importorskip("mmseg")
    from ablate.data.real import _import_mmseg

    datasets = _import_mmseg()[0]
    for name, cls in (("voc", datasets.PascalVOCDataset), ("cityscapes", datasets.CityscapesDataset),
                      ("ade20k", datasets.ADE20KDataset)):
        assert est.REAL_CLASSES[name] == len(cls.METAINFO["classes"])


@pytest.mark.parametrize("argv", [["missing.yaml"], ["{tiny}", "train.epochs=0"], ["{tiny}", "--iterations", "0"],
                                  ["{tiny}", "nosuchkey=1"]])
def test_bad_input_exits_2(tiny, argv, capsys):
    argv = [a.format(tiny=tiny) for a in argv]
    with pytest.raises(SystemExit) as e:
        est.main(argv)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
