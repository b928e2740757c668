"""Disk faults (issue 25): every file the harness writes is written whole or not at all, and a
full disk, a file size limit or a forbidden folder ends the command with one paragraph naming
the path and exit 3, the previous file intact (the hand-written notes under a report included)."""
from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import time

import pytest

from ablate.config import atomic
from ablate.storage import records as st
from ablate.config.errors import RetryableError
from ablate.study.load import load_study

from support import REPO, tiny_study
from support.runs import owned_trial, read_only


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    atomic.write_text(target, "old text\n")
    os.chmod(target, 0o640)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RetryableError) as e:
        atomic.write_text(target, "new text that never lands\n" * 1000)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text() == "old text\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"], "the temporary file is removed"
    para = e.value.paragraph()
    assert str(target) in para and "the disk is full" in para and "run the same command again" in para
    atomic.write_text(target, "new\n")  # a replaced file keeps its mode; a new one gets 0666 less the umask
    assert target.read_text() == "new\n" and (target.stat().st_mode & 0o777) == 0o640
    fresh = atomic.write_text(tmp_path / "fresh.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~umask


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_report_rewrite_over_the_file_size_limit_keeps_the_report_and_its_notes(tmp_path):
    """The issue's repro: ``echo NOTES >> report.md; (ulimit -f 5; ablate report ...)``: exit 3,
    one paragraph naming the file, the report byte for byte as it was, notes included."""
    study = load_study(tiny_study(tmp_path, seeds=[0]))
    url = str(tmp_path / "runs/tiny/optuna.journal")
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, study.name)
    for cell, seed in study.trials():
        owned_trial(store, ostudy, study, cell, seed, time.time() - 30, 10.0, 1, "r", 8.0)
    cmd = [sys.executable, "-m", "ablate.report", "tiny.yaml", "--run-dir", "runs/tiny", "--reuse-costs"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    report = tmp_path / "reports/tiny.md"
    with open(report, "a") as f:
        f.write("\nNOTES written by hand, kept across rewrites.\n")
    before = {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    limit = len(before[report]) // 2  # the new Markdown cannot be written whole
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                         preexec_fn=_limit_file_size(limit))
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ") and "\n\n" not in res.stderr.strip()
    flat = _flat(res.stderr)
    assert "reports/tiny.md" in flat and "file size limit" in flat
    after = {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*") if p.is_file()}
    assert after == before, "every file as it was, no temporary file left"
    assert report.read_text().endswith("\nNOTES written by hand, kept across rewrites.\n")


def test_a_checkpoint_folder_that_cannot_be_written_stops_the_run_with_the_real_cause(tmp_path, in_process,  # noqa: F811
                                                                                      capsys):
    """Lightning's writer swallows a PermissionError; the trial's checkpoint then failed with a
    FileNotFoundError on its temp file. Now: one paragraph naming the checkpoint and the real
    cause, exit 3, the trial recorded as the harness's (retried), no traceback."""
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 2, "checkpoint_dir": str(tmp_path / "ckpt")})
    study = load_study(path)
    folders = [tmp_path / "ckpt" / study.name / f"{c.key}-s{s}" for c, s in study.trials()]
    for f in folders:
        f.mkdir(parents=True)
    with read_only(*folders):
        code = in_process(path, "--run-dir", "runs/tiny", "--no-wandb", "--no-report")
    out = capsys.readouterr()
    assert code == 3, out.err
    assert "Traceback" not in out.err and "FileNotFoundError" not in out.out + out.err
    flat = _flat(out.err)
    assert "error: " in flat and "checkpoint" in flat and str(tmp_path / "ckpt") in flat
    assert "not permitted" in flat or "permission denied" in flat
    trials = st.open_storage(str(tmp_path / "runs/tiny/optuna.journal"))
    ostudy = __import__("optuna").load_study(study_name=study.name, storage=trials)
    kinds = [t.system_attrs.get(st.ATTR + "fail_kind") for t in ostudy.get_trials(deepcopy=False)]
    assert kinds == ["harness"], "one trial tried, recorded as the harness's, the worker stopped"


