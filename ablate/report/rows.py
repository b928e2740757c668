"""The report's table as numbers: one row per cell, computed once from the collected storage data
and rendered by every format (Markdown in :mod:`ablate.report`, HTML, LaTeX, CSV/JSON, W&B).

Values stay in the storage's unit (mIoU as a fraction 0-1); renderers print points. Nothing here
reads or writes storage: :func:`ablate.report.collect` gathers ``data`` first.
"""
from __future__ import annotations

import json
import math

from ..stats import ALPHA, budget_limited, learn_epochs, learned_by_text, summarize
from ..stats.decide import Comparison, decide_family
from ..stats.outcomes import clopper_pearson, count_learned, learn_threshold
from .search import view



def search_cells(study, data: dict) -> list:
    """A search study's cells are the points it sampled, best first; a point search's, those of its
    view (:func:`ablate.report.search.view`: the confirmation's cells, or the points best first)."""
    if study.point_search():
        return list((data if "table_cells" in data else view(study, data))["table_cells"])
    seen = {}
    configs = [(key, recs[0].get("config")) for key, recs in data["records"].items()]
    configs += [(p["key"], p["config"]) for p in data.get("pruned", [])]
    for key, config in configs:
        if isinstance(config, str) and key not in seen:
            seen[key] = study.search_cell(json.loads(config)["cell"])
    means = {k: sum(v.values()) / len(v) for k, v in data["values"].items()}
    return sorted(seen.values(), key=lambda c: -means.get(c.key, 0.0))


def thresholds(study, data: dict, cells: list) -> dict:
    """Per cell key, the learned/floor threshold of its task group
    (:func:`ablate.stats.outcomes.learn_threshold`): the study's ``learned_above:`` or the
    no-attention cell of the same task, against the best seed of the group."""
    declared = study.analysis.get("learned_above") if study.analysis else None
    groups: dict = {}
    for c in cells:
        groups.setdefault(getattr(c.data, "task", None), []).append(c)
    out = {}
    for group in groups.values():
        floor = study.floor_cell(group[0], cells)
        vals = {c.key: data["values"].get(c.key, {}) for c in group}
        thr = learn_threshold(vals, floor.key if floor is not None else None,
                              None if declared is None else declared / 100)
        out.update({c.key: thr for c in group})
    return out


def judge(study, data: dict, pairs: list, cells: list | None = None, later: list | None = None) -> tuple[dict, dict]:
    """Every (cell, baseline) pair with values in both, decided by :func:`ablate.stats.decide.decide_family`:
    the outcome kind (two-valued / learned / floor / unclassified against the group's threshold),
    the test it calls for, p-values adjusted within each family (:meth:`Study.family_of`) with
    ``study.correction``, TOST for unimodal comparisons, the verdict and the seeds that would decide.
    Returns (cell key -> comparison, {"m": tests over all families, "level": the first family's
    printed level, "alpha", "families": {family: (m, level)}, "thresholds": cell key -> Threshold}).
    ``later``: a list to which the seeds advice's simulations are appended instead of being run
    (:func:`ablate.stats.decide.decide_family`); the verdicts' advice is written when they are."""
    vals, margin = data["values"], study.margin / 100
    alpha = ALPHA
    cells = cells if cells is not None else [c for pair in pairs for c in pair]
    thr = thresholds(study, data, cells)
    live = [(c, b) for c, b in pairs if vals.get(c.key) and vals.get(b.key)]
    comps_in = [Comparison(c.key, b.key, vals[c.key], vals[b.key], study.family_of(c), thr[c.key]) for c, b in live]
    test = (study.analysis or {}).get("two_valued_test", "perm")
    decisions = decide_family(comps_in, margin, alpha, study.correction, two_valued_test=test,
                              advice=False if study.sequential else True if later is None else later)
    seq_info = _sequential(study, data, live, decisions) if study.sequential else None
    flags = {c.key: limited(study, data, c.key, thr.get(c.key)) for c in cells}  # budget-limited, once a cell
    comps, families, every = {}, {}, []
    for (c, b), dec in zip(live, decisions):
        x = {"cell": c, "base": b, "d": dec.d, "interval": dec.interval, "p_diff": dec.p_adj, "p_tost": dec.p_tost,
             "decision": dec, "learned_by": (learned_by(data, c.key, thr.get(c.key)),
                                             learned_by(data, b.key, thr.get(b.key)))}
        x["limited"] = flags[c.key] or flags[b.key]
        comps.setdefault(c.key, x)  # a cell's first pair is its row's (all_pairs designs have more)
        every.append(x)
        families[dec.family] = (dec.m, dec.level)
    m = sum(fm for fm, _ in families.values())
    first = next(iter(families.values()), (0, 1 - alpha))
    return comps, {"m": m, "level": first[1], "alpha": alpha, "families": families, "thresholds": thr,
                   "sequential": seq_info, "limited": {k for k, v in flags.items() if v}, "pairs": every}


