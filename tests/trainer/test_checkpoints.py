"""Mid-trial checkpoints (ablate/trainer/checkpoints.py): a trial killed with SIGKILL and resumed gives the
same curve and mIoU, bit for bit, as one never killed; atomic files, pruning, fallback, deletion."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from ablate.trainer import checkpoints as C
from ablate.storage import records as st
from ablate.study.load import load_study
from ablate.trainer.trial import run_trial
from support import REPO, tiny_study

ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _study(tmp_path: Path, **train) -> Path:
    return tiny_study(tmp_path, seeds=[0, 1], factors={"gcn": [True]}, baseline={},
                      data={"task": "global_cue", "train_images": 64, "val_images": 16},
                      train={"epochs": 6, "lr": 0.05, **train})


def _run(study: Path, run_dir: Path, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablate.run", str(study), "--run-dir", str(run_dir), "--no-report", "--no-wandb",
           "--no-doctor"]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _trials(run_dir: Path, name: str = "tiny"):
    store = st.open_storage(str(run_dir / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


def test_a_trial_killed_mid_way_resumes_to_the_same_curve_bit_for_bit(tmp_path):
    path = _study(tmp_path)
    study = load_study(path)
    key = study.cells()[0].key
    ref = _run(path, tmp_path / "ref")
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out

    run_dir = tmp_path / "killed"
    folder = run_dir / "checkpoints" / "tiny" / f"{key}-s0"
    t0 = time.perf_counter()
    proc = _run(path, run_dir, start_new_session=True)
    while not C.checkpoint_files(folder):  # the first checkpoint of seed 0 (after epoch 1 of 6)
        assert proc.poll() is None, proc.stdout.read()
        assert time.perf_counter() - t0 < 300, "no checkpoint was written"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (first,) = _trials(run_dir)
    assert first.state == optuna.trial.TrialState.RUNNING  # killed mid-trial, not after it
    saved = C.checkpoint_files(folder)
    assert saved and first.system_attrs[C_ATTR] == str(folder.absolute())

    again = _run(path, run_dir)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert "resumed from its checkpoint" in out

    ref_trials = {t.user_attrs["seed"]: t for t in _trials(tmp_path / "ref")}
    trials = _trials(run_dir)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["seed"] for t in complete) == [0, 1]  # one each, none repeated
    lost = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(trials) == 3 and [t.system_attrs[st.ATTR + "fail_kind"] for t in lost] == ["lost"]
    for t in complete:
        r = ref_trials[t.user_attrs["seed"]]
        assert t.user_attrs["curve"] == r.user_attrs["curve"] and len(r.user_attrs["curve"]) == 6
        assert t.value == r.value and t.intermediate_values == r.intermediate_values
    resumed = next(t for t in complete if t.user_attrs["seed"] == 0)
    info = resumed.system_attrs[st.RESUMED_ATTR]
    steps = [int(p.name[len(C.PREFIX):-len(C.SUFFIX)]) for p in saved]
    assert info["step"] >= max(steps) > 0 and info["step"] == 4 * info["epoch"]  # 4 batches an epoch
    assert resumed.system_attrs[C_ATTR] == str(folder.absolute())
    assert st.RESUMED_ATTR not in next(t for t in complete if t.user_attrs["seed"] == 1).system_attrs
    assert [p.name for p in folder.iterdir()] == [C.FINAL]  # checkpoints deleted once the trial finished; its weights kept


C_ATTR = st.CHECKPOINT_ATTR


# -- the files ---------------------------------------------------------------------------------------

def _fake(path: Path, tag: int) -> None:
    torch.save({"state_dict": {"w": torch.tensor([tag])}, C.STATE: {"tag": tag}}, path)


def _name(step: int) -> str:
    return f"{C.PREFIX}{step:010d}{C.SUFFIX}"


def test_a_temp_file_is_never_loaded_and_a_corrupt_newest_falls_back(tmp_path):
    _fake(tmp_path / _name(4), 4)
    (tmp_path / f".{_name(12)}.tmp-99").write_bytes(b"\x80half a pickle")  # a writer killed mid-write
    assert C.checkpoint_files(tmp_path) == [tmp_path / _name(4)]
    said = []
    (tmp_path / _name(8)).write_bytes(b"not a checkpoint")  # corrupt newest
    path, ckpt = C.load_newest(tmp_path, said.append)
    assert path == tmp_path / _name(4) and ckpt[C.STATE] == {"tag": 4}
    assert len(said) == 1 and _name(8) in said[0]
    (tmp_path / _name(4)).write_bytes(b"")
    assert C.load_newest(tmp_path, said.append) == (None, None)
    assert "starts from zero" in said[-1]


def test_publish_is_a_rename_of_a_synced_temp_file(tmp_path):
    tmp = tmp_path / f".{_name(3)}.tmp-1"
    _fake(tmp, 3)
    C.publish(tmp, tmp_path / _name(3))
    assert not tmp.exists() and C.checkpoint_files(tmp_path) == [tmp_path / _name(3)]


def test_pruning_keeps_the_newest_n_and_drops_temp_files(tmp_path):
    for step in (3, 30, 6, 9):
        _fake(tmp_path / _name(step), step)
    (tmp_path / f".{_name(12)}.tmp-5").write_bytes(b"x")
    C.prune(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [_name(9), _name(30)]


def test_the_trial_folder_is_named_by_its_identity_and_off_when_every_is_0(tmp_path):
    study = load_study(_study(tmp_path, checkpoint_dir=str(tmp_path / "shared")))
    cell = study.cells()[0]
    folder = C.trial_folder(study.trial(cell, 1), tmp_path / "run", "tiny", cell.key, 1)
    assert folder == str(tmp_path / "shared" / "tiny" / f"{cell.key}-s1")
    off = load_study(_study(tmp_path, checkpoint_every=0))
    assert C.trial_folder(off.trial(off.cells()[0], 1), tmp_path, "tiny", cell.key, 1) is None
    assert off.cells()[0].key == cell.key  # the checkpoint settings are not part of the key


def test_a_retry_uses_the_folder_an_earlier_attempt_recorded(tmp_path):
    """A worker on another host (PostgreSQL) finds the checkpoints where storage says they are."""
    study = load_study(_study(tmp_path))
    cell = study.cells()[0]
    url = str(tmp_path / "optuna.journal")
    store, ostudy = st.open_study(url, "tiny")

    def want(folder):
        return lambda trials: st.Claim(cell, 0, study.trial(cell, 0), 1, dict(cell.label),
                                       {k: [v] for k, v in cell.label}, {"cell_key": cell.key, "seed": 0},
                                       checkpoint_dir=folder)

    first, _ = st.claim_next(url, ostudy, want("/shared/ckpt/tiny/x-s0"))
    st.record_failure(store, first.trial_id, "harness", "test")
    again, _ = st.claim_next(url, ostudy, want("/elsewhere/x-s0"))
    assert again.checkpoint_dir == "/shared/ckpt/tiny/x-s0"
    t = next(t for t in ostudy.get_trials(deepcopy=False) if t._trial_id == again.trial_id)
    assert t.system_attrs[st.CHECKPOINT_ATTR] == "/shared/ckpt/tiny/x-s0"


# -- in one process: saving, resuming, deleting ------------------------------------------------------

class _Hook:
    """What the worker hands the trainer: the epoch callback with the trial's checkpoint folder."""

    def __init__(self, folder):
        self.checkpoint_dir, self.resumed = folder, None

    def __call__(self, epoch, miou):
        return False

    def on_resume(self, info, curve):
        self.resumed = (info, curve)


