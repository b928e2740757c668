"""``python -m ablate.report STUDY.yaml``: the study's ablation table, from storage alone.

One row per cell: mean +- std of the metric over finished seeds, its 95% t interval, the
difference to the baseline cell with a Welch 95% interval, the attention block's parameter
count, seeds finished, and a verdict: is the difference distinguishable from zero at this
many seeds? W&B is never read.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path

from .errors import StudyError, exit_with
from .stats import summarize, welch_diff


def _pts(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def collect(study, url: str) -> dict:
    """Finished values per cell key, failed trials, timing, from the Optuna storage."""
    import optuna

    from . import storage as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = st.open_storage(url)
    try:
        ostudy = optuna.load_study(study_name=study.name, storage=store)
    except KeyError:
        return {"values": {}, "records": {}, "failed": [], "run": {}}
    values: dict[str, dict[int, float]] = {}
    records: dict[str, list[dict]] = {}
    failed, pruned = [], []
    for t in ostudy.get_trials(deepcopy=False):
        key, seed = t.user_attrs.get("cell_key"), t.user_attrs.get("seed")
        if t.state == optuna.trial.TrialState.COMPLETE:
            values.setdefault(key, {})[seed] = t.value
            records.setdefault(key, []).append(t.user_attrs)
        elif t.state == optuna.trial.TrialState.PRUNED:
            pruned.append((key, seed))
        elif t.state == optuna.trial.TrialState.FAIL and t.system_attrs.get(st.ATTR + "fail_kind") == "error":
            failed.append((key, seed, t.system_attrs.get(st.ATTR + "fail_reason", "")))
    return {"values": values, "records": records, "failed": failed, "pruned": pruned,
            "run": ostudy.user_attrs.get("last_run", {})}


def _search_cells(study, data: dict) -> list:
    """A search study's cells are the points it sampled, best first."""
    seen = {}
    for key, recs in data["records"].items():
        config = json.loads(recs[0]["config"]) if isinstance(recs[0].get("config"), str) else None
        if config is not None:
            seen[key] = study.search_cell(config["cell"])
    means = {k: sum(v.values()) / len(v) for k, v in data["values"].items()}
    return sorted(seen.values(), key=lambda c: -means.get(c.key, 0.0))


