"""The study report's other formats, written beside the Markdown by :func:`write_formats`:

- ``reports/<study>/*.svg``: the figures (:mod:`ablate.report.figures`), which the Markdown links;
- ``reports/<study>.html``: one self-contained page (:mod:`ablate.report.html`);
- ``reports/<study>.tex``: a booktabs table for ``\\input`` with a footnote of n, interval method,
  correction and margin;
- ``reports/<study>.csv``: one row per trial of any state (``pandas.read_csv`` reads it);
- ``reports/<study>.json``: the table, one object per cell.

mIoU is in points (0-100) in every format, as in the Markdown; the CSV and JSON keep full
precision, the others print what the Markdown prints.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .rows import eval_text

UNIT = "mIoU points (0-100)"


def _pts(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else 100 * x


def _clean(x):
    """JSON-safe: NaN and infinities become null; tuples become lists."""
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def class_names(data, n: int) -> list[str]:
    """The names of ``n`` classes of a cell's ``data`` spec, in label order: a synthetic task's own
    (:data:`ablate.data.synthetic.CLASS_NAMES`), a real dataset's from mmseg's dataset
    ``METAINFO['classes']`` (when mmseg imports), else ``class 0 .. class n-1`` (task plugins, or a
    count that does not match the names)."""
    names: tuple = ()
    task = getattr(data, "task", None)
    if type(data).__name__ == "SceneConfig":
        from ..data.synthetic_spec import CLASS_NAMES

        names = CLASS_NAMES.get(task, ())
    elif getattr(data, "name", None) in ("voc", "cityscapes", "ade20k") and task is None:
        names = _mmseg_classes(data.name)
    return list(names) if len(names) == n else [f"class {i}" for i in range(n)]


def _mmseg_classes(name: str) -> tuple:
    try:
        from ..data.real_loaders import import_mmseg

        datasets = import_mmseg()[0]
    except Exception:  # noqa: BLE001 - mmseg missing or broken: the report still labels by index
        return ()
    cls = {"voc": "PascalVOCDataset", "cityscapes": "CityscapesDataset", "ade20k": "ADE20KDataset"}[name]
    return tuple(getattr(datasets, cls).METAINFO["classes"])


def table_json(study, tab: dict, data: dict | None = None) -> dict:
    """The table as plain data, every mIoU in points, the measured costs
    (:func:`ablate.report.costs.costs_json`) for ``--reuse-costs``, and the comparison design's
    pairs and effects (:func:`ablate.report.designs.design_json`)."""
    from .designs import design_json, with_design

    with_design(study, data or {"values": {}}, tab)
    images = tab["images"]["with"]
    rows = []
    for r in tab["rows"]:
        img = images.get(r["key"])
        rows.append({
            "cell": r["title"], "key": r["key"], "mechanism": r["mechanism"], "factors": r["factors"],
            "reference": r["reference"], "n": r["n"], "seeds_planned": r["planned"], "pruned": r["pruned"],
            "mean": _pts(r["mean"]), "std": _pts(r["std"]),
            "ci95": None if r["ci"] is None else [_pts(v) for v in r["ci"]], "budget_limited": r["limited"],
            "role": r["role"], "baseline_key": r["base"],
            "delta": _pts(r.get("delta")), "delta_ci": None if r.get("delta_ci") is None else
            [_pts(v) for v in r["delta_ci"]], "delta_method": r.get("delta_method"),
            "verdict": r.get("verdict", r["role"]), "verdict_text": r.get("verdict_text"),
            "p_diff_adjusted": r.get("p_diff"), "p_tost_adjusted": r.get("p_tost"),
            "attn_params": r["attn_params"], "attn_mflops": None if r["attn_flops"] is None else r["attn_flops"] / 1e6,
            "attn_fwd_bwd_ms": r["attn_ms"], "attn_peak_mib": r["attn_peak_mib"],
            "class_iou": [_pts(v) for v in r.get("class_iou", [])],
            "class_names": class_names(r["cell"].data, len(r["class_iou"])) if "class_iou" in r else [],
            "image_ci95": None if img is None else [_pts(img["lo"]), _pts(img["hi"])]})
    info = tab["info"]
    return _clean({"study": study.name, "metric": study.metric, "unit": UNIT,
                   "eval": {**study.eval.as_dict(), "text": study.eval.describe()}, "margin": study.margin,
                   "correction": study.correction, "alpha": 0.05, "comparisons": info["m"],
                   "delta_interval_level": info["level"], "cell_interval": "95% Student t over seeds",
                   "rows": rows, "costs": _costs(data or {}), "design": design_json(study, tab)})


def _costs(data: dict) -> dict | None:
    from .costs import costs_json

    costs = data.get("costs")
    return costs_json(costs, data.get("cost_shapes") or {}, costs.get("_measured")) if costs else None


def _factor_names(study, tab: dict, trials: list) -> list[str]:
    names = list(study.factors)
    for r in tab["rows"]:
        names += [k for k in r["factors"] if k not in names]
    for t in trials:
        names += [k for k in t["cell"] if k not in names]
    return [n for n in names if n != "mechanism"]  # the mechanism column holds every trial's


def trials_csv(study, tab: dict, data: dict) -> str:
    """One row per trial (any state): cell, key, seed, state, every factor, the evaluation that
    produced the metric (the study's ``eval:``, part of the cell key; empty for a trial of no cell
    of the study), the metric and each epoch's value in points, the trial's recorded costs and
    the report's measured ones."""
    trials = sorted(data.get("trials", []), key=lambda t: t["number"])
    factors = _factor_names(study, tab, trials)
    by_key = {r["key"]: r for r in tab["rows"]}
    epochs = max([len(t["curve"]) for t in trials] + [0])
    m = study.metric
    head = (["study", "trial", "cell", "cell_key", "seed", "state", "fail_kind", "mechanism"] + factors
            + ["eval", f"{m}_pts", f"best_{m}_pts", "epochs_run", "epochs_planned"]
            + [f"{m}_pts_epoch_{e + 1}" for e in range(epochs)]
            + ["attn_params", "attn_flops", "total_params", "attn_fwd_bwd_ms", "attn_peak_mib", "wall_s",
               "compute_s", "fail_reason"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for t in trials:
        row = by_key.get(t["key"])
        cell = row["factors"] if row else t["cell"]
        curve = [_pts(v) for v in t["curve"]]
        w.writerow([study.name, t["number"], row["title"] if row else "", t["key"], t["seed"], t["state"],
                    t["fail_kind"] or "", row["mechanism"] if row else t["mechanism"] or ""]
                   + [_csv_value(cell.get(f)) for f in factors]
                   + [study.eval.describe() if row else "", _csv_value(_pts(t["value"])),
                      _csv_value(_pts(t["best_val_miou"])), len(t["curve"]), _csv_value(t["planned"])]
                   + [_csv_value(v) for v in curve] + [""] * (epochs - len(curve))
                   + [_csv_value(t[k]) for k in ("attention_params", "attention_flops", "total_params")]
                   + [_csv_value(row["attn_ms"] if row else None), _csv_value(row["attn_peak_mib"] if row else None),
                      _csv_value(t["wall_s"]), _csv_value(t["compute_s"]), " ".join(str(t["fail_reason"] or "").split())])
    return buf.getvalue()


def _csv_value(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
        "—": "---", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$", "…": r"\ldots{}", "×": r"$\times$",
        "θ": r"$\theta$", "φ": r"$\phi$", "σ": r"$\sigma$", "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    """Plain text for pdflatex: specials escaped, the few non-ASCII letters the report uses as
    math, anything else non-ASCII as '?'."""
    return "".join(_TEX.get(ch, ch if ord(ch) < 128 else "?") for ch in str(text))


MARKS = {"better": r"$\bigtriangleup$", "worse": r"$\bigtriangledown$", "budget": r"$\bigtriangledown^{b}$",
         "equivalent": r"$\approx$", "inconclusive": "?", "missing": "?", "baseline": "base"}


def table_tex(study, tab: dict) -> str:
    """A tabular for ``\\input`` (booktabs rules; plain ``\\hline`` where booktabs is not loaded),
    mean ± std, 95% CI, Δ with its corrected interval and a verdict mark per cell, and a footnote."""
    info = tab["info"]
    level = f"{100 * info['level']:.4g}"
    lines = [f"% ablate report table for study {tex_escape(study.name)}; \\input it inside a table environment.",
             "% Loads nothing: with \\usepackage{booktabs} the rules are booktabs', otherwise plain \\hline.",
             r"\providecommand{\toprule}{\hline}\providecommand{\midrule}{\hline}\providecommand{\bottomrule}{\hline}",
             r"\begin{tabular}{llllc}", r"\toprule",
             f"Cell & mIoU (mean $\\pm$ std) & 95\\% CI & $\\Delta$ [{level}\\% CI] & Verdict \\\\", r"\midrule"]
    for r in tab["rows"]:
        name = tex_escape(r["title"]) + (" (ref.)" if r["reference"] else "")
        mean = "---" if r["n"] == 0 else f"{100 * r['mean']:.1f} $\\pm$ {100 * r['std']:.1f}"
        mean += r"$^\dagger$" if r["limited"] else ""
        ci = "n/a" if r["ci"] is None else f"[{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"
        if r["role"] == "compared":
            iv = r["delta_ci"]
            delta = f"${100 * r['delta']:+.1f}$ " + ("[n/p]" if iv is None else
                                                    f"[${100 * iv[0]:+.1f}$, ${100 * iv[1]:+.1f}$]")
            mark = MARKS[r["verdict"]]
        else:
            delta, mark = ("baseline", MARKS["baseline"]) if r["role"] == "baseline" else ("n/a", MARKS["missing"])
        lines.append(f"{name} & {mean} & {ci} & {delta} & {mark} \\\\")
    lines += [r"\bottomrule", r"\multicolumn{5}{@{}p{0.95\textwidth}@{}}{\footnotesize " + _footnote(study, tab, level)
              + "}", r"\end{tabular}", ""]
    return "\n".join(lines)


def _footnote(study, tab: dict, level: str) -> str:
    ns = sorted({r["n"] for r in tab["rows"] if r["n"]})
    n = "no finished seeds" if not ns else (f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}--{ns[-1]}")
    methods = sorted({r["delta_method"] for r in tab["rows"] if r.get("delta_method")})
    corr = ("no multiple-comparison correction" if study.correction == "none" else
            f"{study.correction.capitalize()} correction over {tab['info']['m']} comparison(s), intervals at the "
            f"Bonferroni level {level}\\%")
    return (f"{n} seeds per cell ({tab['planned']} planned); mIoU in points, {tex_escape(eval_text(study))}; "
            f"cell intervals: 95\\% Student t over seeds; $\\Delta$ against the cell's baseline: "
            f"{tex_escape('; '.join(methods) or 'none')}; {corr}; "
            f"margin $\\pm${study.margin:g} points. Marks: $\\bigtriangleup$ better, $\\bigtriangledown$ worse, "
            r"$\bigtriangledown^{b}$ worse at this budget, $\approx$ equivalent within $\pm$margin (TOST), "
            r"? inconclusive; $^\dagger$ budget-limited (still improving); [n/p] interval not printable.")


def write_formats(study, data: dict, tab: dict, md: str, figs: list, reports_dir: Path) -> dict[str, Path]:
    """Write the figures' SVG files, the HTML, TeX, CSV and JSON beside ``reports_dir/<study>.md``;
    ``figs``: (stem, caption, SVG text). Returns format -> path. Each file is written atomically
    (:mod:`ablate.config.atomic`): a failed write leaves it as it was and raises RetryableError."""
    from . import html as report_html

    from ..config.atomic import make_folder, write_text

    out = {}
    fig_dir = reports_dir / study.name
    if figs:
        make_folder(fig_dir)
    for stem, _, text in figs:
        write_text(fig_dir / f"{stem}.svg", text)
    svgs = {f"{study.name}/{stem}.svg": (cap, text) for stem, cap, text in figs}
    for fmt, text in (("html", report_html.render(study, tab, md, svgs)), ("tex", table_tex(study, tab)),
                      ("csv", trials_csv(study, tab, data)),
                      ("json", json.dumps(table_json(study, tab, data), indent=1, ensure_ascii=False) + "\n")):
        out[fmt] = write_text(reports_dir / f"{study.name}.{fmt}", text)
    return out
