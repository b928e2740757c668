"""The study report in Markdown (:func:`render`), from the data :func:`ablate.report.collect`
gathered and the table :func:`ablate.report.rows.table` computed; nothing here reads storage.
The HTML report (:mod:`ablate.report.html`) is converted from this text, so the two agree."""
from __future__ import annotations

import datetime as dt
import math

from .costs import latency_text
from .designs import lines as design_lines
from .designs import with_design
from .provenance import fingerprint_lines, provenance_lines
from .transfer import section_lines as transfer_lines
from ..stats import ALPHA
from .rows import COST_REPEATS, COST_WARMUP, block_shape, describe_setup, table
from .rows import label_text as _label_text
from .rows import method_text as _method_text
from ..stats import summarize


def _pts(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def render(study, data: dict, storage_label: str, tab: dict | None = None, figures: list | None = None,
           health: list[str] | None = None, pictures: list[str] | None = None) -> str:
    """The Markdown report from the collected data (and its :func:`ablate.report.rows.table`,
    computed here when not given); ``figures``: (file name relative to the report, caption);
    ``health``: the doctor's summary lines (:func:`ablate.doctor.check.health_lines`); ``pictures``:
    the attention maps, predictions and failures section (:func:`ablate.report.drawings.lines`)."""
    tab = with_design(study, data, tab or table(study, data))
    cells = tab["cells"]
    costs = data.get("costs") or {}
    lines = _intro_lines(study, data, tab)
    rows, verdicts = _table_lines(study, data, tab, costs)
    lines += rows + _costs_lines(study, data, cells, costs)
    if not study.search and len(study.factors) == 2:
        lines += _matrix_section(study, data, cells, costs)
    lines += _verdict_section(study, data, tab, verdicts) + design_lines(study, data, tab)
    lines += transfer_lines(study, data)  # with transfer: only (ablate/report/transfer.py)
    if study.evals:  # evaluation-time factors: the train x eval table (ablate/report/evaluations.py)
        from .evaluations import lines as evaluation_lines

        lines += evaluation_lines(study, data)
    if study.point_search():  # what the search found, apart from the confirmed verdicts
        from .search_text import section_lines

        lines += section_lines(study, tab)
    lines += ["", "## Health pre-flight", ""] + (health or ["Health pre-flight: not run for this report."])
    if figures:
        lines += ["", "## Figures", ""] + [f"![{cap}]({name})" for name, cap in figures]
    lines += pictures or []
    lines += _class_iou_lines(tab) + _image_lines(tab)
    if data.get("pruned") or study.pruner["name"] != "none":
        lines += _pruning_section(study, data, cells)
    lines += _failure_lines(data, cells)
    lines += ["", "## Provenance", ""] + provenance_lines(data) + fingerprint_lines(study, data, cells)
    lines.append(f"Report written {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from storage `{storage_label}` "
                 f"by `python -m ablate.report {_study_args(study)}`. Cell keys: "
                 + ", ".join(f"{c.setting()}{f' ({c.name})' if c.name else ''} = `{c.key}`" for c in cells) + ".")
    return "\n".join(lines) + "\n"


def _intro_lines(study, data: dict, tab: dict) -> list[str]:
    """Title, the partial-report warning, the question, the search and the metric and judging rules."""
    lines = [f"# {study.name}", ""]
    if data.get("running") or data.get("pending"):
        lines += [f"**Partial.** This report was written while the study was unfinished: {data.get('running', 0)} "
                  f"trial(s) running, {data.get('pending', 0)} still to run; the numbers below cover the finished "
                  "trials only.", ""]
    if study.question:
        lines += [f"**Question.** {' '.join(study.question.split())}", ""]
    if study.point_search():  # the table is the confirmation (or the points on the search seeds)
        from .search_text import intro_lines

        lines += intro_lines(study, tab)
    elif study.search:
        lines += [f"Search: {study.search['n_trials']} trials, {study.search['sampler']} sampler, one seed each; "
                  "rows are the sampled points, best first, and deltas are taken against the best.", ""]
    if (study.analysis or {}).get("screening"):
        lines += ["**Screening study.** Its seeds were planned knowing they cannot decide two-valued outcomes in "
                  "every family (the pre-flight said so); read its verdicts as a screen for what to run with more "
                  "seeds.", ""]
    return lines + [f"Metric: `{study.metric}` (mIoU in points, 0-100) {describe_setup(study)}. "
                    "Cell intervals are 95% t intervals over seeds (clipped to 0-100 and marked †).", "",
                    _judging_sentence(study, tab["comps"], tab["info"]), ""]


def _table_lines(study, data: dict, tab: dict, costs: dict) -> tuple[list[str], list[tuple[bool, str]]]:
    """The main table (one row per cell) and each comparison's verdict sentence, flagged reference or not."""
    comps, limited = tab["comps"], tab["limited"]
    lines = [("| cell | mechanism | mIoU mean ± std | 95% CI | learned | Δ vs baseline [corrected CI] | "
              "attn params | attn MFLOPs/img | attn fwd+bwd ms | attn peak MiB | seeds | verdict |"), "|" + "---|" * 12]
    verdicts = []
    for r in tab["rows"]:
        c = r["cell"]
        params, mflops, ms, mib = _cost_columns(c.key, data, costs)
        name = r["title"] + (" (reference)" if r["reference"] else "")
        if r["role"] == "baseline":
            delta, verdict = "baseline", "—"
        elif r["role"] == "factorial":
            delta, verdict = "factorial run", "see Factorial effects"
        elif r["role"] == "missing":
            delta, verdict = "n/a", "inconclusive (needs ≥ 2 seeds in both cells)"
        else:
            x = comps[c.key]
            delta, verdict = _delta_text(x), r["verdict_text"]
            if x["decision"].label in ("better", "worse"):
                verdict = f"**{verdict}**"
            verdicts.append((r["reference"], _verdict_line(x, r["reference"], limited, study.margin)))
        ci = "n/a" if r["ci"] is None else f"[{_pts(r['ci'][0])}, {_pts(r['ci'][1])}]" + ("†" if r.get("ci_clipped") else "")
        mean = "—" if r["n"] == 0 else f"{_pts(r['mean'])} ± {_pts(r['std'])}"
        mean += " (budget-limited)" if r["limited"] else ""
        seeds = f"{r['n']}/{'≤' if study.sequential else ''}{r['planned']}" + (f" ({r['pruned']} pruned)" if r["pruned"] else "")
        lines.append(f"| {name} | {c.mechanism} | {mean} | {ci} | {_learned_text(r)} | {delta} | {params} | {mflops} | "
                     f"{ms} | {mib} | "
                     f"{seeds} | {verdict} |")
    return lines, verdicts


def _verdict_section(study, data: dict, tab: dict, verdicts: list[tuple[bool, str]]) -> list[str]:
    """The verdicts: grouped by the other factor where the study has that shape, else one line a
    comparison, the grid's own comparisons first (references are calibration, listed after them)."""
    lines = ["", "## Verdict", ""]
    texts = [text for _, text in sorted(verdicts, key=lambda v: v[0])]
    grouped = _grouped_verdict(study, data, tab["cells"], tab["comps"])
    if grouped:
        texts = grouped
    none = [] if tab.get("design") else ["- Not enough finished seeds for a verdict yet."]  # a factorial: its effects
    return lines + (texts or none)


def _class_iou_lines(tab: dict) -> list[str]:
    """Per-class IoU (one column per class, headed by its name) and the trials' wall and compute
    time, a row per cell with finished seeds; one table per set of classes (a grid over tasks)."""
    from .formats import class_names

    groups: dict[tuple, list] = {}
    for r in tab["rows"]:
        if "class_iou" in r:
            groups.setdefault(tuple(class_names(r["cell"].data, len(r["class_iou"]))), []).append(r)
    lines = ["", "## Per-class IoU and cost (means over finished seeds)"]
    for names, rows in groups.items():
        lines.append("")
        if len(groups) > 1:
            tasks = sorted({str(getattr(r["cell"].data, "task", None) or getattr(r["cell"].data, "name", ""))
                            for r in rows})
            lines += [f"Classes of {', '.join(tasks)} (IoU in points):", ""]
        lines += ["| cell | " + " | ".join(n.replace("|", "/") for n in names)
                  + " | trial wall s | compute s | harness overhead |", "|---|" + "--:|" * (len(names) + 3)]
        for r in rows:
            wall, comp = r["wall_s"], r["compute_s"]
            lines.append(f"| {r['title']} | {' | '.join(_pts(p) for p in r['class_iou'])} | {wall:.1f} | {comp:.1f} | "
                         f"{100 * (1 - comp / wall):.1f}% |")
    return lines


def _failure_lines(data: dict, cells: list) -> list[str]:
    """The failed trials (final) and the trials the harness will run again, each with its reason."""
    titles = {c.key: c.title() for c in cells}
    lines = []
    if data["failed"]:
        lines += ["", "## Failed trials (not counted)", "",
                  "The trial's own failure (non-finite loss, out of memory, an error in the model's forward or "
                  "backward): final, never run again.", ""]
        lines += [f"- {titles.get(k, k)} seed {s}: {_short(why)}" for k, s, why in data["failed"]]
    if data.get("retry"):
        lines += ["", "## Trials to run again (the harness or its environment failed)", "",
                  "Not the trial's own failure (tracking, storage, files, a setting the study file's checks should "
                  "have refused): the next `python -m ablate.run` on this study runs them again.", ""]
        lines += [f"- {titles.get(k, k)} seed {s}: {_short(why)}" for k, s, why in data["retry"]]
    return lines


def _costs_lines(study, data: dict, cells: list, costs: dict) -> list[str]:
    """How the latency and memory columns were measured, or why they were not."""
    lines = []
    if costs:
        shapes = sorted({block_shape(c, study.trainer.world_size, study.head) for c in cells if c.key in costs})
        lines += ["", "Attention-block latency (forward + backward; on the CPU the median and inter-quartile range "
                  "of torch.utils.benchmark's blocked_autorange, on CUDA of "
                  f"{COST_REPEATS} runs after {COST_WARMUP} warm-up; 'noisy' where the IQR exceeds 20% of the median, "
                  "as under load; one cached measurement per block and input, shared by every study) and peak memory (over the input's gradient, which the backbone needs "
                  f"anyway) at the training input (B, C, H, W) = {', '.join(map(str, shapes))}, float32, train "
                  f"mode; {_measured_when(costs)}, on {costs['_device']} with "
                  f"{costs['_threads']} torch thread(s) (`ablate.costs.measure`). Params and MFLOPs are the "
                  "trial's own records."]
    elif data.get("costs_skipped"):
        lines += ["", f"Attention-block latency and peak memory were not measured: {data['costs_skipped']} trial(s) "
                  "were training on this machine when this report was written, and their load would skew the "
                  f"timings. `python -m ablate.report {_study_args(study)}` measures them once the study has finished."]
    return lines + _upsampler_lines(data, cells)


def _upsampler_lines(data: dict, cells: list) -> list[str]:
    """The head upsampler's params and forward FLOPs per cell whose trials recorded them (a CARAFE
    head, ``model.head.upsample: carafe``); nothing for a study without one."""
    said = []
    for c in cells:
        rec = next(iter(data["records"].get(c.key) or []), {})
        if rec.get("upsample_params") is not None:
            said.append(f"{c.title()}: {rec['upsample_params']:,} params, {rec['upsample_flops'] / 1e6:.2f} MFLOPs/img")
    if not said:
        return []
    return ["", "Head upsampler (CARAFE stages before the classifier, `ablate/attention/carafe.py`; not in the "
            "attention columns, which count the block): " + "; ".join(said) + ". Forward FLOPs at the block's "
            "training input, from the trials' records; the bilinear resize of the logits has no parameters and "
            "counts 0 FLOPs."]


def _measured_when(costs: dict) -> str:
    if costs.get("_reused"):
        return f"measured for the report written {costs['_measured']} and reused by `--reuse-costs`"
    return "measured when this report was written"


def _image_lines(tab: dict) -> list[str]:
    """Image-level intervals where the trials stored per-image counts."""
    img = tab["images"]
    if not img["with"]:
        return ["", "Image-level intervals: n/a (trials predate per-image counts)."] if img["without"] else []
    first = next(iter(img["with"].values()))
    lines = ["", "## Image-level intervals", "",
             f"Percentile bootstrap ({first['n_boot']} resamples) over the {first['n_images']} validation images and "
             "the seeds together (each resample draws seeds and images with replacement; mIoU from the summed "
             "intersection and union counts; `ablate.stats.cell_bootstrap`), and each seed's interval over images "
             "alone. With fewer than 5 seeds the interval is mostly image sampling: the seed-level test above "
             "decides.", "",
             "| cell | mIoU of summed counts (seed mean) | 95% CI (seeds × images) | per seed (images only) | "
             "Δ vs baseline, paired bootstrap |", "|---|---|---|---|---|"]
    for r in tab["rows"]:
        x = img["with"].get(r["key"])
        if x is None:
            lines.append(f"| {r['title']} | n/a | n/a (trials predate per-image counts) | | |")
            continue
        per = ", ".join(f"{s['seed']}: [{_pts(s['lo'])}, {_pts(s['hi'])}]" for s in x["seeds"])
        d = img.get("deltas", {}).get(r["key"])
        dtext = "" if d is None else (f"{100 * d['delta']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] "
                                      f"({d['n_seeds']} shared seeds, same images)")
        lines.append(f"| {r['title']} | {_pts(x['miou'])} | [{_pts(x['lo'])}, {_pts(x['hi'])}] | {per} | {dtext} |")
    if img["without"]:
        lines += ["", f"{img['without']} finished trial(s) have no per-image counts (trials predate per-image counts)."]
    return lines


def _pct(level: float) -> str:
    return f"{100 * level:.2f}".rstrip("0").rstrip(".") + "%"


def _learned_text(r: dict) -> str:
    """"k/n [lo, hi]": seeds that learned the cue with the Clopper-Pearson 95% interval of the rate."""
    k = r.get("learned")
    return "—" if k is None else f"{k[0]}/{k[1]} [{k[2]:.2f}, {k[3]:.2f}]"


def _delta_text(x: dict) -> str:
    """Δ and its corrected interval in points; an interval past ±100 is clipped there and marked †."""
    d = x["d"]
    if x["interval"] is None:
        return f"{100 * d.mean:+.1f} [—]"
    lo, hi = x["interval"]
    mark = "†" if x["decision"].clipped else ""
    return f"{100 * d.mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}"


def _verdict_line(x: dict, reference: bool, limited: set, margin_pts: float) -> str:
    """One comparison as a sentence: Δ, its interval, how it was computed, the verdict, budget flags."""
    c, b, d = x["cell"], x["base"], x["d"]
    dec = x["decision"]
    interval = " " + _delta_text(x).split(" ", 1)[1]
    flagged = [t.title() for t in (c, b) if t.key in limited]
    note = f" Budget-limited (seeds still learning at the last epochs): {', '.join(flagged)}." if flagged else ""
    if any(x.get("learned_by") or ()):
        note += f" Time to learn: {x['learned_by'][0] or 'n/a'} vs {x['learned_by'][1] or 'n/a'}."
    counts = ""
    if dec.counts is not None:
        counts = f"; learned {dec.counts[0]}/{dec.counts[1]} vs {dec.counts[2]}/{dec.counts[3]}"
    tost = ""
    if dec.tost_interval is not None:
        lo, hi = dec.tost_interval
        tost = f"; TOST {_pct(1 - 2 * (1 - dec.level))} interval [{100 * lo:+.1f}, {100 * hi:+.1f}], p̃ = {_p(dec.p_tost)}"
    return (f"- {c.title()}{' (reference)' if reference else ''} vs {b.title()}: Δ = {100 * d.mean:+.1f} points"
            f"{interval}{counts}; {dec.reason}, p = {_p(dec.p)}, {dec.family} family (m = {dec.m}) "
            f"adjusted p̃ = {_p(dec.p_adj)}{tost}; **{_label_text(x, margin_pts)}**.{note}")


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"



def _study_args(study) -> str:
    """The study file and any command-line overrides it was loaded with, as the report command takes them."""
    return " ".join([str(study.path)] + list(getattr(study, "overrides", ()) or ()))


def _judging_sentence(study, comps: dict, info: dict) -> str:
    """How the verdicts were reached: the outcome classification, the tests used, the families and
    their correction, the interval levels, the margin and the budget rule, in one paragraph."""
    alpha = info.get("alpha", ALPHA)
    tests: dict[str, int] = {}
    for x in comps.values():
        name = _method_text(x["d"], x["decision"].test).split(" over ")[0]
        tests[name] = tests.get(name, 0) + 1
    how = "; ".join(f"{k} ({n})" for k, n in tests.items()) or "none yet"
    fams = "; ".join(f"{name}: m = {m}, Δ intervals at {_pct(level)}" for name, (m, level) in
                     (info.get("families") or {}).items()) or "none yet"
    thr = sorted({t.text() for t in (info.get("thresholds") or {}).values()})
    corr = {"none": "no multiple-comparison correction", "holm": "Holm", "bonferroni": "Bonferroni",
            "bh": "Benjamini-Hochberg (false discovery rate)"}[study.correction]
    return (f"Verdicts: each seed is classified learned or not ({'; '.join(thr) or 'no classification'}); a "
            "comparison whose seeds fall on both sides is two-valued and is tested exactly (permutation of the "
            "seeds' values, or the study's two_valued_test), otherwise by a t test (paired over shared seeds, "
            f"Welch otherwise; Yuen's trimmed t when a cell has an outlier). Tests used: {how}. "
            f"Families (one question each) corrected separately by {corr} at level {alpha:.4g}: {fams} "
            "(Bonferroni intervals, conservative for Holm; † = clipped to ±100). \"better\"/\"worse\": the "
            f"corrected test rejects Δ = 0 (\"and within ±{study.margin:g}\" when TOST also puts Δ inside the "
            f"margin); \"equivalent\": the corrected TOST puts Δ inside ±{study.margin:g} mIoU points (unimodal "
            "comparisons only); \"neither learned\": no seed of either cell learned; otherwise inconclusive, with "
            "the seeds a cell at which the chosen test reaches 80% power at the observed effect (simulated). "
            "\"budget-limited\": some seed first reached the learned threshold in the last third of the epochs "
            "while another has not yet, so more epochs would likely change k of n." + _sequential_sentence(study, info))


def _sequential_sentence(study, info: dict) -> str:
    """For a study with sequential seeds: how seeds were added, the spending and what it saved."""
    s, seq = study.sequential, info.get("sequential")
    if not s or not seq:
        return ""
    name = {"obf": "O'Brien-Fleming-type", "pocock": "Pocock-type"}.get(seq["kind"], seq["kind"])
    looks = ", ".join(map(str, seq["looks"])) or "none yet"
    return (f" Seeds were added sequentially ({s['start']} a cell to start, up to {s['max']}, {s['step']} at a look, "
            f"only to comparisons still undecided). Each look compares the exact sign-flip test (permutation when "
            f"seeds are not shared) with the Lan-DeMets {name} spending boundary at the family's Holm share of "
            f"{ALPHA:g}; the verdicts above are those looks' decisions, replayed from the stored values. Looks taken "
            f"at {looks} seeds; alpha spent {seq['spent']:.3g}; {seq['trials']} of at most {seq['max_trials']} "
            f"trials ({seq['saved']} saved). A comparison's Δ interval inverts its last look's exact test on the "
            f"seeds that look saw, at one minus that look's nominal level, so it excludes 0 exactly when the look "
            f"rejected.")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _matrix_section(study, data: dict, cells: list, costs: dict) -> list[str]:
    """A two-factor grid as a matrix: rows the first factor's values, columns the second's;
    each entry the mean mIoU with its 95% t interval (cost columns from the row's first cell)."""
    (rf, rvals), (cf, cvals) = list(study.factors.items())
    # study.cells() lists the grid first, in itertools.product order, then the references
    grid = {(rv, cv): cells[i * len(cvals) + j] for i, rv in enumerate(rvals) for j, cv in enumerate(cvals)}
    lines = ["", f"## Matrix: {rf} × {cf}", "",
             f"Mean val mIoU over finished seeds with its 95% t interval (clipped to 0-100 and marked †); the "
             f"best mean in each column is "
             f"in bold. Costs are the attention block's at the row's first {cf} (same block shape).", "",
             f"| {rf} | " + " | ".join(map(_fmt_value, cvals)) + " | attn params | attn MFLOPs/img | attn fwd+bwd ms | "
             "attn peak MiB |", "|" + "---|" * (len(cvals) + 5)]
    vals = data["values"]
    means = {}
    for key, cell in grid.items():
        v = list(vals.get(cell.key, {}).values())
        if v:
            means[key] = summarize(v)
    best = {}
    for cv in cvals:
        col = [(means[(rv, cv)].mean, rv) for rv in rvals if (rv, cv) in means]
        if col:
            best[cv] = max(col)[1]
    for rv in rvals:
        row = []
        for cv in cvals:
            s = means.get((rv, cv))
            if s is None:
                row.append("—")
                continue
            lo, hi = (max(0.0, s.ci[0]), min(1.0, s.ci[1])) if not math.isnan(s.half_width) else (0.0, 0.0)
            mark = "†" if not math.isnan(s.half_width) and (lo, hi) != s.ci else ""
            text = _pts(s.mean) + ("" if math.isnan(s.half_width) else f" [{_pts(lo)}, {_pts(hi)}]{mark}")
            row.append(f"**{text}**" if best.get(cv) == rv else text)
        first = grid.get((rv, cvals[0]))
        lines.append(f"| {_fmt_value(rv)} | " + " | ".join(row + list(_cost_columns(first.key, data, costs))) + " |")
    return lines


def _cost_columns(key: str, data: dict, costs: dict) -> tuple[str, str, str, str]:
    """A cell's attention params and MFLOPs/img (its trials' records) and fwd+bwd ms and peak
    MiB (measured for the report), as table text; empty where there is nothing yet."""
    recs = data["records"].get(key, [])
    params = recs[0].get("attention_params", "") if recs else ""
    flops = recs[0].get("attention_flops") if recs else None
    ms = mib = ""
    if key in costs:
        cost, extra = costs[key]
        ms, mib = latency_text(cost), f"{extra / 2**20:.2f}"
    return str(params), "" if flops is None else f"{flops / 1e6:.2f}", ms, mib


def _grouped_verdict(study, data: dict, cells: list, comps: dict) -> list[str]:
    """A two-factor grid whose baseline names one factor (``{mechanism: none}`` across tasks):
    one line per value of the other factor, listing the rows by their verdict against their
    group's baseline (see :func:`judge`). Empty when the study is not of that shape (the
    per-cell lines are used then)."""
    if study.search or len(study.factors) != 2 or len(study.baseline) != 1:
        return []
    (bf,) = study.baseline
    if bf not in study.factors:
        return []
    (gf,) = [f for f in study.factors if f != bf]
    vals, out = data["values"], []
    for gv in study.factors[gf]:
        group = [c for c in cells if c.label_dict.get(gf) == gv and c.label_dict.get(bf) is not None]
        base = next((study.baseline_for(c, cells) for c in group), None)
        if base is None:
            continue
        bv = list(vals.get(base.key, {}).values())
        head = f"- **{gf}={_fmt_value(gv)}** ({_fmt_value(base.label_dict[bf])}: " + \
               (f"{_pts(summarize(bv).mean)}" if bv else "no finished seeds") + ")"
        kinds = ("better", "worse", "worse at this budget (still improving)",
                 f"equivalent within ±{study.margin:g}", "inconclusive", "neither learned")
        by_kind: dict[str, list] = {k: [] for k in kinds}
        missing = []
        for c in group:
            if c.key == base.key:
                continue
            name = _fmt_value(c.label_dict[bf])
            if c.key not in comps:
                missing.append(name)
                continue
            x = comps[c.key]
            text = _label_text(x, study.margin)
            kind = _group_kind(x, text, study.margin)
            more = f" ({text.split('(', 1)[1]}" if kind in ("inconclusive", "neither learned") and "(" in text else ""
            more = f" ({text.split(', and ', 1)[1]})" if ", and " in text else more
            by_kind[kind].append((x["d"].mean, f"{name} {100 * x['d'].mean:+.1f}{more}"))
        parts = []
        for label in kinds:
            if by_kind[label]:
                parts.append(f"{label}: " + ", ".join(e for _, e in sorted(by_kind[label], reverse=True)))
        if missing:
            parts.append("too few seeds: " + ", ".join(missing))
        out.append(head + ": " + ("; ".join(parts) if parts else "nothing to compare") + ".")
    if out:
        out.insert(0, f"Each {bf} against {_fmt_value(next(iter(study.baseline.values())))} on the same {gf}: "
                   "Δ in points over the finished seeds, largest first, grouped by verdict (see the sentence above "
                   "the table). The table above has every interval and how each Δ was computed.")
        out.insert(1, "")
    return out


def _group_kind(x: dict, text: str, margin: float) -> str:
    """The heading a comparison is listed under in a grouped verdict."""
    lab = x["decision"].label
    if lab == "worse" and x["limited"]:
        return "worse at this budget (still improving)"
    if lab == "equivalent":
        return f"equivalent within ±{margin:g}"
    return lab


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def _pruning_section(study, data: dict, cells: list) -> list[str]:
    """Which trials the pruner stopped, at which epoch, and the epochs it saved."""
    opts = ", ".join(f"{k}={v}" for k, v in study.pruner.items() if k != "name")
    lines = ["", "## Pruned trials (not counted in any mean)", "",
             f"Pruner: `{study.pruner['name']}`" + (f" ({opts})" if opts else "") + ". A pruned trial stopped after "
             "the epoch shown because its val mIoU was poor next to the trials finished before it; it is final "
             "(never run again)."]
    ep = data.get("epochs") or {}
    if ep.get("planned"):
        saved = 1 - ep["run"] / ep["planned"]
        lines += ["", f"Epochs trained: {ep['run']} of the {ep['planned']} that the same trials would take without "
                  f"pruning ({100 * saved:.1f}% saved)."]
    if data.get("pruned"):
        titles = {c.key: c.title() for c in cells}
        lines += ["", "| cell | seed | stopped after epoch | val mIoU there |", "|---|---|---|---|"]
        for p in sorted(data["pruned"], key=lambda p: (list(titles).index(p["key"]) if p["key"] in titles else 0,
                                                       p["seed"])):
            lines.append(f"| {titles.get(p['key'], p['key'])} | {p['seed']} | {p['epochs']}/{p['planned']} | "
                         f"{_pts(p['last'])} |")
    return lines