def _config(tmp_path, **train):
    p = _study(tmp_path, **{"epochs": 3, **train})
    if "iterations" in train:
        d = yaml.safe_load(p.read_text())
        d["train"].pop("epochs")
        p.write_text(yaml.safe_dump(d))
    study = load_study(p)
    return study.trial(study.cells()[0], 0)


def _count_saves(monkeypatch) -> list:
    saved = []
    real = C.publish

    def spy(tmp, final):
        real(tmp, final)
        saved.append(final.name)

    monkeypatch.setattr(C, "publish", spy)
    return saved


def test_a_finished_trial_deletes_its_checkpoints_unless_kept(tmp_path, monkeypatch):
    saved = _count_saves(monkeypatch)
    folder = tmp_path / "ck" / "a"
    run_trial(_config(tmp_path), _Hook(str(folder)), threads=1)
    assert saved == [_name(4), _name(8)] and [p.name for p in folder.iterdir()] == [C.FINAL]  # the final weights stay
    saved.clear()
    kept = tmp_path / "ck" / "b"
    result = run_trial(_config(tmp_path, keep_checkpoints=True), _Hook(str(kept)), threads=1)
    assert saved == [_name(4), _name(8), _name(12)]  # the last round too: it is what is kept
    assert sorted(p.name for p in kept.iterdir()) == [C.FINAL, _name(12)]
    _, ckpt = C.load_newest(kept)
    assert [h["val_miou"] for h in ckpt[C.STATE]["history"]] == result["curve"]


def test_checkpoint_every_0_writes_nothing_and_saving_never_changes_the_result(tmp_path, monkeypatch):
    saved = _count_saves(monkeypatch)
    folder = tmp_path / "ck"
    plain = run_trial(_config(tmp_path, checkpoint_every=0), _Hook(str(folder)), threads=1)
    assert saved == [] and not folder.exists()
    saving = run_trial(_config(tmp_path), _Hook(str(folder)), threads=1)
    assert saved and saving["curve"] == plain["curve"] and saving["value"] == plain["value"]


