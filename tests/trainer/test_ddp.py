"""DDP within a trial: ``trainer:`` passes through to Lightning; a trial on two CPU processes
(gloo) sees the single process's batches split between the ranks, reduces its metrics over the
ranks, and reports through the worker (pruning included) like a one-process trial."""
from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from torch.utils.data import BatchSampler, RandomSampler

from ablate.storage import records as st
from ablate.data.synthetic import IGNORE_INDEX, SceneConfig, make_split
from ablate.config.errors import StudyError
from ablate.run.spawn import gpu_assignment
from ablate.study.load import STRATEGIES, TrainerSpec, load_study
from ablate.data.lightning import Batches as _Batches, RankSlices as _RankSlices
from ablate.trainer.trial import is_isolated, run_trial

from support import run_cli, tiny_study


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------

def test_default_trainer_is_one_cpu_process_and_keeps_cell_keys(tmp_path):
    study = load_study(tiny_study(tmp_path))
    assert study.trainer == TrainerSpec() and study.trainer.world_size == 1 and not study.trainer.isolated
    config = study.trial_config(*study.trials()[0])
    assert config["trainer"] == {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1,
                                 "sync_batchnorm": True}
    assert not is_isolated(config)
    # writing the defaults out changes nothing; two devices is another experiment (another key)
    same = load_study(tiny_study(tmp_path, name="same", trainer={"devices": 1, "accelerator": "cpu"}))
    two = load_study(tiny_study(tmp_path, name="two", trainer={"devices": 2, "strategy": "ddp"}))
    assert [c.key for c in same.cells()] == [c.key for c in study.cells()]
    assert not set(c.key for c in two.cells()) & set(c.key for c in study.cells())
    assert two.trainer.isolated and is_isolated(two.trial_config(*two.trials()[0]))


