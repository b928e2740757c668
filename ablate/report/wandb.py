"""One W&B summary run per study: the report's table, figures and per-cell aggregates in the
same project and group as the study's trial runs (:func:`ablate.trainer.tracking.make_logger`: group =
study name, factors, ``cell_key`` and ``seed`` as top-level config keys), with
``job_type="report"`` so W&B's run table can filter it out of, or into, the grouped view.

Offline unless the user is logged in (:func:`ablate.trainer.tracking.wandb_mode`), like the trials. The
offline run is written under ``<run folder>/report/wandb/`` (the trials' runs are in
``<run folder>/wandb/``), so ``wandb sync runs/<study>/report/wandb/offline-run-*`` uploads it.
Written at the end of a run, by ``python -m ablate.report --wandb`` and by ``ablate submit``'s report
job, always to the same run (:func:`summary_run_id`, ``resume="allow"``): re-writing the report updates
that run (its table and figures logged again at the next step, its summary values replaced);
offline, each writing is a folder of its own, and ``wandb sync`` sends them all to the one run.
The report never reads W&B back.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
from pathlib import Path


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _pts(x):
    x = _num(x)
    return None if x is None else 100 * x


def table_rows(study, tab: dict) -> tuple[list[str], list[list]]:
    """The study's table as W&B table columns and rows (mIoU in points), one row per cell."""
    factors = list(study.factors)
    for r in tab["rows"]:
        factors += [k for k in r["factors"] if k not in factors]
    cols = (["cell", "cell_key", "mechanism"] + [f"factor:{f}" for f in factors]
            + ["n", "mean", "std", "ci_lo", "ci_hi", "delta", "delta_lo", "delta_hi", "verdict", "budget_limited",
               "attn_params", "attn_mflops", "attn_ms", "attn_peak_mib"])
    rows = []
    for r in tab["rows"]:
        ci, dci = r["ci"] or (None, None), r.get("delta_ci") or (None, None)
        flops = r["attn_flops"]
        rows.append([r["title"], r["key"], r["mechanism"]]
                    + [None if r["factors"].get(f) is None else str(r["factors"][f]) for f in factors]
                    + [r["n"], _pts(r["mean"]), _pts(r["std"]), _pts(ci[0]), _pts(ci[1]), _pts(r.get("delta")),
                       _pts(dci[0]), _pts(dci[1]), r.get("verdict_text") or r["role"], r["limited"],
                       r["attn_params"], None if flops is None else flops / 1e6, _num(r["attn_ms"]),
                       _num(r["attn_peak_mib"])])
    return cols, rows


def predictions_table(cells: list):
    """A W&B Table of the report's pictures: per cell and drawn trial, each grid image's prediction
    and each failure-gallery image, as ``wandb.Image`` with ``ground_truth`` and ``prediction`` masks."""
    import wandb

    from .pictures import image_miou_of
    from ..trainer.tracking import mask_labels, rgb

    def image(img, label, pred, classes, caption):
        return wandb.Image(rgb(img), caption=caption, masks={
            "ground_truth": {"mask_data": label.astype("uint8"), "class_labels": classes},
            "prediction": {"mask_data": pred.astype("uint8"), "class_labels": classes}})

    rows = []
    for c in cells:
        classes = mask_labels(c.class_names, c.n_classes)
        for t in c.trials:
            for i in range(len(c.images) if t.pred is not None else 0):
                miou = image_miou_of(t.pred[i], c.labels[i], c.n_classes)
                rows.append([c.title, c.key, t.seed, ", ".join(t.roles), "grid", i, _pts(miou),
                             image(c.images[i], c.labels[i], t.pred[i], classes, f"{c.title} seed {t.seed} image {i}")])
        f = c.failures or {}
        for k, i in enumerate(f.get("index", [])):
            rows.append([c.title, c.key, f["seed"], "seed 0", "failure", i, _pts(f["miou"][k]),
                         image(f["images"][k], f["labels"][k], f["pred"][k], classes,
                               f"{c.title} seed {f['seed']} image {i}")])
    return wandb.Table(columns=["cell", "cell_key", "seed", "drawn as", "set", "validation image", "image mIoU",
                                "prediction"], data=rows)


