"""A fake trainer with known per-seed values (the ``fake`` fixture patches it in), and the
four-cell study the sequential-seeds tests run it on."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import yaml

from ablate.storage import records as st

from support import tiny_study


EFFECTS = {"none": (0.50, 0.0), "glore": (0.62, 0.002), "nonlocal": (0.50, 0.0), "senet": (0.505, 0.03)}


ORDER = list(EFFECTS)


def fake_value(mechanism: str, seed: int) -> float:
    shared = np.random.default_rng([seed, 0]).normal(0, 0.01)
    mean, sd = EFFECTS[mechanism]
    return float(mean + shared + np.random.default_rng([seed, 1 + ORDER.index(mechanism)]).normal(0, sd))


def fake_run_trial(config, reporter=None, logger=None, threads=1, wandb=None):
    from ablate.config.trial import TrialConfig

    config = TrialConfig.of(config).as_dict()  # the runner hands the trainer a TrialConfig
    value = fake_value(config["mechanism"], config["seed"])
    block = os.environ.get("H6_FAKE_BLOCK")  # "mechanism:seed": that trial hangs (to be killed)
    if block == f"{config['mechanism']}:{config['seed']}":
        time.sleep(300)
    time.sleep(float(os.environ.get("H6_FAKE_SLEEP", "0")))
    if reporter is not None:
        reporter(0, value)
    return {"value": value, "final_val_miou": value, "best_val_miou": value, "curve": [value], "class_iou": [value],
            "val_pixels": 1, "pruned_epoch": None, "attention_params": 0, "attention_flops": 0, "total_params": 0,
            "compute_s": 0.01, "train_s": 0.01, "threads": 1, "fingerprint": None, "world_size": 1,
            "pid": os.getpid()}


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The runner with :func:`fake_run_trial` for a trainer, run from ``tmp_path``."""
    return patch_trainer(monkeypatch, tmp_path, fake_run_trial)


def patch_trainer(monkeypatch, tmp_path, run_trial):
    """Make ``run_trial`` the trainer every trial of this process (and of its forked children) calls;
    a test id for the run, W&B under ``tmp_path``, quick heartbeats; returns ``tmp_path``, now the cwd."""
    import ablate.trainer.trial

    monkeypatch.setattr(ablate.trainer.trial, "run_trial", run_trial)
    monkeypatch.setenv(st.RUN_ENV, "test")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("ABLATE_HEARTBEAT_S", "0.2")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def worker(path: str, index: int, run_dir: str, storage: str | None = None, *extra: str) -> None:
    """A worker of ``python -m ablate.run PATH`` in a forked child (it keeps the patched trainer)."""
    from ablate.run.command import main

    os._exit(main([path, "--run-dir", run_dir, "--no-wandb", "--no-report", "--worker", "--worker-index",
                   str(index), "--threads", "1", *(["--storage", storage] if storage else []), *extra]))


def two_workers(path, run_dir: str, storage: str | None = None, *extra: str) -> None:
    """Two forked workers of the same study on the same storage; both must exit 0."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the children keep the fake trainer
    procs = [ctx.Process(target=worker, args=(str(path), i, run_dir, storage, *extra)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]


def seq_study_file(tmp_path, seeds=None):
    """A four-cell study (the trainer is fake: the cells only need to be valid): each mechanism
    against none, seeds 3 to 8."""
    path = tiny_study(tmp_path, name="seq", seeds=seeds or {"start": 3, "max": 8})
    study = yaml.safe_load(path.read_text())
    study["factors"], study["baseline"] = {"mechanism": ORDER}, {"mechanism": "none"}
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