BAD = {
    "unknown_key": ({"gpus": 2}, "trainer.gpus", ["unknown key", "accelerator", "devices", "strategy", "num_nodes"]),
    "devices_type": ({"devices": "two"}, "trainer.devices", ["'two'", "integer"]),
    "devices_zero": ({"devices": 0}, "trainer.devices", ["out of range", ">= 1"]),
    "strategy": ({"strategy": "horovod"}, "trainer.strategy", ["'horovod'", *STRATEGIES]),
    "accelerator": ({"accelerator": "tpu"}, "trainer.accelerator", ["'tpu'", "cpu", "gpu"]),
    "sync_bn_type": ({"sync_batchnorm": "yes"}, "trainer.sync_batchnorm", ["true or false"]),
    "num_nodes": ({"num_nodes": 2}, "trainer.num_nodes", ["num_nodes must be 1", "--storage"]),
    "batch_not_divisible": ({"devices": 3}, "train.batch_size", ["16", "3 devices", "multiple of 3"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_trainer_section_is_a_study_error(tmp_path, case):
    raw, key, needles = BAD[case]
    with pytest.raises(StudyError) as e:
        load_study(tiny_study(tmp_path, trainer=raw))
    assert e.value.key == key, e.value.paragraph()
    for needle in needles:
        assert needle in e.value.paragraph(), (needle, e.value.paragraph())


def test_bad_trainer_through_the_cli_exits_2(tmp_path):
    path = tiny_study(tmp_path, trainer={"devices": 2, "strategy": "deepspeed"})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    assert "key 'trainer.strategy'" in " ".join(res.stderr.split())
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------
# sharding: what each rank sees
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, batch, world", [(64, 16, 2), (70, 16, 2), (96, 24, 4), (33, 8, 2)])
def test_rank_slices_partition_the_single_process_batches(n, batch, world):
    """Step by step, the ranks' batches put together are the one-process batch (same seeded
    permutation); a final batch too small to give every rank a sample is dropped."""
    def batches():
        return BatchSampler(RandomSampler(range(n), generator=torch.Generator().manual_seed(3)), batch, False)

    single = list(batches())
    per_rank = [list(_RankSlices(batches(), r, world)) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1, "every rank takes the same number of steps"
    kept = [b for b in single if len(b) >= world]
    assert len(per_rank[0]) == len(kept) == len(_RankSlices(batches(), 0, world))
    for step, whole in enumerate(kept):
        assert sum((per_rank[r][step] for r in range(world)), []) == whole
    assert list(_RankSlices(batches(), 0, 1)) == single  # one process: unchanged


class _FakeTrainer:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_shards_are_disjoint_and_cover_the_set(world):
    xv, yv = torch.zeros(37, 3, 4, 4), torch.zeros(37, 4, 4, dtype=torch.long)
    seen = []
    for r in range(world):
        dm = _Batches((xv, yv), (xv, yv), 16, 0)
        dm.trainer = _FakeTrainer(r, world)
        seen += [i for batch in dm.val_dataloader().sampler for i in batch]
    assert sorted(seen) == list(range(37))


def test_gpu_assignment_gives_each_worker_its_own_gpus():
    assert gpu_assignment(4, ["0", "1", "2", "3"], 1) == ["0", "1", "2", "3"]
    assert gpu_assignment(2, ["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    assert gpu_assignment(3, ["4", "5"], 1) == ["4", "5", "4"]  # more workers than GPUs: they share
    assert gpu_assignment(2, ["2", "5", "7"], 1) == ["2", "5"]  # respects an existing CUDA_VISIBLE_DEVICES
    with pytest.raises(StudyError):
        gpu_assignment(1, ["0"], 2)


# --------------------------------------------------------------------------------------------
# a real two-process trial (gloo, CPU)
# --------------------------------------------------------------------------------------------

def _ddp_config(tmp_path: Path, devices: int) -> dict:
    """The `local` task (texture only) trained to convergence: 256 images, global batch 16, 8
    epochs, no attention block (the task is local: texture alone decides the class)."""
    # no attention block: what is compared is DDP against one process, and the faithful GloRe
    # unit (zero-initialised output BN) is still climbing at epoch 7 of this schedule
    path = tiny_study(tmp_path, name=f"ddp{devices}", data={"task": "local", "train_images": 256, "val_images": 64},
                      model={"mechanism": "none", "args": {}},
                      train={"epochs": 8, "batch_size": 16, "lr": 0.01}, seeds=[0],
                      trainer={"devices": devices, "strategy": "ddp" if devices > 1 else "auto"})
    raw = yaml.safe_load(path.read_text())
    raw["factors"] = {"train.lr": [0.01]}  # tiny_study's gcn grid does not apply to 'none'
    raw["baseline"] = {"train.lr": 0.01}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    study = load_study(path)
    return study.trial_config(*study.trials()[0])


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """Same seed, same data, same global batch: the union of the two ranks' batches is the one
    process's batch at every step, so what differs is (a) BatchNorm statistics: each rank
    normalises its 8 images (torch's SyncBatchNorm is CUDA-only), and rank 0's running
    statistics are broadcast; (b) dropout masks: both ranks draw from the same seeded RNG; (c)
    the order of float sums in the all-reduce. These act like another draw of training noise,
    so the tolerance is the seed-to-seed spread of the converged one-process run (0.5 points):
    1 point. The trial is pruned after epoch 7 of 8 by its on_epoch hook, in both runs, which
    checks that rank 0's decision stops every rank.
    """
    single_cfg, ddp_cfg = _ddp_config(tmp_path, 1), _ddp_config(tmp_path, 2)
    assert single_cfg["cell_key"] != ddp_cfg["cell_key"]
    calls = {"single": [], "ddp": []}

    def hook(name):
        return lambda epoch, miou: calls[name].append((epoch, miou)) or epoch == 6

    single = run_trial(single_cfg, hook("single"), threads=1)
    ddp = run_trial(ddp_cfg, hook("ddp"), threads=2)
    assert ddp["world_size"] == 2 and ddp["pid"] != os.getpid(), "the trial ran in its own process"
    for r, name in ((single, "single"), (ddp, "ddp")):
        assert r["pruned_epoch"] == 6 and len(r["curve"]) == 7
        assert calls[name] == list(enumerate(r["curve"])), "every epoch reached the worker's hook, in order"
    # metrics are reduced over the ranks: every validation pixel is scored once
    _, yv = make_split(SceneConfig(**ddp_cfg["data"]), "val")
    assert ddp["val_pixels"] == single["val_pixels"] == int((yv != IGNORE_INDEX).sum())
    assert abs(ddp["curve"][-1] - single["curve"][-1]) <= 0.01, (single["curve"], ddp["curve"])
    # and it learned: this is not two untrained models agreeing (the local task at 8 epochs ends near
    # 0.58 or near 0.85 depending on the seed, so the bar is a clear rise, not the upper level)
    assert ddp["curve"][-1] > ddp["curve"][0] + 0.1 and ddp["curve"][-1] > 0.5


@pytest.mark.slow
def test_ddp_study_through_the_runner(tmp_path):
    """`python -m ablate.run` with `trainer: {devices: 2}`: the worker owns the trial and writes
    its record; rank 0 of the trial process makes the W&B run; the report is written."""
    path = tiny_study(tmp_path, factors={"gcn": [True]}, seeds=[0], train={"epochs": 1},
                      trainer={"devices": 2})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    trials = optuna.load_study(study_name="tiny", storage=st.open_storage(str(tmp_path / "runs/tiny/optuna.journal"))
                               ).get_trials()
    assert len(trials) == 1 and trials[0].state == optuna.trial.TrialState.COMPLETE
    t = trials[0]
    assert t.user_attrs["world_size"] == 2
    assert t.user_attrs["pid"] != t.system_attrs[st.ATTR + "pid"], "trained in a process of its own"
    assert json.loads(t.user_attrs["config"])["trainer"]["devices"] == 2
    assert t.intermediate_values == {0: t.value}
    assert len(list((tmp_path / "runs/tiny/wandb").glob("offline-run-*"))) == 1
    assert "1/1" in (tmp_path / "reports/tiny.md").read_text()