def _look_interval(dec, d, vals: dict, pair: tuple, order: list) -> None:
    """The Δ interval that agrees with a sequential verdict: the look's exact test inverted
    (:func:`ablate.stats.decide.shift_interval`) on the seeds that look saw, at 1 - its nominal
    level; it excludes 0 exactly when the look rejected."""
    from ..stats.decide import shift_interval

    a, b = vals.get(pair[0], {}), vals.get(pair[1], {})
    seen = [s for s in order[:d.n] if s in a and s in b] if d.n else []
    if len(seen) < 2 or not math.isfinite(d.nominal) or not 0 < d.nominal < 1:
        return
    lo, hi = shift_interval(dec.test, [a[s] for s in seen], [b[s] for s in seen], 1 - d.nominal)
    dec.interval, dec.clipped, dec.level = (max(-1.0, lo), min(1.0, hi)), lo < -1 or hi > 1, 1 - d.nominal


SEQ_LABELS = {"better": "better", "worse": "worse", "equivalent": "equivalent", "undecided": "inconclusive"}


def _sequential(study, data: dict, live: list, decisions: list) -> dict:
    """Sequential seeds: the runner's decisions replayed from the stored values
    (:func:`ablate.stats.sequential.replay` with the exact p-value the runner used,
    :func:`ablate.stats.decide.exact_pvalue`, and the study's spending), written over the
    fixed-sample verdicts; returns the looks taken, the alpha spent and the trials saved."""
    from ..stats.decide import exact_pvalue, spending_kind
    from ..stats.sequential import replay

    seq, vals = study.sequential, data["values"]
    done = {c.key: set(vals.get(c.key, {})) for pair in live for c in pair}
    for key, seed, _ in data.get("failed", []):
        done.setdefault(key, set()).add(seed)
    pairs = [(c.key, b.key) for c, b in live]
    kind = spending_kind((study.analysis or {}).get("spending", "obrien_fleming"))
    rp = replay(vals, pairs, list(study.seeds), seq["start"], seq["max"], seq["step"], ALPHA, kind, exact_pvalue,
                study.margin / 100, study.correction, done, precision=False,
                families={(c.key, b.key): study.family_of(c) for c, b in live})
    for pair, dec in zip(pairs, decisions):
        d = rp.decisions.get(pair)
        if d is None:
            continue
        label = SEQ_LABELS.get(d.label, "inconclusive")
        dec.label = "neither learned" if dec.kind == "floor" and label != "better" and label != "worse" else label
        dec.p, dec.p_adj, dec.seeds = d.p, math.nan, None
        dec.test = "signflip" if dec.d.method == "paired" else "perm"
        _look_interval(dec, d, vals, pair, list(study.seeds))
        dec.reason = f"sequential seeds: exact {'sign-flip' if dec.test == 'signflip' else 'permutation'} test"
        where = f"the look at {d.n} seeds" if d.n else "no look yet"
        dec.note = ""
        dec.extra["look"] = (f"{where}, nominal level {d.nominal:.2g}" if math.isfinite(d.nominal) else where)
        dec.advice = {"max": "the seed cap was reached", "precise": "stopped: its interval is narrower than the "
                      "margin", "no test": "too few finished seeds", "": "still taking seeds"}.get(d.stop, d.stop)
    return {"looks": rp.looks, "spent": rp.spent, "trials": rp.trials, "max_trials": rp.max_trials,
            "saved": rp.saved, "kind": kind}


