"""The report of evaluation-time factors: a train x eval table of one study's checkpoints.

A study with ``eval_factors:`` (:mod:`ablate.study.evaluations`) evaluates each training's final
weights under every setting. :func:`eval_table` computes, from what
:func:`ablate.storage.summary.collect` read (``data["evaluations"]``): per training cell and
setting the mean, spread and count over seeds, and per training cell each setting against the
reference setting (``eval_baseline:``, default the first) on the same checkpoints, so paired over
seeds, decided by the engine every comparison uses (:func:`ablate.stats.decide.decide_family`:
the test the outcomes call for, one family per training cell corrected by the study's
``correction:``). It also checks that the setting equal to the training's own evaluates to the
training-time val mIoU. :func:`lines` renders the Markdown section (the HTML is converted from it);
:func:`write_files` writes ``<study>/evaluations.csv`` and ``<study>/evaluations.json``.
"""
from __future__ import annotations

import csv
import io
import json
import math

from ..stats import ALPHA, summarize
from ..stats.decide import Comparison, decide_family
from ..study.evaluations import eval_key, reference
from .rows import thresholds


def _pts(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _same_as_training(study, cell, setting) -> bool:
    """Whether ``setting`` evaluates ``cell`` as its training's own validation did."""
    args = dict(cell.args)
    return setting.eval == study.eval and all(args.get(k) == v for k, v in setting.args)


def eval_table(study, data: dict) -> dict | None:
    """The train x eval numbers (None: the study has no evaluation-time factors or nothing is read)."""
    ev = data.get("evaluations")
    if not study.evals or ev is None:
        return None
    ref = reference(study)
    vals = ev["values"]
    cells = [c for c in study.cells() if any(e.applies(c.mechanism) for e in study.evals)]
    thr = thresholds(study, data, study.cells())
    rows, comps = [], []
    for c in cells:
        entries = []
        for e in study.evals:
            key = eval_key(c.key, e)
            v = vals.get(key, {})
            s = summarize([v[k] for k in sorted(v)]) if v else None
            entries.append({"setting": e, "key": key, "values": v, "summary": s,
                            "same_as_training": _same_as_training(study, c, e)})
            if e is not ref and e.applies(c.mechanism) and v and vals.get(eval_key(c.key, ref)):
                comps.append(Comparison(key, eval_key(c.key, ref), v, vals[eval_key(c.key, ref)],
                                        f"evaluation, {c.title()}", thr[c.key]))
        rows.append({"cell": c, "training": data["values"].get(c.key, {}), "entries": entries})
    test = (study.analysis or {}).get("two_valued_test", "perm")
    decisions = decide_family(comps, study.margin / 100, ALPHA, study.correction, two_valued_test=test, advice=False)
    return {"rows": rows, "reference": ref, "decisions": {d.key: d for d in decisions}, "check": _check(rows),
            "failed": ev["failed"], "retry": ev["retry"], "running": ev["running"]}


def _check(rows: list) -> tuple[int, int]:
    """(seeds whose evaluation at the training's own setting equals the training-time value exactly, seeds compared)."""
    same = total = 0
    for r in rows:
        for e in r["entries"]:
            if e["same_as_training"]:
                shared = set(e["values"]) & set(r["training"])
                total += len(shared)
                same += sum(e["values"][s] == r["training"][s] for s in shared)
    return same, total


def _entry(e: dict) -> str:
    s = e["summary"]
    if s is None:
        return "—"
    sd = "" if s.n < 2 else f" ± {100 * s.std:.1f}"
    return f"{_pts(s.mean)}{sd} ({s.n})"


def lines(study, data: dict) -> list[str]:
    """The Markdown section (empty without evaluation-time factors)."""
    t = eval_table(study, data)
    if t is None:
        return []
    ref, settings = t["reference"], study.evals
    n_train = sum(len(r["training"]) for r in t["rows"])
    n_eval = sum(len(e["values"]) for r in t["rows"] for e in r["entries"])
    out = ["", "## Evaluation-time factors: train x eval", "",
           f"Each training's final weights evaluated under {len(settings)} settings of "
           f"{', '.join(study.eval_factors)}: {n_train} trainings and {n_eval} evaluations here, where training every "
           f"setting would take {n_train * len(settings)} trainings. Each entry: mean ± std of val mIoU over seeds "
           f"(seeds); the training-time column is the training's own last validation ({study.eval.describe()}"
           f"{', ' + _args_text(study) if _args_text(study) else ''}).", "",
           "| training | training-time | " + " | ".join(e.title() for e in settings) + " |",
           "|---|---:|" + "---:|" * len(settings)]
    for r in t["rows"]:
        tr = r["training"]
        ts = summarize([tr[k] for k in sorted(tr)]) if tr else None
        train_text = "—" if ts is None else _entry({"summary": ts})
        out.append(f"| {r['cell'].title()} | {train_text} | " + " | ".join(_entry(e) for e in r["entries"]) + " |")
    same, total = t["check"]
    if total:
        out += ["", f"Reproduction check: at the training's own setting the evaluation gives the training-time val "
                f"mIoU exactly for {same} of {total} checkpoints."]
    out += _delta_lines(study, t, ref)
    out += _failure_lines(t)
    return out


def _args_text(study) -> str:
    names = [k for k in study.eval_factors if k != "eval" and not k.startswith("eval.")]
    cells = study.cells()
    shown = [f"{k}={cells[0].label_dict.get(k, dict(cells[0].args).get(k))}" for k in names if cells]
    return ", ".join(shown)


def _delta_lines(study, t: dict, ref) -> list[str]:
    decs = t["decisions"]
    if not decs:
        return ["", "No paired comparison yet (the reference and another setting need evaluated seeds)."]
    level = next(iter(decs.values())).level
    out = ["", f"Each setting against {ref.title()} on the same checkpoints (paired over seeds), "
           f"{'corrected with ' + study.correction if study.correction != 'none' else 'uncorrected'} within each "
           f"training cell's family; intervals at the family's level ({100 * level:.4g}% for the first family); "
           f"margin ±{study.margin:g} points:", "",
           "| training | eval | Δ vs reference | interval | test | p̃ (adjusted) | verdict |", "|---|---|---:|---|---|---:|---|"]
    for r in t["rows"]:
        for e in r["entries"]:
            d = decs.get(e["key"])
            if d is None:
                continue
            iv = "—" if d.interval is None else f"[{100 * d.interval[0]:+.1f}, {100 * d.interval[1]:+.1f}]"
            out.append(f"| {r['cell'].title()} | {e['setting'].title()} | {100 * d.d.mean:+.1f} | {iv} | {d.test} "
                       f"({d.d.method}, n = {d.d.n}) | {d.p_adj:.2g} | {d.label}{' ' + d.note if d.note else ''} |")
    return out


def _failure_lines(t: dict) -> list[str]:
    out = []
    for what, items in (("failed (final)", t["failed"]), ("to run again", t["retry"])):
        if items:
            out += ["", f"Evaluations {what}: {len(items)}."] + [
                f"- {f['key']} seed {f['seed']} ({', '.join(f'{k}={v}' for k, v in f['setting'].items())}): "
                f"{f['kind']}: {' '.join(str(f['reason']).split())[:200]}" for f in items]
    if t["running"]:
        out += ["", f"Evaluations still running: {t['running']}."]
    return out


def table_json(study, data: dict) -> dict | None:
    """The train x eval table as plain data, mIoU in points."""
    t = eval_table(study, data)
    if t is None:
        return None
    def pts(x):
        return None if x is None or not math.isfinite(x) else 100 * x

    rows = []
    for r in t["rows"]:
        for e in r["entries"]:
            d = t["decisions"].get(e["key"])
            s = e["summary"]
            rows.append({"training": r["cell"].title(), "training_key": r["cell"].key, "eval": dict(e["setting"].label),
                         "key": e["key"], "n": 0 if s is None else s.n, "mean": None if s is None else pts(s.mean),
                         "std": None if s is None or s.n < 2 else pts(s.std),
                         "seeds": {str(k): pts(v) for k, v in sorted(e["values"].items())},
                         "same_as_training": e["same_as_training"],
                         "delta": None if d is None else pts(d.d.mean),
                         "delta_interval": None if d is None or d.interval is None else [pts(v) for v in d.interval],
                         "test": None if d is None else d.test, "p_adjusted": None if d is None else d.p_adj,
                         "verdict": None if d is None else d.label})
    same, total = t["check"]
    return {"study": study.name, "unit": "mIoU points (0-100)", "eval_factors": study.eval_factors,
            "reference": dict(t["reference"].label), "correction": study.correction, "margin": study.margin,
            "reproduction_check": {"exact": same, "compared": total}, "rows": rows}


def write_files(study, data: dict, folder) -> list:
    """``<study>/evaluations.json`` and ``<study>/evaluations.csv`` under ``folder`` (the reports folder)."""
    from ..config.atomic import make_folder, write_text

    table = table_json(study, data)
    if table is None:
        return []
    out_dir = folder / study.name
    make_folder(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    names = list(study.eval_factors)
    writer.writerow(["training", "training_key"] + names + ["key", "seed", "val_miou"])
    for r in table["rows"]:
        for seed, v in r["seeds"].items():
            writer.writerow([r["training"], r["training_key"]] + [r["eval"].get(k) for k in names]
                            + [r["key"], seed, "" if v is None else repr(v)])
    return [write_text(out_dir / "evaluations.json", json.dumps(table, indent=1, default=str) + "\n"),
            write_text(out_dir / "evaluations.csv", buf.getvalue())]


__all__ = ["eval_table", "lines", "table_json", "write_files"]
