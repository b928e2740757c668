"""A study's ``eval:`` wired end to end: parsed with the study (bad values exit 2), in the cell key
and the stored trial config only when not the default, used by the validation step on exported
VOC data, and named by the report (metric line, JSON, CSV)."""
from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ablate.config.evaluation import EvalSpec
from ablate.models.inference import evaluate, scaled_size
from ablate.study.load import load_study
from ablate.config.trial import TrialConfig

from support import run_cli, tiny_study

SLIDE = {"mode": "slide", "crop": [16, 16], "stride": [8, 8]}


def _keys(path) -> list[str]:
    return [c.key for c in load_study(path).cells()]


def test_eval_enters_the_key_and_the_config_only_when_not_the_default(tmp_path):
    plain = tiny_study(tmp_path, name="plain")
    whole = tiny_study(tmp_path, name="whole", eval={"mode": "whole", "scales": [1.0], "flip": False})
    slide = tiny_study(tmp_path, name="slide", eval=SLIDE)
    tta = tiny_study(tmp_path, name="tta", eval={**SLIDE, "scales": [0.5, 1.0], "flip": True})
    assert _keys(plain) == _keys(whole)
    assert len({*_keys(plain), *_keys(slide), *_keys(tta)}) == 3 * len(_keys(plain))
    s = load_study(plain)
    assert "eval" not in s.trial_config(s.cells()[0], 0)
    s = load_study(tta)
    trial = s.trial(s.cells()[0], 0)
    stored = json.loads(trial.to_json())
    assert stored["eval"] == {"mode": "slide", "crop": [16, 16], "stride": [8, 8], "scales": [0.5, 1.0], "flip": True}
    back = TrialConfig.from_json(trial.to_json())
    assert back == trial and back.eval == EvalSpec("slide", (16, 16), (8, 8), (0.5, 1.0), True)


@pytest.mark.parametrize("raw,key,needle", [
    ({"mode": "sliding"}, "eval.mode", "whole or slide"),
    ({"mode": "slide", "crop": [16, 16]}, "eval.stride", "needs crop and stride"),
    ({"mode": "slide", "crop": [8, 8], "stride": [16, 16]}, "eval.stride", "larger than the crop"),
    ({"scales": []}, "eval.scales", "non-empty list"),
    ({"flip": "yes"}, "eval.flip", "true or false"),
    ({"crops": [8, 8]}, "eval.crops", "valid keys are mode, crop, stride, scales, flip"),
])
def test_bad_eval_exits_2_naming_the_key(tmp_path, capsys, raw, key, needle):
    from ablate.run.command import main

    path = tiny_study(tmp_path, eval=raw)
    with pytest.raises(SystemExit) as e:
        main([str(path), "--dry-run", "--run-dir", str(tmp_path / "runs")])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    flat = " ".join(err.split())
    assert "Traceback" not in err and "\n\n" not in err.strip()
    assert f"error in {path}, key '{key}':" in flat and needle in flat, flat


# ------------------------------------------------------------------------------------------
# the validation step, on exported VOC data
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def voc_val(tmp_path_factory):
    """global_cue exported in the VOC layout, its validation images read back through mmseg's
    pipeline (resized to 32 x 32, labels at their original size)."""
    from ablate.data import export as ex
    from ablate.data.real import build_real_datasets, collate_val, validate_real_data
    from ablate.data.synthetic import SceneConfig

    root = tmp_path_factory.mktemp("voc")
    ex.export(SceneConfig(size=32, train_images=2, val_images=3), "voc", root)
    spec = validate_real_data({"name": "voc", "data_root": str(root), "crop_size": [32, 32], "scale": [32, 32],
                               "num_workers": 0}, "test")
    return DataLoader(build_real_datasets(spec, "test").val, batch_size=1, collate_fn=collate_val)


def _module(evaluation=None):
    from ablate.models.segmenter import SegmentationModule

    return SegmentationModule(21, {"name": "small_cnn", "width": 8, "depth": 2}, "nonlocal", {}, seed=0,
                              evaluation=evaluation)