def summary_run_id(study) -> str:
    """The W&B id of the study's summary run, ``report-<hash of the study's name and its cells' keys>``:
    the same at every writing of the report, another when the study's name or cells change (a cell
    added, another resolution: the keys cover each cell's whole configuration)."""
    text = json.dumps([study.name, sorted(c.key for c in study.cells())])
    return "report-" + hashlib.sha1(text.encode()).hexdigest()[:16]


def log_study(study, tab: dict, data: dict, figs: list, run_dir) -> Path | None:
    """Log the summary run; ``figs``: (stem, caption, SVG text, PNG bytes). Returns the run's
    folder, or None when W&B failed (said on stderr: tracking never breaks a report)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        return _log(study, tab, data, figs, Path(run_dir))
    except Exception as e:  # noqa: BLE001 - tracking must never break a report
        print(f"ablate: the W&B summary run of {study.name} was not written: {type(e).__name__}: {e}",
              file=sys.stderr)
        return None


def _log(study, tab: dict, data: dict, figs: list, run_dir: Path) -> Path:
    import wandb
    from PIL import Image

    from ..trainer.tracking import wandb_mode

    run_dir = run_dir.resolve() / "report"  # beside the trials' runs in <run dir>/wandb, not among them
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    config = {"study": study.name, "metric": study.metric, "margin": study.margin, "correction": study.correction,
              "factors": {k: v if isinstance(v, list) else str(v) for k, v in study.factors.items()},
              "seeds": list(study.seeds), "report": True}
    run = wandb.init(project=study.tracking.get("project", "ablate"), entity=study.tracking.get("entity"),
                     group=study.name, job_type="report", name=f"{study.name} report", config=config,
                     dir=str(run_dir), mode=wandb_mode(), reinit="finish_previous", id=summary_run_id(study),
                     resume="allow", settings=wandb.Settings(silent=True, console="off"))
    try:
        cols, rows = table_rows(study, tab)
        logged = {"report/table": wandb.Table(columns=cols, data=rows)}
        if data.get("pictures"):  # the drawn trials' predictions, with mask overlays (ablate.report.pictures)
            logged["report/predictions"] = predictions_table(data["pictures"])
        for stem, cap, _, png in figs:
            logged[f"report/{stem}"] = wandb.Image(Image.open(io.BytesIO(png)), caption=cap)
        curves = [[r["title"], e + 1, 100 * sum(c[e] for c in cs) / len(cs)]
                  for r in tab["rows"] for cs in [data.get("curves", {}).get(r["key"], [])] if cs
                  for e in range(min(len(c) for c in cs))]
        if curves:
            ct = wandb.Table(columns=["cell", "epoch", "mean val mIoU"], data=curves)
            logged["report/curves_table"] = ct
            logged["report/mean_curves"] = wandb.plot.line(ct, "epoch", "mean val mIoU", stroke="cell",
                                                           title="mean val mIoU per epoch")
        run.log(logged)
        for r in tab["rows"]:
            for k in ("mean", "std"):
                if _pts(r[k]) is not None:
                    run.summary[f"cells/{r['title']}/{k}"] = _pts(r[k])
            run.summary[f"cells/{r['title']}/n"] = r["n"]
            if r["role"] == "compared":
                run.summary[f"cells/{r['title']}/delta"] = _pts(r["delta"])
                run.summary[f"cells/{r['title']}/verdict"] = r["verdict_text"]
        folder = Path(run.dir).parent
    finally:
        run.finish()
        # stop the W&B service this process started (and its WANDB_SERVICE variable), so that no
        # later child process, such as the next study's workers, connects to it
        wandb.teardown()
    return folder
