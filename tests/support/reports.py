"""A synthetic finished study written straight into storage (``build``), the records of an offline
W&B run, and headless Chromium for looking at HTML reports."""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import optuna
import pytest

from ablate.storage import records as st
from ablate.models.image_counts import encode
from ablate.study.load import load_study

from support import tiny_study


def build(tmp_path: Path):
    """The synthetic study and its storage URL; returns (study, url, {(key, seed): (state, value, curve)})."""
    study = load_study(tiny_study(tmp_path, name="fmt", seeds=SEEDS, references=[{"mechanism": "none"}],
                                  train={"epochs": EPOCHS}))
    url = str(tmp_path / "runs" / "optuna.journal")
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, study.name)
    truth = {}
    for i, (cell, seed) in enumerate(study.trials()):
        base = {"gcn=on": 0.55, "gcn=off": 0.80, "mechanism=none": 0.40}[cell.title()]
        curve = [base * (e + 1) / EPOCHS + 0.01 * seed for e in range(EPOCHS)]
        attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
                 "cell": json.dumps(cell.label_dict), "class_iou": [0.9, 0.5 + 0.01 * seed, 0.3],
                 "wall_s": 2.0 + seed, "compute_s": 1.5, "curve": curve, "best_val_miou": max(curve),
                 "attention_params": 0 if cell.mechanism == "none" else 100,
                 "attention_flops": 0 if cell.mechanism == "none" else 1000 + 10 * i, "total_params": 5000}
        if cell.title() == "gcn=off":
            attrs["image_counts"] = encode(*image_counts_of(seed))
        if cell.title() == "gcn=off" and seed == 2:
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={**attrs, "curve": curve[:2]},
                                              intermediate_values={0: curve[0], 1: curve[1]})
            truth[(cell.key, seed)] = ("pruned", None, curve[:2])
            ostudy.add_trial(trial)
        elif cell.title() == "mechanism=none" and seed == 2:
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={
                "cell_key": cell.key, "seed": seed, "config": attrs["config"], "cell": attrs["cell"]},
                system_attrs={st.ATTR + "fail_kind": "error", st.ATTR + "fail_reason": "non-finite loss"})
            truth[(cell.key, seed)] = ("fail", None, [])
            ostudy.add_trial(trial)
        else:
            ostudy.add_trial(optuna.trial.create_trial(value=curve[-1], user_attrs=attrs))
            truth[(cell.key, seed)] = ("complete", curve[-1], curve)
    return study, url, truth


def wandb_records(path: str) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 7-byte file
    header, then 32 KiB blocks of records with a 7-byte header each: checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, out, buf = Path(path).read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


CATCH = """<script>window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () { var orig = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " ")); orig.apply(console, arguments); }; })();
</script>"""


def chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("ABLATE_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is not installed but ABLATE_REQUIRE_CHROMIUM is set (.ci/run installs it)")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    return exe


SEEDS = [0, 1, 2]


EPOCHS = 4


def image_counts_of(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (intersection, union) counts of 12 images and 3 classes, different per seed."""
    rng = np.random.default_rng(100 + seed)
    union = rng.integers(50, 200, size=(12, 3))
    return (union * rng.uniform(0.3, 0.95, size=union.shape)).astype(int), union