def limited(study, data: dict, key: str, threshold=None) -> bool:
    """Budget-limited (:func:`ablate.stats.budget_limited`): some seed first reached the learned
    threshold in the last third of the epochs while another has not yet, so more epochs would
    likely change k of n. Without a threshold (no floor cell, no ``learned_above:``) no cell is
    flagged: learning has no definition there."""
    if threshold is None or threshold.value is None:
        return False
    curves = (data.get("curves") or {}).get(key, [])
    return budget_limited(curves, threshold.value).limited


def learned_by(data: dict, key: str, threshold) -> str:
    """"learned by epoch B in k/n seeds (median epoch m)" for a cell, or "" without a threshold."""
    curves = (data.get("curves") or {}).get(key, [])
    if threshold is None or threshold.value is None or not curves:
        return ""
    return learned_by_text(learn_epochs(curves, threshold.value))


TEST_NAMES = {"perm": "exact permutation", "signflip": "exact sign-flip", "boschloo": "Boschloo exact",
              "paired_t": "paired t", "welch_t": "Welch t", "yuen": "Yuen trimmed t", "moderated_t": "moderated t"}


def method_text(d, test: str | None = None) -> str:
    """How Δ was tested: the chosen test over the seeds it used."""
    if test is not None and test not in ("paired_t", "welch_t"):
        over = f"{d.n} shared seeds" if d.method == "paired" else f"{d.n_a} and {d.n_b} seeds"
        return f"{TEST_NAMES.get(test, test)} over {over}"
    if d.method == "paired":
        return f"paired t over {d.n} shared seeds"
    return f"Welch t over {d.n_a} and {d.n_b} seeds"


def label_text(x: dict, margin_pts: float) -> str:
    """The verdict in words: better / worse (at this budget) / equivalent within ±m / neither learned /
    inconclusive (with the seeds that would decide, or why none would)."""
    dec = x["decision"]
    lab = dec.label
    if lab == "worse" and x["limited"]:
        lab = "worse at this budget (still improving)"
    if lab == "equivalent":
        return f"equivalent within ±{margin_pts:g}" + (f" (decided at {dec.extra['look']})" if dec.extra.get("look")
                                                        else "")
    if lab in ("better", "worse", "neither learned") or lab.startswith("worse at"):
        text = lab + (f", and {dec.note}" if dec.note and lab != "neither learned" else
                      f" ({dec.note})" if dec.note else "")
        return text + (f" (decided at {dec.extra['look']})" if dec.extra.get("look") and dec.label != "neither learned"
                       else "")
    if min(dec.d.n_a, dec.d.n_b) < 2:
        return "inconclusive (needs ≥ 2 seeds in both cells)"
    if dec.seeds is not None:
        more = dec.seeds - min(dec.d.n_a, dec.d.n_b)
        return f"inconclusive ({dec.seeds} seeds a cell would decide: {more} more)"
    return f"inconclusive ({dec.advice})" if dec.advice else "inconclusive"


def verdict_kind(x: dict) -> str:
    """One word per verdict for colours and marks: better, worse, budget (worse at this budget),
    equivalent, inconclusive (also for "neither learned")."""
    label = x["decision"].label
    if label == "neither learned":
        return "inconclusive"
    return "budget" if label == "worse" and x["limited"] else label