def test_every_2_rounds_keep_1(tmp_path, monkeypatch):
    saved = _count_saves(monkeypatch)
    monkeypatch.setattr(C, "remove", lambda folder, keep_last=False: None)  # look at what is left mid-way
    folder = tmp_path / "ck"
    run_trial(_config(tmp_path, epochs=5, checkpoint_every=2, checkpoint_keep=1), _Hook(str(folder)), threads=1)
    assert saved == [_name(8), _name(16)] and [p.name for p in C.checkpoint_files(folder)] == [_name(16)]


@pytest.mark.parametrize("train", [{"epochs": 4}, {"iterations": 15, "val_interval": 3}],
                         ids=["epochs", "steps-mid-pass"])
def test_resuming_from_any_checkpoint_gives_the_same_curve(tmp_path, monkeypatch, train):
    """Epoch-based, and step-based with checkpoints in the middle of a pass over the data (4
    batches a pass, validation every 3 steps): the data order, RNG and history are put back."""
    import shutil

    monkeypatch.setattr(C, "remove", lambda folder, keep_last=False: None)
    config = _config(tmp_path, checkpoint_keep=10, **train)
    full = run_trial(config, _Hook(str(tmp_path / "full")), threads=1)
    assert len(set(full["curve"])) > 1  # it learns: a resume that went wrong would show
    files = C.checkpoint_files(tmp_path / "full")[::-1][:-1]
    assert len(files) >= 2
    for i, f in enumerate(files):
        folder = tmp_path / f"resume{i}"
        folder.mkdir()
        shutil.copy(f, folder)
        hook = _Hook(str(folder))
        again = run_trial(config, hook, threads=1)
        assert again["curve"] == full["curve"] and again["value"] == full["value"]
        info, curve = hook.resumed
        assert info["step"] == int(f.name[len(C.PREFIX):-len(C.SUFFIX)]) and curve == full["curve"][:info["epoch"]]


@pytest.mark.slow
def test_a_ddp_trial_resumes_on_every_rank_to_the_same_curve(tmp_path):
    """Two CPU ranks (gloo) in a trial process of their own: rank 0 writes the checkpoints, both
    ranks load one, and the resumed trial's curve is the uninterrupted one's."""
    import shutil

    path = tiny_study(tmp_path, name="ddp", seeds=[0], factors={"gcn": [True]}, baseline={},
                      data={"task": "global_cue", "train_images": 64, "val_images": 16},
                      train={"epochs": 3, "lr": 0.05, "keep_checkpoints": True},
                      trainer={"devices": 2, "strategy": "ddp"})
    study = load_study(path)
    config = study.trial(study.cells()[0], 0)
    full_dir, copy = tmp_path / "full", tmp_path / "copy"

    class Copying(_Hook):  # at round 2 the round-1 checkpoint exists: keep a copy of it
        def __call__(self, epoch, miou):
            if epoch == 1:
                copy.mkdir()
                for f in C.checkpoint_files(full_dir):
                    shutil.copy(f, copy)
            return False

    full = run_trial(config, Copying(str(full_dir)), threads=2)
    assert [p.name for p in C.checkpoint_files(copy)] == [_name(4)]  # 64 images, global batch 16
    hook = _Hook(str(copy))
    again = run_trial(config, hook, threads=2)
    assert hook.resumed[0]["step"] == 4 and hook.resumed[1] == full["curve"][:1]
    assert again["curve"] == full["curve"] and again["value"] == full["value"]
    assert again["world_size"] == 2


def test_a_real_dataset_trial_resumes_to_the_same_curve(tmp_path, monkeypatch):
    """VOC layout through mmseg's pipelines (random resize, crop, flip, photometric distortion in
    this process: ``num_workers: 0``), step-based with validation in the middle of a pass: the
    data order and the augmentations' RNG are put back."""
    import shutil

    from support.datasets import H, W, make_voc

    make_voc(tmp_path / "voc", n_train=6, n_val=2)
    monkeypatch.setattr(C, "remove", lambda folder, keep_last=False: None)
    p = tiny_study(tmp_path, name="vocres", seeds=[0], factors={"gcn": [True]}, baseline={},
                   train={"batch_size": 2, "lr": 0.05, "iterations": 8, "val_interval": 2, "checkpoint_keep": 10})
    d = yaml.safe_load(p.read_text())
    d["train"].pop("epochs")
    d["data"] = {"name": "voc", "data_root": str(tmp_path / "voc"), "crop_size": [32, 32], "scale": [W, H],
                 "num_workers": 0}
    p.write_text(yaml.safe_dump(d))
    study = load_study(p)
    config = study.trial(study.cells()[0], 0)
    full = run_trial(config, _Hook(str(tmp_path / "full")), threads=1)
    files = C.checkpoint_files(tmp_path / "full")[::-1]
    assert [f.name for f in files] == [_name(2), _name(4), _name(6)]  # 3 batches a pass: 2 and 4 mid-pass
    for f in files:
        folder = tmp_path / f"r{f.name}"
        folder.mkdir()
        shutil.copy(f, folder)
        again = run_trial(config, _Hook(str(folder)), threads=1)
        assert again["curve"] == full["curve"] and again["value"] == full["value"]