def render(study, data: dict, storage_label: str) -> str:
    cells = _search_cells(study, data) if study.search else study.cells()
    base = (cells[0] if cells else None) if study.search else study.baseline_cell()
    vals = data["values"]
    base_vals = list(vals.get(base.key, {}).values()) if base else []
    ref_keys = {c.key for c in cells[len(cells) - len(study.references):]} if study.references else set()
    planned = 1 if study.search else len(study.seeds)
    lines = [f"# {study.name}", ""]
    if study.question:
        lines += [f"**Question.** {' '.join(study.question.split())}", ""]
    if study.search:
        lines += [f"Search: {study.search['n_trials']} trials, {study.search['sampler']} sampler, one seed each; "
                  "rows are the sampled points, best first, and deltas are taken against the best.", ""]
    lines += [f"Metric: `{study.metric}` (mIoU in points, 0-100) on the `{study.data.task}` synthetic task, "
              f"{study.data.val_images} validation images fixed by data seed {study.data.seed}; "
              f"{study.train.epochs} epochs; backbone `{study.backbone.name}` (width {study.backbone.width}). "
              f"Intervals are 95% t intervals over seeds; delta intervals are Welch's.", ""]
    head = ("| cell | mechanism | mIoU mean ± std | 95% CI | Δ vs baseline [95% CI] | attn params | "
            "attn MFLOPs/img | seeds | verdict |")
    lines += [head, "|" + "---|" * 9]
    verdicts = []
    for c in cells:
        v = list(vals.get(c.key, {}).values())
        s = summarize(v)
        recs = data["records"].get(c.key, [])
        params = recs[0].get("attention_params", "") if recs else ""
        flops = recs[0].get("attention_flops") if recs else None
        mflops = "" if flops is None else f"{flops / 1e6:.2f}"
        name = c.title() + (" (reference)" if c.key in ref_keys else "")
        if base is not None and c.key == base.key:
            delta, verdict = "baseline", "—"
        elif len(v) < 2 or len(base_vals) < 2:
            delta, verdict = "n/a", "needs ≥ 2 seeds in both cells"
        else:
            d = welch_diff(v, base_vals)
            lo, hi = d.mean - d.half_width, d.mean + d.half_width
            distinct = lo > 0 or hi < 0
            delta = f"{100 * d.mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            verdict = ("**distinguishable** from zero" if distinct else "not distinguishable from zero") + \
                      f" at {min(len(v), len(base_vals))} seeds"
            verdicts.append((c.key in ref_keys,
                             f"- {c.title()}{' (reference)' if c.key in ref_keys else ''} vs {base.title()}: "
                             f"Δ = {100 * d.mean:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]; "
                             f"{verdict.replace('**', '')}."))
        ci = "n/a" if math.isnan(s.half_width) else f"[{_pts(s.ci[0])}, {_pts(s.ci[1])}]"
        mean = "—" if s.n == 0 else f"{_pts(s.mean)} ± {_pts(s.std)}"
        lines.append(f"| {name} | {c.mechanism} | {mean} | {ci} | {delta} | {params} | {mflops} | {s.n}/{planned} | {verdict} |")
    lines += ["", "## Verdict", ""]
    # the grid's own comparisons first; references are calibration, listed after them
    verdicts = [text for _, text in sorted(verdicts, key=lambda v: v[0])]
    lines += verdicts or ["- Not enough finished seeds for a verdict yet."]
    # per-class IoU and costs
    lines += ["", "## Per-class IoU and cost (means over finished seeds)", "",
              "| cell | per-class IoU | trial wall s | compute s | harness overhead |", "|---|---|---|---|---|"]
    for c in cells:
        recs = data["records"].get(c.key, [])
        if not recs:
            continue
        per = [sum(r["class_iou"][i] for r in recs) / len(recs) for i in range(len(recs[0]["class_iou"]))]
        wall = sum(r["wall_s"] for r in recs) / len(recs)
        comp = sum(r["compute_s"] for r in recs) / len(recs)
        lines.append(f"| {c.title()} | {' / '.join(_pts(p) for p in per)} | {wall:.1f} | {comp:.1f} | "
                     f"{100 * (1 - comp / wall):.1f}% |")
    if data.get("pruned"):
        lines += ["", f"Pruned trials (not counted in any mean): {len(data['pruned'])}."]
    if data["failed"]:
        titles = {c.key: c.title() for c in cells}
        lines += ["", "## Failed trials (not counted)", ""]
        lines += [f"- {titles.get(k, k)} seed {s}: {why}" for k, s, why in data["failed"]]
    run = data.get("run") or {}
    lines += ["", "## Provenance", ""]
    if run:
        lines.append(f"Produced by `{run.get('command')}` ({run.get('workers')} worker(s); study wall time "
                     f"{run.get('wall_s', 0):.0f} s; sum of trial compute {run.get('compute_s', 0):.0f} s; "
                     f"harness overhead {100 * run.get('overhead', 0):.1f}% of worker time).")
    lines.append(f"Report written {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from storage `{storage_label}` "
                 f"by `python -m ablate.report {study.path}`. Cell keys: "
                 + ", ".join(f"{c.title()} = `{c.key}`" for c in cells) + ".")
    return "\n".join(lines) + "\n"


def write_report(study, url: str, reports_dir: str = "reports", run_info: dict | None = None) -> Path:
    from . import storage as st

    data = collect(study, url)
    if run_info:
        compute = sum(r.get("compute_s", 0.0) for recs in data["records"].values() for r in recs)
        run_info = {**run_info, "compute_s": compute}
        busy = run_info["wall_s"] * run_info["workers"]
        run_info["overhead"] = max(0.0, 1 - compute / busy) if busy else 0.0
        _save_run_info(study, url, run_info)
        data["run"] = run_info
    out = Path(reports_dir) / f"{study.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(study, data, st.redact(url)))
    return out


def _save_run_info(study, url: str, info: dict) -> None:
    import optuna

    from . import storage as st

    try:
        ostudy = optuna.load_study(study_name=study.name, storage=st.open_storage(url))
        ostudy.set_user_attr("last_run", json.loads(json.dumps(info)))
    except KeyError:
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.split("\n")[0])
    p.add_argument("study")
    p.add_argument("--storage")
    p.add_argument("--run-dir")
    p.add_argument("--reports-dir", default="reports")
    args = p.parse_args(argv)
    from . import storage as st
    from .study import load_study

    try:
        study = load_study(args.study)
    except StudyError as e:
        exit_with(e)
    run_dir = Path(args.run_dir) if args.run_dir else st.default_run_dir(study.name)
    url = st.storage_url(run_dir, args.storage)
    if "://" not in url and not Path(url).exists():
        exit_with(StudyError(args.study, "", f"no results yet: the storage {url} does not exist. Run "
                             f"python -m ablate.run {args.study} first, or give --storage / --run-dir."))
    print(f"report written to {write_report(study, url, args.reports_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