def table(study, data: dict, later: list | None = None) -> dict:
    """The study's table: ``cells`` in order, ``rows`` (one dict per cell, see :func:`_row`),
    ``comps`` and ``info`` from :func:`judge`, the ``limited`` cell keys, the ``ref_keys`` and
    the seeds ``planned`` per cell. A point search's table is built from its view
    (:func:`ablate.report.search.view`), which ``search`` and ``view`` hold. ``later``: see
    :func:`judge` (the table's advice is complete once that work has run)."""
    if study.point_search() and "table_cells" not in data:
        data = view(study, data)
    cells = search_cells(study, data) if study.search else study.cells()

    def base_of(c):
        if study.point_search():
            return data["table_base"]
        if study.search:
            return cells[0] if cells else None
        return study.baseline_for(c, cells)

    pairs = [(c, base_of(c)) for c in cells]
    from ..study.designs import design_pairs  # the design's pairs: a ladder's rows show the rung before them

    pairs, judged = design_pairs(study, cells, pairs)
    asked = len(later) if later is not None else 0
    comps, info = judge(study, data, judged, cells, later)
    lim = info["limited"]
    ref_keys = {c.key for c in cells[len(cells) - len(study.references):]} if study.references else set()
    planned = data.get("planned") or (1 if study.search else len(study.seeds))
    n_pruned: dict[str, int] = {}
    for p in data.get("pruned", []):
        n_pruned[p["key"]] = n_pruned.get(p["key"], 0) + 1
    rows = [_row(study, data, c, b, comps, lim, ref_keys, planned, n_pruned) for c, b in pairs]
    for r in rows:
        r["learned"] = _learned(data, info["thresholds"].get(r["key"]), r["key"])
    if later is not None and len(later) > asked:  # the advice is written when its simulations have run
        later[-1] = _reworded(later[-1], rows, comps, study.margin)
    return {"cells": cells, "pairs": pairs, "rows": rows, "comps": comps, "info": info, "limited": lim,
            "ref_keys": ref_keys, "planned": planned, "images": image_intervals(data, cells, pairs),
            "search": data.get("search"), "view": data if study.point_search() else None}


def _reworded(job, rows: list, comps: dict, margin: float):
    """``job`` (the seeds advice's simulations, :func:`judge`'s ``later``) whose finish also writes
    the compared rows' verdict words again, with the advice it has just given."""
    from ..config.forks import Pending

    def finish(answers: list) -> None:
        job.finish(answers)
        for r in rows:
            if r["role"] == "compared":
                r["verdict_text"] = label_text(comps[r["key"]], margin)

    return Pending(job.fn, job.items, finish)


