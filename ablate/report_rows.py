"""The report's table as numbers: one row per cell, computed once from the collected storage data
and rendered by every format (Markdown in :mod:`ablate.report`, HTML, LaTeX, CSV/JSON, W&B).

Values stay in the storage's unit (mIoU as a fraction 0-1); renderers print points. Nothing here
reads or writes storage: :func:`ablate.report.collect` gathers ``data`` first.
"""
from __future__ import annotations

import json
import math

from .stats import (adjust, budget_limited, compare, interval_level, printable, summarize, tost, verdict,
                    verdict_alpha)

ALPHA = 0.05  # family level of the verdicts


def search_cells(study, data: dict) -> list:
    """A search study's cells are the points it sampled, best first."""
    seen = {}
    configs = [(key, recs[0].get("config")) for key, recs in data["records"].items()]
    configs += [(p["key"], p["config"]) for p in data.get("pruned", [])]
    for key, config in configs:
        if isinstance(config, str) and key not in seen:
            seen[key] = study.search_cell(json.loads(config)["cell"])
    means = {k: sum(v.values()) / len(v) for k, v in data["values"].items()}
    return sorted(seen.values(), key=lambda c: -means.get(c.key, 0.0))


def judge(study, data: dict, pairs: list) -> tuple[dict, dict]:
    """Every (cell, baseline) pair with values in both: Δ (paired over shared seeds, else Welch),
    difference and TOST p-values corrected together over the study (``study.correction``), the
    interval at :func:`ablate.stats.interval_level`, the verdict, and whether either cell is
    budget-limited. An interval :func:`ablate.stats.printable` rejects (n < 2, or wider than the
    0-100 range) is dropped and its verdict is inconclusive. Returns (cell key -> comparison,
    {"m": comparisons with a test, "level": the printed intervals' level, "alpha": the family level,
    ALPHA / K for a study with sequential seeds, the level its runner stopped at})."""
    vals, margin = data["values"], study.margin / 100
    alpha = verdict_alpha(ALPHA, study.sequential)  # ALPHA / K over K possible looks with sequential seeds
    comps = {c.key: {"cell": c, "base": b, "d": compare(vals[c.key], vals[b.key], shared=True)}
             for c, b in pairs if vals.get(c.key) and vals.get(b.key)}
    keys = list(comps)
    p_diff = adjust([comps[k]["d"].p for k in keys], study.correction)
    p_tost = adjust([tost(comps[k]["d"], margin, alpha).p for k in keys], study.correction)
    m = sum(not math.isnan(comps[k]["d"].p) for k in keys)
    level = interval_level(alpha, m, study.correction)
    flags = {}
    for k, pd, pt in zip(keys, p_diff, p_tost):
        x = comps[k]
        iv = x["d"].interval(level)
        x["interval"] = iv if printable(iv, 1.0) else None
        if x["interval"] is None:
            pd = pt = math.nan
        x["p_diff"], x["p_tost"] = pd, pt
        x["verdict"] = verdict(x["d"], pd, pt, margin, alpha, m)
        for c in (x["cell"], x["base"]):
            if c.key not in flags:
                flags[c.key] = limited(study, data, c.key)
        x["limited"] = flags[x["cell"].key] or flags[x["base"].key]
    return comps, {"m": m, "level": level, "alpha": alpha}


def limited(study, data: dict, key: str) -> bool:
    """Budget-limited: the seed-mean validation curve's slope over its last third is above zero
    beyond its noise (:func:`ablate.stats.budget_limited`) and the rise over that window exceeds
    the study's margin (a steady rise smaller than the margin could not change a verdict)."""
    curves = (data.get("curves") or {}).get(key, [])
    return budget_limited(curves, alpha=ALPHA, min_gain=study.margin / 100).limited


def method_text(d) -> str:
    if d.method == "paired":
        return f"paired t over {d.n} shared seeds"
    return f"Welch t over {d.n_a} and {d.n_b} seeds"