# --------------------------------------------------------------------------------------------
# plugin references are resolved without calling anything; SystemExit in plugin code is exit 2
# --------------------------------------------------------------------------------------------

PLUGIN_STUDY = """
name: plug
model:
  backbone: {{name: small_cnn, width: 8, depth: 2}}
  mechanism: {mechanism}
data: {{name: synthetic, task: global_cue, train_images: 32, val_images: 16}}
train: {{epochs: 1, batch_size: 16, threads: 1}}
seeds: 1
tracking: {{wandb: false}}
"""

EXITING = '''
import sys
from torch import nn


class ExitsInForward(nn.Module):
    def __init__(self, channels: int):
        super().__init__()

    def forward(self, x):
        sys.exit(7)
'''


CASES = {"sys:exit": "the built-in function sys.exit", "os:_exit": "the built-in function posix._exit",
         "subprocess:Popen": "the class subprocess.Popen", "shutil:rmtree": "the function shutil.rmtree",
         "exiting_h25:ExitsInForward": "raised SystemExit: 7"}
LOADER = """
import json, sys
from ablate.config.errors import StudyError
from ablate.study import load_study
out = {}
for name in sys.argv[1:]:
    try:
        load_study(name + ".yaml")
        out[name] = "loaded"
    except StudyError as e:
        out[name] = e.paragraph()
print(json.dumps(out))
"""


def test_a_plugin_reference_cannot_end_the_process(tmp_path):
    """A mechanism naming a function of the standard library (before: exit 32, no output, from
    ``sys:exit``) or a block whose forward calls sys.exit: a StudyError naming the plugin and
    what was found, nothing called; in one process, which must live through every case."""
    (tmp_path / "exiting_h25.py").write_text(EXITING)
    for i, mechanism in enumerate(CASES):
        (tmp_path / f"case{i}.yaml").write_text(PLUGIN_STUDY.format(mechanism=mechanism))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", LOADER, *(f"case{i}" for i in range(len(CASES)))], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    said = json.loads(res.stdout.strip().splitlines()[-1])
    for i, (mechanism, found) in enumerate(CASES.items()):
        flat = _flat(said[f"case{i}"])
        assert f"key 'model.mechanism': mechanism plugin '{mechanism}'" in flat and found in flat, flat
        assert flat.count("Nothing was run.") == 1


@pytest.mark.parametrize("args", [["ablate.run", "s.yaml", "model.mechanism=os:_exit", "--dry-run"],
                                  ["ablate.doctor", "bad.yaml"]])
def test_the_commands_refuse_a_plugin_that_would_exit(tmp_path, args):
    (tmp_path / "s.yaml").write_text(PLUGIN_STUDY.format(mechanism="none"))
    (tmp_path / "bad.yaml").write_text(PLUGIN_STUDY.format(mechanism="sys:exit"))
    res = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    flat = _flat(res.stderr)
    assert "mechanism plugin '" in flat and "the built-in function" in flat and flat.endswith("Nothing was run.")


# --------------------------------------------------------------------------------------------
# plans refused before anything is written; YAML 1.2 numbers; the NaN message's numbering
# --------------------------------------------------------------------------------------------

