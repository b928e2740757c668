"""The report's figures, drawn with matplotlib's object interface (no pyplot, no global backend):
a forest plot of the comparisons, learning curves per cell, accuracy against cost with the
Pareto front, and a heat map for a two-factor grid. A figure's cost does not grow with its
panels' axes: the learning curves of every cell are boxes in one Axes, and the constrained layout
of the others runs once, before the SVG and the PNG are written.

Every figure is built from :func:`ablate.report.rows.table` and the collected data, in mIoU
points. :func:`svg` writes a figure as SVG text that is the same bytes for the same numbers
(fixed hash salt, no date, text kept as text).
"""
from __future__ import annotations

import io
import math

COLOURS = {"better": "#1a7f37", "worse": "#cf222e", "budget": "#bc4c00", "equivalent": "#0969da",
           "inconclusive": "#6e7781", "baseline": "#24292f"}
FONT = 8
SEED_LINES_MAX = 50  # a cell with more seeds draws the band of its seeds' curves (min to max per epoch), not a line each


def _fig(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def svg(fig, salt: str) -> str:
    """The figure as deterministic SVG text (``salt`` makes clip-path ids unique per figure)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none", "svg.image_inline": True}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "ablate"})
    return buf.getvalue()


def png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": "ablate"})
    return buf.getvalue()


def _value(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def _short(text: str, limit: int = 42) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def forest(tab: dict, margin_pts: float):
    """Δ of each comparison (points) with its interval at the corrected level, coloured by
    verdict, over the ±margin band; None when nothing was compared."""
    rows = [r for r in tab["rows"] if r["role"] == "compared"]
    if not rows:
        return None
    titles = {r["key"]: r["title"] for r in tab["rows"]}
    fig = _fig(7.5, 0.9 + 0.32 * len(rows))
    ax = fig.add_subplot()
    ax.axvspan(-margin_pts, margin_pts, color="#d0d7de", alpha=0.6, lw=0, label=f"±{margin_pts:g} margin")
    ax.axvline(0, color="#57606a", lw=0.8)
    for i, r in enumerate(rows):
        y, colour, d = len(rows) - 1 - i, COLOURS[r["verdict"]], 100 * r["delta"]
        if r["delta_ci"] is not None:
            lo, hi = (100 * v for v in r["delta_ci"])
            ax.plot([lo, hi], [y, y], color=colour, lw=1.6, solid_capstyle="butt")
            ax.plot(d, y, "o", color=colour, ms=5)
        else:
            ax.plot(d, y, "o", mfc="white", mec=colour, ms=5)
            ax.annotate("interval not printable", (d, y), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=FONT - 1, color=colour)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_short(f"{r['title']} vs {titles.get(r['base'], '?')}", 60) for r in reversed(rows)],
                       fontsize=FONT)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"Δ mIoU (points) with {100 * tab['info']['level']:.4g}% interval", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    handles = [ax.plot([], [], "o", color=COLOURS[k], label=k if k != "budget" else "worse at this budget")[0]
               for k in dict.fromkeys(r["verdict"] for r in rows)]
    ax.legend(handles=[*handles, ax.patches[0]], fontsize=FONT - 1, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    return fig


def curves(tab: dict, data: dict):
    """Val mIoU per epoch for each cell with finished trials: one thin line per seed, the mean in
    bold (complete trials only), a small panel per cell on shared scales; None when no curve is
    stored. The panels are boxes drawn in one Axes (line collections, one per colour), not an
    Axes each: drawing costs O(lines), with no per-axes ticks or layout passes, so a study of
    hundreds of cells draws in about a second. A cell of more than :data:`SEED_LINES_MAX` seeds
    draws the band its seeds' curves span (min to max at each epoch) instead of a line per seed,
    so the figure grows with the cells and epochs, not with the trials."""
    cells = [(r, data.get("curves", {}).get(r["key"], [])) for r in tab["rows"]]
    cells = [(r, [c for c in cs if c]) for r, cs in cells if any(cs)]
    if not cells:
        return None
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ncol = min(4, len(cells))
    nrow = math.ceil(len(cells) / ncol)
    width, height = 2.2 * ncol + 0.4, 1.7 * nrow + 0.5
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0.55 / width, 0.4 / height, 1 - 0.65 / width, 1 - 0.5 / height))
    ax.set_axis_off()
    values = [100 * v for _, cs in cells for c in cs for v in c]
    lo, hi = min(values), max(values)
    lo, hi = (lo - 1, hi + 1) if hi - lo < 1e-9 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ticks = [t for t in MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= t <= hi]
    epochs = max(len(c) for _, cs in cells for c in cs)
    epoch_ticks = [int(t) for t in MaxNLocator(nbins=4, integer=True).tick_values(1, epochs) if 1 <= t <= epochs]
    px, py = 1.18, 1.32  # panel pitch in the box's units (a box is 1 x 1): room for titles and tick labels

    def place(i: int, e: float, v: float) -> tuple[float, float]:
        col, row = i % ncol, i // ncol
        x = 0.5 if epochs == 1 else (e - 1) / (epochs - 1)
        return col * px + x, -row * py + (v - lo) / (hi - lo)

    seeds: dict[str, list] = {}
    bands: dict[str, list] = {}
    means, mean_colours, frames, grid = [], [], [], []
    for i, (r, cs) in enumerate(cells):
        colour = COLOURS.get(r.get("verdict", "baseline"), COLOURS["baseline"])
        if len(cs) > SEED_LINES_MAX:
            bands.setdefault(colour, []).append(_band(cs, lambda e, v, i=i: place(i, e, v)))
        else:
            seeds.setdefault(colour, []).extend([place(i, e + 1, 100 * v) for e, v in enumerate(c)] for c in cs)
        n = min(len(c) for c in cs)
        means.append([place(i, e + 1, 100 * sum(c[e] for c in cs) / len(cs)) for e in range(n)])
        mean_colours.append(colour)
        (x0, y0), (x1, y1) = place(i, 1, lo), place(i, epochs, hi)
        x0, x1 = (x0 - 0.5, x0 + 0.5) if epochs == 1 else (x0, x1)
        frames.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
        grid += [[(x0, place(i, 1, t)[1]), (x1, place(i, 1, t)[1])] for t in ticks]
        grid += [[(place(i, e, lo)[0], y0), (place(i, e, lo)[0], y1)] for e in epoch_ticks]
        ax.text((x0 + x1) / 2, y1 + 0.04, _short(r["title"] + (" (budget-limited)" if r["limited"] else ""), 34),
                ha="center", va="bottom", fontsize=FONT)
        if i % ncol == 0:
            for t in ticks:
                ax.text(x0 - 0.03, place(i, 1, t)[1], f"{t:g}", ha="right", va="center", fontsize=FONT - 1)
        if i + ncol >= len(cells):
            for e in epoch_ticks:
                ax.text(place(i, e, lo)[0], y0 - 0.04, str(e), ha="center", va="top", fontsize=FONT - 1)
    ax.add_collection(LineCollection(grid, colors="#d0d7de", linewidths=0.5))
    ax.add_collection(LineCollection(frames, colors="#57606a", linewidths=0.6))
    for colour, lines in seeds.items():
        ax.add_collection(LineCollection(lines, colors=colour, linewidths=0.7, alpha=0.45))
    for colour, polys in bands.items():
        ax.add_collection(PolyCollection(polys, facecolors=colour, edgecolors="none", alpha=0.3))
    ax.add_collection(LineCollection(means, colors=mean_colours, linewidths=2.0))
    ax.set_xlim(-0.3, (ncol - 1) * px + 1.05)
    ax.set_ylim(-(nrow - 1) * py - 0.2, 1.2)
    fig.text(0.5, 0.1 / height, "epoch", ha="center", va="bottom", fontsize=FONT)
    fig.text(0.1 / width, 0.5, "val mIoU (points)", rotation=90, ha="left", va="center", fontsize=FONT)
    return fig


def _band(cs: list, place) -> list[tuple[float, float]]:
    """The outline of the band the curves ``cs`` span: the largest value at each epoch forwards,
    the smallest backwards (epochs that at least one curve reached), placed by ``place(epoch, points)``."""
    epochs = max(len(c) for c in cs)
    hi = [max(c[e] for c in cs if len(c) > e) for e in range(epochs)]
    lo = [min(c[e] for c in cs if len(c) > e) for e in range(epochs)]
    return ([place(e + 1, 100 * v) for e, v in enumerate(hi)]
            + [place(e + 1, 100 * v) for e, v in reversed(list(enumerate(lo)))])


def _pareto(points: list[tuple[float, float, int]]) -> list[int]:
    """Indices of the points no other point beats: cheaper-or-equal cost and higher mean."""
    front, best = [], -math.inf
    for x, y, i in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append(i)
            best = y
    return front


COST_AXES = (("attn_flops", 1e-6, "attention MFLOPs / image"), ("attn_ms", 1.0, "attention fwd+bwd ms"),
             ("attn_peak_mib", 1.0, "attention peak MiB"))


def cost(tab: dict):
    """Mean mIoU (95% interval over seeds) against each recorded cost, the Pareto front (cheaper
    and better than every other cell) joined and labelled; None when no cell has a cost."""
    rows = [r for r in tab["rows"] if r["n"] > 0]
    panels = [(k, scale, label) for k, scale, label in COST_AXES if any(r[k] is not None for r in rows)]
    if not panels:
        return None
    fig = _fig(3.3 * len(panels) + 0.3, 3.4)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (k, scale, label) in zip(axes, panels):
        pts = [(r[k] * scale, 100 * r["mean"], i) for i, r in enumerate(rows) if r[k] is not None]
        front, labelled = set(_pareto(pts)), []
        for x, y, i in sorted(pts):
            r, on = rows[i], i in front
            colour = COLOURS.get(r.get("verdict", "baseline"), COLOURS["baseline"])
            err = None if r["ci"] is None else [[y - 100 * r["ci"][0]], [100 * r["ci"][1] - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", color=colour, mfc=colour if on else "white", ms=5, lw=0.9,
                        capsize=2)
            if on:  # labels alternate above and below so neighbours on the front do not overlap
                ax.annotate(_short(r["title"], 22), (x, y), xytext=(4, 5 if len(labelled) % 2 == 0 else -11),
                            textcoords="offset points", fontsize=FONT - 2)
                labelled.append(i)
        line = sorted((x, y) for x, y, i in pts if i in front)
        ax.plot([p[0] for p in line], [p[1] for p in line], color="#57606a", lw=0.8, ls="--", drawstyle="steps-post")
        xs = [x for x, _, _ in pts]
        if min(xs) >= 0 and max(xs) > 0 and max(xs) / max(min(x for x in xs if x > 0), 1e-12) > 50:
            ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
        ax.set_xlabel(label, fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        ax.grid(alpha=0.3, lw=0.5)
    lo, hi = axes[0].get_ylim()
    axes[0].set_ylim(max(lo, -2), min(hi, 102))  # an interval past the metric's range is cut at it
    axes[0].set_ylabel("val mIoU (points), 95% CI over seeds", fontsize=FONT)
    fig.suptitle("filled: on the Pareto front (no cell is cheaper and better)", fontsize=FONT)
    return fig


def heatmap(study, tab: dict):
    """A two-factor grid's mean mIoU as a heat map with each entry's 95% interval written in it;
    None for other studies."""
    if study.search or len(study.factors) != 2:
        return None
    (rf, rvals), (cf, cvals) = list(study.factors.items())
    rows = tab["rows"]  # the grid first, in product order, then the references
    fig = _fig(1.3 * len(cvals) + 2.2, 0.55 * len(rvals) + 1.4)
    ax = fig.add_subplot()
    grid = [[rows[i * len(cvals) + j]["mean"] * 100 for j in range(len(cvals))] for i in range(len(rvals))]
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i in range(len(rvals)):
        for j in range(len(cvals)):
            r = rows[i * len(cvals) + j]
            if r["n"] == 0:
                continue
            text = f"{100 * r['mean']:.1f}" + ("" if r["ci"] is None else
                                               f"\n[{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]")
            light = im.norm(grid[i][j]) < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=FONT - 1, color="white" if light else "black")
    ax.set_xticks(range(len(cvals)), [_value(v) for v in cvals], fontsize=FONT)
    ax.set_yticks(range(len(rvals)), [_value(v) for v in rvals], fontsize=FONT)
    ax.set_xlabel(cf, fontsize=FONT)
    ax.set_ylabel(rf, fontsize=FONT)
    fig.colorbar(im, ax=ax, label="mean val mIoU (points)").ax.tick_params(labelsize=FONT - 1)
    return fig


def _band_note(tab: dict, data: dict) -> str:
    """The curves caption's words for cells drawn as a band (none: the caption as it always was)."""
    many = [r for r in tab["rows"] if len([c for c in data.get("curves", {}).get(r["key"], []) if c]) > SEED_LINES_MAX]
    return (f"; a cell of more than {SEED_LINES_MAX} seeds ({len(many)} here) as the band of its seeds' curves "
            "(lowest to highest at each epoch)") if many else ""


def svgs(study, tab: dict, data: dict) -> list[tuple[str, str, str]]:
    """(stem, caption, :func:`svg` text) of every figure, kept on disk by content: a report
    rewritten from the same results reads them instead of drawing again (the same bytes). The key
    hashes what the figures are drawn from (the table, the curves, the study's name, margin and
    factors), this module's source, matplotlib's version and its settings (:func:`figures_key`);
    a point search's figures are drawn every time. Under ``$ABLATE_CACHE/figures``
    (:mod:`ablate.stats.cache`; ``ABLATE_CACHE=off`` turns it off)."""
    from ..config.forks import run_together

    return run_together([svgs_pending(study, tab, data)])[0]


def svgs_pending(study, tab: dict, data: dict):
    """:func:`svgs` as work not yet run (:class:`ablate.config.forks.Pending`: one figure an item,
    none when the cache holds them), for a report that draws them beside other work."""
    from ..config.forks import Pending
    from ..stats import cache

    key = figures_key(study, tab, data)
    hit, found = cache.get(key, "figures") if key else (False, None)
    if hit and isinstance(found, list) and all(isinstance(f, list) and len(f) == 3 for f in found):
        return Pending(None, [], lambda _: [tuple(f) for f in found])
    todo = _builders(study, tab, data)

    def drawn(piece):  # one figure drawn and written as SVG: the figures are drawn side by side
        stem, _, build = piece
        fig = _laid_out(build())
        return None if fig is None else svg(fig, f"{study.name}-{stem}")

    def finish(texts: list) -> list:
        out = [(stem, cap, text) for (stem, cap, _), text in zip(todo, texts) if text is not None]
        if key:
            cache.put(key, [list(f) for f in out], "figures")
        return out

    return Pending(drawn, todo, finish)


def figures_key(study, tab: dict, data: dict) -> str | None:
    """The content address of a study's figures, or None when they are not kept (a point search,
    or an input whose text form is not its value)."""
    import hashlib
    import json
    from pathlib import Path

    import matplotlib

    if study.search:
        return None

    def plain(o):
        if isinstance(o, (set, frozenset)):
            return sorted(plain(v) if not isinstance(v, (str, int, float)) else v for v in o)
        text = repr(o)
        if " at 0x" in text:
            raise TypeError(f"no stable text form: {type(o).__name__}")
        return f"{type(o).__name__}:{text}"

    try:
        content = json.dumps({"name": study.name, "margin": study.margin, "factors": plain(study.factors),
                              "tab": tab, "curves": data.get("curves", {}), "mpl": matplotlib.__version__,
                              "rc": _settings(matplotlib.rcParams)},
                             sort_keys=True, default=plain)
    except (TypeError, ValueError):
        return None
    h = hashlib.sha256(Path(__file__).read_bytes() + b"\0" + content.encode())
    return h.hexdigest()[:32]


def _settings(rc) -> list:
    """matplotlib's settings as (name, repr) pairs, read raw (reading each through ``rc[name]``
    validates it again: 0.4 s), without the backend (its raw value may be a sentinel object whose
    text changes from process to process; the figures are written by the SVG backend whatever it
    names)."""
    return sorted((k, repr(v)) for k, v in dict.items(rc) if k != "backend")


def figures(study, tab: dict, data: dict) -> list[tuple[str, str, object]]:
    """(file stem, caption, matplotlib Figure) for every figure this study has."""
    out = [(stem, cap, _laid_out(build())) for stem, cap, build in _builders(study, tab, data)]
    return [(stem, cap, fig) for stem, cap, fig in out if fig is not None]


def _builders(study, tab: dict, data: dict) -> list[tuple[str, str, object]]:
    """(file stem, caption, a function that draws the figure or returns None) for every figure."""
    out = [("forest", "Δ of each comparison with its corrected interval; the grey band is ±margin",
            lambda: forest(tab, study.margin)),
           ("curves", "Val mIoU per epoch: one thin line per seed, the mean in bold" + _band_note(tab, data),
            lambda: curves(tab, data)),
           ("cost", "Accuracy against cost, Pareto front filled", lambda: cost(tab)),
           ("heatmap", "Mean val mIoU over the two-factor grid with 95% intervals", lambda: heatmap(study, tab))]
    if study.search and tab.get("search"):  # a point search: history, importances, dependence, Pareto front
        from .importance import figures as search_figures

        out += [(stem, cap, (lambda f=fig: f)) for stem, cap, fig in search_figures(study, tab)]
    return out


def _laid_out(fig):
    """``fig`` with its constrained layout computed once, then frozen: the SVG and the PNG reuse it."""
    if fig is not None and fig.get_layout_engine() is not None:
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    return fig