def label_text(x: dict, margin_pts: float) -> str:
    """The verdict in words: better / worse (at this budget) / equivalent within ±m / inconclusive."""
    v = x["verdict"]
    if v.label == "worse" and x["limited"]:
        return "worse at this budget (still improving)"
    if v.label == "equivalent":
        return f"equivalent within ±{margin_pts:g}"
    if v.label != "inconclusive":
        return v.label
    if v.capped:
        return f"inconclusive (more than {v.max_seeds} seeds a cell would be needed)"
    if v.more is None:
        return "inconclusive (needs ≥ 2 seeds in both cells)"
    return f"inconclusive ({v.more} more seed{'s' if v.more != 1 else ''} would decide)"


def verdict_kind(x: dict) -> str:
    """One word per verdict for colours and marks: better, worse, budget (worse at this budget),
    equivalent, inconclusive."""
    label = x["verdict"].label
    return "budget" if label == "worse" and x["limited"] else label


def table(study, data: dict) -> dict:
    """The study's table: ``cells`` in order, ``rows`` (one dict per cell, see :func:`_row`),
    ``comps`` and ``info`` from :func:`judge`, the ``limited`` cell keys, the ``ref_keys`` and
    the seeds ``planned`` per cell."""
    cells = search_cells(study, data) if study.search else study.cells()

    def base_of(c):
        if study.search:
            return cells[0] if cells else None
        return study.baseline_for(c, cells)

    pairs = [(c, base_of(c)) for c in cells]
    comps, info = judge(study, data, [(c, b) for c, b in pairs if b is not None and b.key != c.key])
    lim = {c.key for c in cells if limited(study, data, c.key)}
    ref_keys = {c.key for c in cells[len(cells) - len(study.references):]} if study.references else set()
    planned = 1 if study.search else len(study.seeds)
    n_pruned: dict[str, int] = {}
    for p in data.get("pruned", []):
        n_pruned[p["key"]] = n_pruned.get(p["key"], 0) + 1
    rows = [_row(study, data, c, b, comps, lim, ref_keys, planned, n_pruned) for c, b in pairs]
    return {"cells": cells, "pairs": pairs, "rows": rows, "comps": comps, "info": info, "limited": lim,
            "ref_keys": ref_keys, "planned": planned, "images": image_intervals(data, cells)}


def _row(study, data, c, base, comps, lim, ref_keys, planned, n_pruned) -> dict:
    """One cell's numbers: the seed summary, Δ and verdict against its baseline (``role``:
    baseline / compared / missing, where missing means too few seeds or no baseline), costs,
    per-class IoU and times."""
    s = summarize(list(data["values"].get(c.key, {}).values()))
    recs = data["records"].get(c.key, [])
    row = {"cell": c, "title": c.title(), "key": c.key, "mechanism": c.mechanism, "factors": c.label_dict,
           "reference": c.key in ref_keys, "n": s.n, "planned": planned, "pruned": n_pruned.get(c.key, 0),
           "mean": s.mean, "std": s.std, "ci": None if math.isnan(s.half_width) else s.ci,
           "limited": c.key in lim, "base": base.key if base is not None else None,
           "attn_params": recs[0].get("attention_params") if recs else None,
           "attn_flops": recs[0].get("attention_flops") if recs else None, "attn_ms": None, "attn_peak_mib": None}
    costs = data.get("costs") or {}
    if c.key in costs:
        cost, extra = costs[c.key]
        row["attn_ms"], row["attn_peak_mib"] = cost.latency_ms, extra / 2**20
    if recs:
        row["class_iou"] = [sum(r["class_iou"][i] for r in recs) / len(recs) for i in range(len(recs[0]["class_iou"]))]
        row["wall_s"] = sum(r["wall_s"] for r in recs) / len(recs)
        row["compute_s"] = sum(r["compute_s"] for r in recs) / len(recs)
    if base is not None and c.key == base.key:
        row["role"] = "baseline"
    elif c.key not in comps:
        row["role"] = "missing"
    else:
        x = comps[c.key]
        row.update(role="compared", delta=x["d"].mean, delta_ci=x["interval"], delta_method=method_text(x["d"]),
                   delta_se=x["d"].se, verdict=verdict_kind(x), verdict_text=label_text(x, study.margin),
                   p_diff=x["p_diff"], p_tost=x["p_tost"])
    return row


