"""The report's pictures (issue 30 items 1-2): a finished trial keeps its final weights, which
reproduce what it recorded; the report draws attention maps for seed 0, a learned and a floor seed,
a prediction grid and a failure gallery from them (Markdown, HTML, W&B table with mask images); a
report whose trials kept no weights renders as before; a trial's W&B run holds its predictions as
mask images; Chromium shows the new images.

The storage is written by hand (no training): a GloRe ``gcn`` on/off grid plus a ``none`` floor,
seeds 0-2, each trial with the untrained weights of its seed and the per-image counts those
weights give, and values chosen so each GloRe cell has a learned and a floor seed."""
from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from ablate.config.trial import TrialConfig, fields_dict
from ablate.data.lightning import tensors
from ablate.models.image_counts import confusion_counts, decode, encode
from ablate.models.segmenter import Segmenter
from ablate.report import drawings, pictures
from ablate.report.command import write_report
from ablate.storage import records as st
from ablate.study.load import load_study
from ablate.trainer import checkpoints as C

from support import tiny_study
from support.reports import wandb_records

SEEDS = [0, 1, 2]
VALUES = {"gcn=on": [0.90, 0.32, 0.88], "gcn=off": [0.33, 0.91, 0.30], "mechanism=none": [0.30, 0.31, 0.29]}


def _model(config: TrialConfig, n_classes: int) -> Segmenter:
    return Segmenter(n_classes, config.backbone, config.mechanism, config.args, fields_dict(config.head),
                     seed=config.seed).eval()


def build(tmp_path: Path, weights: bool = True):
    """The study and its storage URL (the trials' weights under ``tmp_path/weights``)."""
    study = load_study(tiny_study(tmp_path, name="pics", seeds=SEEDS, references=[{"mechanism": "none"}],
                                  data={"train_images": 16, "val_images": 8}, train={"epochs": 1}))
    url = str(tmp_path / "runs" / "optuna.journal")
    ostudy = st.load_or_create(st.open_storage(url), study.name)
    for cell, seed in study.trials():
        config = study.trial(cell, seed)
        _, (xv, yv), n_classes, _ = tensors(config.data)
        model = _model(config, n_classes)
        with torch.no_grad():
            inter, union = confusion_counts(model(xv).argmax(1), yv, n_classes, 255)
        value = VALUES[cell.title()][seed]
        attrs = {"cell_key": cell.key, "seed": seed, "config": json.dumps(config.as_dict()),
                 "cell": json.dumps(cell.label_dict), "class_iou": [value] * n_classes, "wall_s": 1.0,
                 "compute_s": 1.0, "curve": [value], "best_val_miou": value, "attention_params": 10,
                 "attention_flops": 100, "total_params": 1000,
                 "image_counts": encode(inter.numpy(), union.numpy())}
        if weights:
            attrs["final_weights"] = C.save_final(tmp_path / "weights" / f"{cell.key}-s{seed}", model)
        ostudy.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    return study, url


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pics")
    study, url = build(tmp)
    md = write_report(study, url, str(tmp / "reports"), wandb=True, run_dir=tmp / "runs")
    return {"study": study, "url": url, "md": md, "dir": tmp / "reports", "run_dir": tmp / "runs", "tmp": tmp}


def test_seeds_drawn_are_seed_0_the_first_learned_and_the_first_floor_seed():
    values = {0: 0.9, 1: 0.3, 2: 0.95, 3: 0.2}
    assert pictures.chosen_seeds([3, 2, 1, 0], values, 0.5, 0) == [(0, ["seed 0", "learned"]), (1, ["floor"])]
    assert pictures.chosen_seeds([1, 2], values, 0.5, 0) == [(1, ["seed 1", "floor"]), (2, ["learned"])]
    assert pictures.chosen_seeds([0, 1], values, None, 0) == [(0, ["seed 0"])]  # no threshold: seed 0 alone