def _validate(module, loader) -> dict:
    """The validation epoch's history entry, with its per-image (intersection, union) counts."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.validate(module, loader, verbose=False)
    return {**module.history[-1], "counts": module.image_counts.tolist()}


def test_slide_covering_the_image_validates_as_whole_and_small_windows_do_not(voc_val):
    whole = _validate(_module(), voc_val)
    covering = _validate(_module({"mode": "slide", "crop": [32, 32], "stride": [16, 16]}), voc_val)
    assert covering == whole
    # Non-local is global: 16 x 16 windows see less of the image, so the prediction changes
    m = _module(SLIDE)
    with torch.no_grad():
        x, y = next(iter(voc_val))
        m.eval()
        assert not torch.equal(evaluate(m, x, 21, m.eval_spec, tuple(y.shape[-2:])).argmax(1), m(x).argmax(1))
    small = _validate(_module(SLIDE), voc_val)
    assert small["counts"] != whole["counts"]


class Known(nn.Module):
    """A 'model' with a known output: class 1's logit grows with the column, class 2's with the
    row, class 0 is constant, the others never win; it records the input sizes it is called with."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        b, _, h, w = x.shape
        self.sizes.append((h, w))
        col = torch.linspace(-3, 3, w).expand(h, w)
        row = torch.linspace(-3, 3, h)[:, None].expand(h, w)
        rest = torch.full((18, h, w), -9.0)  # the other classes of VOC's 21: never predicted
        return torch.cat([torch.stack([torch.zeros(h, w), col, row]), rest])[None].repeat(b, 1, 1, 1)


def test_multiscale_flip_validation_runs_the_model_at_each_scale_and_scores_the_averaged_prediction(voc_val):
    scales = (0.5, 1.0, 1.5)
    module = _module({"scales": list(scales), "flip": True})
    module.model = Known()
    hist = _validate(module, voc_val)
    sizes = module.model.sizes
    per_image = [s for r in scales for s in [scaled_size(32, 32, r)] * 2]  # each scale, plain and flipped
    assert sizes == per_image * len(voc_val)
    # the expected prediction, by hand: softmax of each view (flipped back, resized) averaged
    inter = torch.zeros(21)
    union = torch.zeros(21)
    known = Known()
    for x, y in voc_val:
        probs = 0
        for r in scales:
            xs = F.interpolate(x, size=scaled_size(32, 32, r), mode="bilinear", align_corners=False)
            for flip in (False, True):
                out = known(xs.flip(-1) if flip else xs)
                out = out.flip(-1) if flip else out
                probs = probs + F.interpolate(out, size=y.shape[-2:], mode="bilinear", align_corners=False).softmax(1)
        pred = probs.argmax(1)
        valid = y != 255
        for c in range(21):
            p, t = (pred == c) & valid, (y == c) & valid
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    present = union > 0
    assert hist["val_miou"] == pytest.approx(float((inter[present] / union[present]).mean()), abs=1e-6)
    # the flip matters for this model (class 1 grows to the right): without it the scores differ
    no_flip = _module({"scales": list(scales)})
    no_flip.model = Known()
    assert _validate(no_flip, voc_val)["counts"] != hist["counts"]


# ------------------------------------------------------------------------------------------
# a study with eval: end to end
# ------------------------------------------------------------------------------------------

def test_a_study_with_eval_runs_end_to_end(tmp_path):
    """One tiny trial through ``python -m ablate.run``: the report names the mode (metric line,
    TeX footnote, JSON, CSV), and the trainer evaluated with it: the same trial evaluated on whole images
    (trained identically, in process, on the study's one thread) scores differently."""
    path = tiny_study(tmp_path, name="evalrun", seeds=[0], train={"epochs": 2, "lr": 0.01}, eval=SLIDE,
                      data={"train_images": 64, "val_images": 8})
    raw = yaml.safe_load(path.read_text())  # a one-cell Non-local study
    raw.update(model={"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "nonlocal"},
               factors={"reduction": [2]}, baseline={"reduction": 2})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/e", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    md = (tmp_path / "reports" / "evalrun.md").read_text()
    assert "evaluated by slide 16x16 stride 8x8" in " ".join(md.split())
    assert "evaluated by slide 16x16 stride 8x8" in (tmp_path / "reports" / "evalrun.tex").read_text()
    assert json.loads((tmp_path / "reports" / "evalrun.json").read_text())["eval"]["text"] == "slide 16x16 stride 8x8"
    with open(tmp_path / "reports" / "evalrun.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["eval"] for r in rows] == ["slide 16x16 stride 8x8"]
    from ablate.trainer.trial import run_trial

    study = load_study(path)
    trial = study.trial(study.cells()[0], 0)
    whole = run_trial(TrialConfig(**{**trial.__dict__, "eval": EvalSpec()}))
    assert float(rows[0]["val_miou_pts"]) != pytest.approx(100 * whole["value"], abs=1e-6)