def image_intervals(data: dict, cells: list, n_boot: int = 2000) -> dict:
    """Per cell with per-image counts in its finished trials: each seed's percentile bootstrap
    interval over validation images (:func:`ablate.stats.bootstrap_miou`, the same resamples for
    every seed since they share the validation set and the bootstrap seed) and the cell's
    interval as the mean over its seeds of the per-seed bounds. ``{"with": cell keys -> dict,
    "without": trials without counts}``."""
    from .image_counts import ATTR, decode
    from .stats import bootstrap_miou

    out, without = {}, 0
    for c in cells:
        seeds = []
        for r in data["records"].get(c.key, []):
            attr = r.get(ATTR)
            if not isinstance(attr, dict):
                without += 1
                continue
            b = bootstrap_miou(*decode(attr), n_boot=n_boot, seed=0)
            seeds.append({"seed": r.get("seed"), "miou": b.miou, "lo": b.lo, "hi": b.hi, "n_images": b.n_images})
        if seeds:
            out[c.key] = {"seeds": seeds, "lo": sum(s["lo"] for s in seeds) / len(seeds),
                          "hi": sum(s["hi"] for s in seeds) / len(seeds),
                          "miou": sum(s["miou"] for s in seeds) / len(seeds), "n_images": seeds[0]["n_images"],
                          "n_boot": n_boot}
    return {"with": out, "without": without}


COST_REPEATS, COST_WARMUP = 5, 1


def block_shape(cell, world_size: int = 1, head=None) -> tuple[int, int, int, int]:
    """The attention block's input in training: (per-device batch, the block's channels, the
    backbone's output height and width for the training input: the synthetic image or the real
    dataset's crop) for this cell. Nothing is built (a ResNet would load its weights)."""
    from dataclasses import asdict

    from .models.segmenter import feature_geometry, feature_side

    channels, stride = feature_geometry(asdict(cell.backbone), asdict(head) if head is not None else None)
    h, w = cell.data.crop_size if hasattr(cell.data, "crop_size") else (cell.data.size, cell.data.size)
    return (max(1, cell.train.batch_size // world_size), channels, feature_side(h, stride), feature_side(w, stride))


def describe_setup(study) -> str:
    """The data, training length, backbone and evaluation a study's metric is measured with (one
    sentence part)."""
    d, b, t = study.data, study.backbone, study.train
    if hasattr(d, "data_root"):
        on = (f"the {d.name} `{d.val_split}` split under `{d.data_root}`, scored at the original label "
              f"resolution ({'all' if not d.val_images else d.val_images} images), trained "
              f"on {d.crop_size[0]}x{d.crop_size[1]} crops")
    else:
        task = (f"the synthetic tasks of the `data.task` factor ({', '.join(map(str, study.factors['data.task']))})"
                if isinstance(study.factors.get("data.task"), list) else
                f"the task plugin `{d.name}`" if hasattr(d, "options") else f"the `{d.task}` synthetic task")
        on = f"{task}, {d.val_images} validation images fixed by data seed {d.seed}"
    length = (f"{t.iterations} iterations, validated every {t.iterations // t.epochs}" if t.iterations
              else f"{t.epochs} epochs")
    if hasattr(b, "options"):  # a backbone plugin (ablate/plugins.py): its options as set
        arch = ", ".join(f"{k} {v}" for k, v in b.options) or "its defaults"
    else:
        from .models.registry import lookup

        arch = lookup(b.name).describe(b)
    head = study.head
    if head.style == "mmseg":
        width = f", {head.channels} channels" if head.channels else ""
        arch += f"; head: mmseg's decode head for each mechanism{width}"
        arch += f", auxiliary FCN head weight {head.aux_weight:g}" if head.aux_weight else ""
    elif head.channels or head.aux_weight:
        arch += (f"; head: {head.channels}-channel 3x3 conv before the block" if head.channels else "; head:") + \
                (f", auxiliary FCN head weight {head.aux_weight:g}" if head.aux_weight else "")
    return f"on {on}; {length}; backbone `{b.name}` ({arch}); {eval_text(study)}"


def eval_text(study) -> str:
    """Which evaluation produced the study's numbers (its ``eval:``), as the metric line says it."""
    spec = study.eval
    return "evaluated on the whole image" if spec == type(spec)() else f"evaluated by {spec.describe()}"