def _row(study, data, c, base, comps, lim, ref_keys, planned, n_pruned) -> dict:
    """One cell's numbers: the seed summary, Δ and verdict against its baseline (``role``:
    baseline / compared / missing, where missing means too few seeds or no baseline), costs,
    per-class IoU and times."""
    s = summarize(list(data["values"].get(c.key, {}).values()))
    recs = data["records"].get(c.key, [])
    row = {"cell": c, "title": c.title(), "key": c.key, "mechanism": c.mechanism, "factors": c.label_dict,
           "reference": c.key in ref_keys, "n": s.n, "planned": planned, "pruned": n_pruned.get(c.key, 0),
           "mean": s.mean, "std": s.std, "ci": None if math.isnan(s.half_width) else _clip01(s.ci),
           "ci_clipped": not math.isnan(s.half_width) and _clip01(s.ci) != s.ci,
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
        dec = x["decision"]
        row.update(role="compared", delta=x["d"].mean, delta_ci=x["interval"], delta_clipped=dec.clipped,
                   delta_method=method_text(x["d"], dec.test), delta_se=x["d"].se, verdict=verdict_kind(x),
                   verdict_text=label_text(x, study.margin), p_diff=x["p_diff"], p_tost=x["p_tost"], p_raw=dec.p,
                   test=dec.test, test_reason=dec.reason, family=dec.family, family_m=dec.m, outcome=dec.kind)
    return row


def _clip01(ci: tuple) -> tuple:
    """A cell's interval kept inside the metric's range [0, 1] (the report marks a clipped one)."""
    return max(0.0, ci[0]), min(1.0, ci[1])


def _learned(data: dict, threshold, key: str) -> tuple | None:
    """(k learned, n seeds, Clopper-Pearson 95% low, high) of a cell; None without a threshold or values."""
    vals = list(data["values"].get(key, {}).values())
    kn = count_learned(vals, threshold) if threshold is not None and vals else None
    if kn is None:
        return None
    return (*kn, *clopper_pearson(*kn))


def _seed_counts(data: dict, key: str) -> tuple[dict, int]:
    """{seed: (intersections, unions)} of a cell's finished trials with per-image counts, and the
    number of its trials without them."""
    from ..models.image_counts import ATTR, decode

    out, without = {}, 0
    for r in data["records"].get(key, []):
        attr = r.get(ATTR)
        if isinstance(attr, dict):
            out[r.get("seed")] = decode(attr)
        else:
            without += 1
    return out, without


def image_intervals(data: dict, cells: list, pairs: list | None = None, n_boot: int = 2000) -> dict:
    """Image-level intervals where the finished trials stored per-image counts: per cell the
    percentile bootstrap of its mIoU resampling seeds and validation images together
    (:func:`ablate.stats.cell_bootstrap`), each seed's own images-only interval
    (:func:`ablate.stats.bootstrap_miou`), and per compared pair the paired bootstrap of Δ over the
    seeds both cells have counts for (:func:`ablate.stats.paired_bootstrap_delta`: the same draw of
    seeds and images for both). ``{"with": cell key -> dict, "deltas": cell key -> dict,
    "without": trials without counts}``."""
    from ..stats import bootstrap_miou, cell_bootstrap, paired_bootstrap_delta

    out, deltas, without, counts = {}, {}, 0, {}
    for c in cells:
        by_seed, none = _seed_counts(data, c.key)
        without += none
        if not by_seed:
            continue
        counts[c.key] = by_seed
        seeds = sorted(by_seed)
        per = [bootstrap_miou(*by_seed[s], n_boot=n_boot, seed=0) for s in seeds]
        cb = cell_bootstrap([by_seed[s] for s in seeds], n_boot=n_boot, seed=0)
        out[c.key] = {"seeds": [{"seed": s, "miou": b.miou, "lo": b.lo, "hi": b.hi, "n_images": b.n_images}
                                for s, b in zip(seeds, per)],
                      "miou": cb.point, "lo": cb.lo, "hi": cb.hi, "n_images": cb.n_images, "n_seeds": cb.n_seeds,
                      "n_boot": n_boot}
    for c, b in pairs or []:
        if b is None or c.key == b.key or c.key not in counts or b.key not in counts:
            continue
        shared = sorted(set(counts[c.key]) & set(counts[b.key]))
        if not shared:
            continue
        try:
            pb = paired_bootstrap_delta([counts[c.key][s] for s in shared], [counts[b.key][s] for s in shared],
                                        n_boot=n_boot, seed=0)
        except ValueError:  # different validation images: nothing to pair
            continue
        deltas[c.key] = {"delta": pb.point, "lo": pb.lo, "hi": pb.hi, "n_seeds": pb.n_seeds, "n_images": pb.n_images}
    return {"with": out, "deltas": deltas, "without": without}


COST_REPEATS, COST_WARMUP = 5, 1


def block_shape(cell, world_size: int = 1, head=None) -> tuple[int, int, int, int]:
    """The attention block's input in training: (per-device batch, the block's channels, the
    backbone's output height and width for the training input: the synthetic image or the real
    dataset's crop) for this cell. Nothing is built (a ResNet would load its weights). ``head``:
    the study's; a cell whose ``head.X`` factors made its own uses that."""
    from dataclasses import asdict

    from ..models.geometry import feature_geometry, feature_side

    head = getattr(cell, "head", None) or head
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
    if hasattr(b, "options"):  # a backbone plugin (ablate/plugins/mechanisms.py): its options as set
        arch = ", ".join(f"{k} {v}" for k, v in b.options) or "its defaults"
    else:
        from ..models.registry import lookup

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
