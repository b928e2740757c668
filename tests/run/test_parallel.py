"""Workers and threads when the command line leaves them out (ablate/run/parallel.py)."""
from __future__ import annotations

import dataclasses

import pytest

from ablate.run import parallel
from ablate.run.command import main
from ablate.study.load import load_study

from support import tiny_study


pytestmark = pytest.mark.usefixtures("own_environment")  # tests/run/conftest.py

GIB = 2**30


def _split(choice) -> tuple[int, int]:
    return choice.workers, choice.threads


def test_one_worker_a_core_up_to_the_trials_and_threads_share_the_cores(tmp_path):
    study = load_study(tiny_study(tmp_path, train={"threads": 0}))  # 2 cells x 2 seeds, threads not fixed
    assert _split(parallel.choose(study, n_cores=2, available=64 * GIB)) == (2, 1)
    assert _split(parallel.choose(study, n_cores=16, available=64 * GIB)) == (4, 4)  # 4 trials: 4 workers
    assert _split(parallel.choose(study, n_cores=1, available=64 * GIB)) == (1, 1)


def test_memory_caps_the_workers_and_says_so(tmp_path):
    study = load_study(tiny_study(tmp_path))
    choice = parallel.choose(study, n_cores=4, available=int(1.5 * parallel.PROCESS_BYTES / parallel.MEMORY_SHARE))
    assert choice.workers == 1 and "memory for 1 worker" in choice.why


def test_a_study_that_fixes_its_threads_gets_cores_over_threads_workers(tmp_path):
    study = load_study(tiny_study(tmp_path, train={"threads": 2}))
    assert _split(parallel.choose(study, n_cores=6, available=64 * GIB)) == (3, 0)


def test_gpus_give_one_worker_per_trial_group(tmp_path):
    study = load_study(tiny_study(tmp_path))
    study = dataclasses.replace(study, trainer=dataclasses.replace(study.trainer, accelerator="gpu", devices=2))
    assert parallel.choose(study, n_cores=32, gpus=4).workers == 2


def test_the_run_prints_its_choice_and_the_environment_or_flags_override_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(parallel.WORKERS_ENV, raising=False)
    monkeypatch.setattr(parallel, "cores", lambda: 1)  # one core: one in-process worker, the rule still said
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 1})
    argv = [str(path), "--run-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "rep"), "--no-wandb",
            "--no-report"]
    assert main(argv) == 0
    assert "1 worker(s) x 1 thread(s) (chosen: 1 CPU core(s), 2 trial(s) to start" in capsys.readouterr().out
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    argv[2] = str(tmp_path / "r2")
    assert main(argv) == 0
    assert "(chosen:" not in capsys.readouterr().out


def test_bench_parallel_splits_the_cores_and_times_each_split(tmp_path, capsys):
    from ablate.run import bench_parallel as bp

    assert bp.splits_for(4) == [(1, 4), (2, 2), (4, 1)] and bp.splits_for(2) == [(1, 2), (2, 1)]
    text = bp.table([(1, 2, 30.0, 4, 0), (2, 1, 20.0, 4, 0), (4, 1, 9.0, 4, 3)], (2, 1))
    assert "| 2 x 1 (chosen) | 4 | 20.0 | 5.0 | 1.00 |" in text and "| 1 x 2 | 4 | 30.0 | 7.5 | 1.50 |" in text
    assert "failed (exit 3)" in text
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 1})
    assert bp.main([str(path), "--splits", "1x1", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "| 1 x 1" in out and "trials per split" in out