def test_query_pixels_are_the_centres_of_the_largest_objects_and_the_cue_is_boxed():
    label = np.zeros((10, 12), dtype=np.int64)
    label[1:4, 1:4] = 1  # 9 pixels, centre (2, 2)
    label[5:10, 6:11] = 3  # 25 pixels, centre (7, 8)
    label[0:2, 9:11] = 255  # the cue
    assert pictures.query_pixels(label) == [(7.5 / 10, 8.5 / 12), (2.5 / 10, 2.5 / 12)]
    assert pictures.cue_box(label) == (0, 9, 2, 11)
    assert pictures.cue_box(np.zeros((3, 3), dtype=np.int64)) is None


def test_the_report_draws_maps_predictions_and_failures_per_cell(written):
    study, d = written["study"], written["dir"]
    md = written["md"].read_text()
    section = md.split("## Attention maps, predictions and failures")[1].split("\n## ")[0]
    cells = {c.title(): c.key for c in study.cells()}
    assert "Drawn: seed 0 (learned, mIoU 90.0), seed 1 (floor, mIoU 32.0)." in section  # gcn=on
    assert "Drawn: seed 0 (floor, mIoU 33.0), seed 1 (learned, mIoU 91.0)." in section  # gcn=off
    assert "`LowRankBlock`" in section and "`projection` (maps, K nodes)" in section
    links = set(re.findall(r"\]\((pics/[^)]+)\)", section))
    want = {f"pics/{kind}-{cells[t]}.svg" for t in ("gcn=on", "gcn=off") for kind in ("maps", "predictions", "failures")}
    want |= {f"pics/{kind}-{cells['mechanism=none']}.svg" for kind in ("predictions", "failures")}  # no block: no map
    assert links == want
    for link in links:
        svg = (d / link).read_text()
        assert svg.lstrip().startswith("<?xml") and svg.count("<image") >= 6, link
    page = (d / "pics.html").read_text()
    for link in links:
        assert f'id="fig-{Path(link).name}"' in page


def test_the_failure_gallery_holds_the_lowest_iou_images_of_seed_0(written):
    study, url = written["study"], written["url"]
    from ablate.report.rows import table
    from ablate.storage.summary import collect

    data = collect(study, url)
    cells = pictures.collect(study, data, table(study, data))
    on = next(c for c in cells if c.title == "gcn=on")
    rec = next(r for r in data["records"][on.key] if r["seed"] == 0)
    miou = pictures.image_miou(*decode(rec["image_counts"]))
    assert on.failures["seed"] == 0 and on.failures["miou"] == sorted(miou)[:pictures.FAILURES]
    assert [t.seed for t in on.trials] == [0, 1] and [t.roles for t in on.trials] == [["seed 0", "learned"], ["floor"]]
    assert on.trials[0].maps and on.trials[0].maps[0].name == "projection"
    # the kept weights give back the predictions the trial's counts were made from
    config = TrialConfig.of(json.loads(rec["config"]))
    _, (xv, yv), n, _ = tensors(config.data)
    pred = on.failures["pred"]
    inter, union = confusion_counts(torch.from_numpy(pred), yv[on.failures["index"]], n, 255)
    want = decode(rec["image_counts"])
    assert np.array_equal(inter.numpy(), want[0][on.failures["index"]])
    assert np.array_equal(union.numpy(), want[1][on.failures["index"]])