def test_a_huge_width_is_refused_naming_its_key_before_anything_is_written(tmp_path):
    """``model.backbone.width: 10000000``: before, the pre-flight named model.mechanism, said
    "printed above" with nothing printed and "Nothing was run." twice, and left the journal (on
    this machine it was killed for memory). The process is capped at 8 GiB of address space, so a
    regression fails here instead of taking the machine's memory."""
    path = tiny_study(tmp_path, model={"backbone": {"name": "small_cnn", "width": 10_000_000}}, seeds=[0])

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    res = subprocess.run([sys.executable, "-m", "ablate.run", str(path), "--no-wandb"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
                         preexec_fn=cap)
    flat = _flat(res.stderr)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "key 'model.backbone.width'" in flat and "model.backbone.width = 10000000" in flat
    assert "GiB of memory to train" in flat and flat.count("Nothing was run.") == 1 and "Traceback" not in flat
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"], "no run folder, no journal"


def test_yaml_12_numbers_are_numbers_and_an_endless_plan_is_refused(tmp_path, in_process, capsys):  # noqa: F811
    """``lr: 1e-3`` and ``epochs: 1e12`` were text under YAML 1.1 ("expected a number, got
    '1e-3'"); now numbers, and 10^12 epochs is refused by the plan's estimate, which names it."""
    from ablate.run.estimate import STEP_FLOOR_S, YEAR_S

    path = tiny_study(tmp_path, seeds=[0], train={"epochs": "EPOCHS", "lr": "LR"})
    text = path.read_text().replace("EPOCHS", "1e12").replace("LR", "1e-3")
    path.write_text(text)
    assert "epochs: 1e12" in text and "lr: 1e-3" in text
    assert in_process(path, "--no-wandb") == 2
    flat = _flat(capsys.readouterr().err)
    steps = 2 * 10 ** 12 * (64 // 16)  # 2 cells x 1 seed, 4 batches an epoch
    years = steps * STEP_FLOOR_S / YEAR_S
    assert f"key 'train.epochs': the plan is 2 trial(s) of {steps:,} training steps" in flat
    assert f"{years:,.0f} years of compute" in flat and flat.count("Nothing was run.") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]
    study = load_study(tiny_study(tmp_path, name="ok"))
    from ablate.study.overrides import load_with_overrides

    lowered = load_with_overrides(study.path, ["train.lr=1e-3", "train.epochs=1e0"])
    assert lowered.train.lr == 0.001 and lowered.train.epochs == 1


def test_the_nan_message_counts_epochs_and_batches_from_1(tmp_path, monkeypatch):
    from ablate.models.segmenter import SegmentationModule
    from ablate.trainer.trial import TrialFailed, run_trial

    study = load_study(tiny_study(tmp_path, seeds=[0], train={"epochs": 2}))
    real = SegmentationModule.training_step

    def nan_in_epoch_2(self, batch, batch_idx):
        loss = real(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch == 1 else loss

    monkeypatch.setattr(SegmentationModule, "training_step", nan_in_epoch_2)
    with pytest.raises(TrialFailed, match=r"non-finite training loss \(nan\) at epoch 2, batch 1$"):
        run_trial(study.trial_config(*study.trials()[0]))


# --------------------------------------------------------------------------------------------
# cost measurement is bounded: a batch of one when the study's would not fit, else "not measured"
# --------------------------------------------------------------------------------------------

def test_a_batch_that_would_not_fit_is_measured_with_one_image_or_said_not_measured(tmp_path, monkeypatch):
    """``train.batch_size: 100000000``: before, the report's cost measurement tried to allocate
    1.6 TB and the report crashed. Now the block is measured with a batch of one at the study's
    resolution, and where even that would not fit the report says "not measured: <reason>"."""
    from ablate.costs import blocks as costs
    from ablate.report.command import write_report
    from ablate.report.rows import block_shape

    study = load_study(tiny_study(tmp_path, seeds=[0], train={"batch_size": 100_000_000}))
    url = str(tmp_path / "runs/tiny/optuna.journal")
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, study.name)
    for cell, seed in study.trials():
        owned_trial(store, ostudy, study, cell, seed, time.time() - 30, 10.0, 1, "r", 8.0)
    shape = block_shape(study.cells()[0])
    assert shape[0] == 100_000_000
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    one = (1, *shape[1:])
    assert f"measured with a batch of 1 at the study's resolution {one}" in text
    monkeypatch.setattr(costs, "free_bytes", lambda device: 1000)  # not even one image fits
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    assert text.count(f"not measured: one image's block input {one} would not fit") == len(study.cells())