def test_the_wandb_summary_run_holds_a_table_of_predictions_with_masks(written):
    runs = glob.glob(str(written["run_dir"] / "report" / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    recs = wandb_records(glob.glob(runs[0] + "/run-*.wandb")[0])
    history = {tuple(i.nested_key) or (i.key,): json.loads(i.value_json)
               for r in recs if r.WhichOneof("record_type") == "history" for i in r.history.item}
    # per cell: 4 grid images for each drawn trial (2 + 2 + 1 trials) and 4 failures
    assert history[("report/predictions", "_type")] == "table-file"
    assert history[("report/predictions", "nrows")] == 4 * 5 + 4 * 3
    (art,) = [r.artifact for r in recs if r.WhichOneof("record_type") == "artifact" and "predictions" in r.artifact.name]
    files = {m.path: m.local_path for m in art.manifest.contents}
    table = json.loads(Path(files["report/predictions.table.json"]).read_text())
    first = table["data"][0][table["columns"].index("prediction")]
    assert first["_type"] == "image-file" and set(first["masks"]) == {"ground_truth", "prediction"}
    assert any(p.endswith(".mask.png") for p in files)


def test_a_report_whose_trials_kept_no_weights_renders_as_before(tmp_path, monkeypatch):
    study, url = build(tmp_path, weights=False)
    write_report(study, url, str(tmp_path / "reports"), wandb=False)  # measures the block costs once
    md = write_report(study, url, str(tmp_path / "reports"), wandb=False, reuse_costs=True).read_text()
    assert "## Attention maps" not in md and not list((tmp_path / "reports" / "pics").glob("maps-*"))
    # the same report with the pictures' code taken out (the same block costs): the same text
    monkeypatch.setattr(drawings, "section", lambda study, tab, data: (None, None, []))
    again = write_report(study, url, str(tmp_path / "reports"), wandb=False, reuse_costs=True).read_text()
    strip = lambda text: re.sub(r"Report written [0-9: -]+ ", "", text)  # noqa: E731 - the minute it was written
    assert strip(again) == strip(md)


def test_a_trial_whose_weights_are_gone_is_named_and_the_others_drawn(tmp_path):
    study, url = build(tmp_path)
    key = next(c.key for c in study.cells() if c.title() == "gcn=on")
    (tmp_path / "weights" / f"{key}-s1" / C.FINAL).unlink()
    md = write_report(study, url, str(tmp_path / "reports"), wandb=False).read_text()
    section = md.split("### gcn=on")[1].split("###")[0]
    assert "Drawn: seed 0 (learned, mIoU 90.0)." in section
    assert f"seed 1 (floor): its weights `{tmp_path / 'weights' / f'{key}-s1' / C.FINAL}` are gone" in section


def test_weights_that_no_longer_fit_the_model_are_named_not_fatal(tmp_path):
    study, url = build(tmp_path)
    key = next(c.key for c in study.cells() if c.title() == "gcn=off")
    path = tmp_path / "weights" / f"{key}-s0" / C.FINAL
    torch.save({"format": 1, "state_dict": {"not": torch.zeros(1)}}, path)
    md = write_report(study, url, str(tmp_path / "reports"), wandb=False).read_text()
    section = md.split("### gcn=off")[1].split("###")[0]
    assert "Drawn: seed 1 (learned, mIoU 91.0)." in section
    assert f"seed 0 (floor): its model could not be rebuilt from `{path}` (RuntimeError" in section


def test_a_finished_trial_keeps_weights_that_reproduce_it_and_logs_mask_images(tmp_path):
    """run_trial in this process with an offline W&B logger: final.pt is kept beside the (deleted)
    checkpoints, the model rebuilt from it gives the stored per-image counts again, and the
    trial's W&B run holds its predictions on the first validation images with two masks each."""
    from ablate.trainer.tracking import PREDICTION_IMAGES, make_logger
    from ablate.trainer.trial import run_trial

    study = load_study(tiny_study(tmp_path, seeds=[0], factors={"gcn": [True]}, baseline={},
                                  data={"train_images": 16, "val_images": 8}, train={"epochs": 1}))
    config = study.trial(study.cells()[0], 0)

    class Hook:
        checkpoint_dir = str(tmp_path / "ck")

        def __call__(self, epoch, miou):
            return False

    logger = make_logger(config.as_dict(), tmp_path / "run", "ablate", None, "trial")
    result = run_trial(config, Hook(), logger=logger, threads=1)
    logger.experiment.finish()
    assert result["final_weights"] == str(tmp_path / "ck" / C.FINAL)
    assert [p.name for p in (tmp_path / "ck").iterdir()] == [C.FINAL]
    _, (xv, yv), n, _ = tensors(config.data)
    model = _model(config, n)
    model.load_state_dict(torch.load(result["final_weights"], weights_only=True)["state_dict"])
    with torch.no_grad():
        inter, union = confusion_counts(model(xv).argmax(1), yv, n, 255)
    want = decode(result["image_counts"])
    assert np.array_equal(inter.numpy(), want[0]) and np.array_equal(union.numpy(), want[1])
    (run,) = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*"))
    recs = wandb_records(glob.glob(run + "/run-*.wandb")[0])
    history = {tuple(i.nested_key) or (i.key,): json.loads(i.value_json)
               for r in recs if r.WhichOneof("record_type") == "history" for i in r.history.item}
    assert history[("predictions", "_type")] == "images/separated"
    assert history[("predictions", "count")] == PREDICTION_IMAGES
    masks = history[("predictions", "all_masks")]
    assert len(masks) == PREDICTION_IMAGES and all(set(m) == {"ground_truth", "prediction"} for m in masks)
    assert all((Path(run) / "files" / m["prediction"]["path"]).is_file() for m in masks)


PICTURES_PROBE = """<script>(function () {
  var figs = Array.prototype.map.call(document.querySelectorAll("figure[id^='fig-maps-'], "
      + "figure[id^='fig-predictions-'], figure[id^='fig-failures-']"), function (f) {
    var r = f.querySelector("svg").getBoundingClientRect();
    var images = f.querySelectorAll("svg image");
    var raster = Array.prototype.filter.call(images, function (i) {
      return (i.getAttribute("xlink:href") || i.getAttribute("href") || "").indexOf("data:image/png;base64,") === 0
        && i.getBBox().width > 0; }).length;
    return {id: f.id, x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height,
            images: images.length, raster: raster};
  });
  var pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify({figures: figs, errors: window.__errors, height: document.body.scrollHeight});
  document.body.appendChild(pre);
})();</script>"""


def test_chromium_shows_every_new_picture(written, tmp_path):
    """The HTML report in headless Chromium: every maps / predictions / failures figure is laid out
    with its raster panels, no script error; then a screenshot of the whole page, cut at each
    figure, shows them drawn: heat-map colours in the maps, the label palette in the others."""
    import html as html_lib
    import subprocess

    from PIL import Image

    from support.reports import CATCH, chromium

    exe = chromium()
    page = (written["dir"] / "pics.html").read_text()
    path = tmp_path / "page.html"
    path.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PICTURES_PROBE + "</body>", 1))
    common = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--force-device-scale-factor=1"]
    res = subprocess.run(common + ["--window-size=1280,1000", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, res.stderr[-2000:]
    probe = json.loads(html_lib.unescape(found.group(1)))
    assert probe["errors"] == []
    figs = probe["figures"]
    assert sorted(f["id"].split("-")[1] for f in figs) == ["failures"] * 3 + ["maps"] * 2 + ["predictions"] * 3
    for f in figs:
        assert f["w"] > 200 and f["h"] > 100 and f["images"] >= 6 and f["raster"] == f["images"], f
    shot = tmp_path / "page.png"
    res = subprocess.run(common + [f"--window-size=1280,{probe['height'] + 50}", f"--screenshot={shot}",
                                   path.as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.is_file(), res.stderr[-2000:]
    full = Image.open(shot).convert("RGB")
    palette = {tuple(round(255 * v) for v in drawings._rgb_hex(c)) for c in drawings.PALETTE[:5]}
    for f in figs:
        crop = np.asarray(full.crop((int(f["x"]), int(f["y"]), int(f["x"] + f["w"]), int(f["y"] + f["h"]))))
        colours = {tuple(p) for p in crop.reshape(-1, 3)[::7]}
        assert len(colours) > 200, f  # drawn images, not an empty box
        if f["id"].startswith("fig-maps-"):  # inferno over the faded image: warm, saturated pixels
            warm = (crop[..., 0].astype(int) - crop[..., 2].astype(int) > 60).mean()
            assert warm > 0.02, (f["id"], warm)
        else:  # the class palette of the label maps (ground truth and prediction rows)
            hits = sum(np.all(crop == np.array(c), axis=-1).sum() for c in palette)
            assert hits > 2000, (f["id"], hits)
