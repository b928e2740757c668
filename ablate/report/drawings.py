"""The report's pictures drawn (matplotlib's object interface, like :mod:`ablate.report.figures`):
per cell, the attention maps at the query pixels, the prediction grid and the failure gallery of
:mod:`ablate.report.pictures`, and the Markdown section that shows them (:func:`lines`).

Images are drawn at their pixels (no smoothing); label maps in one fixed palette per class (the
unscored cue pixels white); an attention map is drawn over a faded copy of its image, upsampled
to the image by nearest pixels, each panel scaled to its own range (the figure says so); query
pixels are marked + and x, the cue the task knows is a dashed box.
"""
from __future__ import annotations

import numpy as np

from .figures import FONT
from .pictures import FAILURES, GRID_IMAGES, QUERIES, CellPictures, cue_box, who

PALETTE = ("#30363d", "#cf222e", "#1a7f37", "#0969da", "#bf8700", "#8250df", "#1b7c83", "#bc4c00", "#6e7781",
           "#e85aad")
IGNORED = "#ffffff"
MARKERS = ("+", "x", "1", "2")
PANEL = 1.25  # inches a panel


def _fig(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _rgb_hex(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))


def label_rgb(label: np.ndarray) -> np.ndarray:
    """(H, W, 3) floats: each class in its palette colour, unscored pixels white."""
    table = np.array([_rgb_hex(c) for c in PALETTE])
    out = table[np.asarray(label) % len(PALETTE)]
    out[np.asarray(label) == 255] = _rgb_hex(IGNORED)
    return out


def _image(img: np.ndarray) -> np.ndarray:
    from ..trainer.tracking import rgb

    return rgb(img)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_linewidth(0.4)


def _marks(ax, label: np.ndarray, queries, only: int | None = None) -> None:
    """The cue's dashed box and the query pixels (all, or query ``only``)."""
    from matplotlib.patches import Rectangle

    box = cue_box(label)
    if box is not None:
        y0, x0, y1, x1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ls="--", lw=0.8, ec="#ffd33d"))
    h, w = label.shape
    for q, (qy, qx) in enumerate(queries):
        if only is None or q == only:
            ax.plot(qx * w - 0.5, qy * h - 0.5, MARKERS[q % len(MARKERS)], color="#00e5ff", ms=6, mew=1.4)


def _heat(ax, picture, img: np.ndarray, label: np.ndarray) -> None:
    h, w = label.shape
    ax.imshow(_image(img).mean(2), cmap="gray", alpha=0.45, interpolation="nearest")
    p = picture.numpy()
    lo, hi = float(p.min()), float(p.max())
    ax.imshow(p, cmap="inferno", alpha=0.8, interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5),
              vmin=lo, vmax=hi if hi > lo else lo + 1e-12)


def _row_label(trial, more: str = "") -> str:
    """"seed 0, image 1" over "learned, mIoU 90.0": a drawn trial, on two short lines."""
    roles = [r for r in trial.roles if not r.startswith("seed ")]
    value = "" if trial.value is None else f"mIoU {100 * trial.value:.1f}"
    return f"seed {trial.seed}{more}\n" + ", ".join(roles + ([value] if value else []))


def _columns(maps: list) -> list[tuple[int, int | None]]:
    """(map index, query index or None): spatial maps once per query, the others once."""
    from ..attention import maps as attention_maps  # torch: imported only when pictures are drawn

    out = []
    for i, m in enumerate(maps):
        out += [(i, q) for q in range(QUERIES)] if m.kind in attention_maps.SPATIAL else [(i, None)]
    return out


def maps_figure(cell: CellPictures):
    """Rows: drawn trial x map image; columns: the image with its queries, then each map per query."""
    from ..attention import maps as attention_maps  # torch: imported only when pictures are drawn

    trials = [t for t in cell.trials if t.maps]
    if not trials or not cell.map_images:
        return None
    cols = _columns(trials[0].maps)
    rows = [(t, k) for t in trials for k in range(len(cell.map_images))]
    fig = _fig(PANEL * (1 + len(cols)) + 1.2, PANEL * len(rows) + 0.5)
    grid = fig.subplots(len(rows), 1 + len(cols), squeeze=False)
    for r, (trial, k) in enumerate(rows):
        i = cell.map_images[k]
        img, label, queries = cell.images[i], cell.labels[i], cell.queries[i]
        ax = grid[r][0]
        ax.imshow(_image(img), interpolation="nearest")
        _marks(ax, label, queries)
        ax.set_ylabel(_row_label(trial, f", image {i}"), fontsize=FONT - 1)
        for c, (m, q) in enumerate(cols, start=1):
            ax, rec = grid[r][c], trial.maps[m]
            if q is not None and q >= len(queries):
                ax.set_visible(False)
                continue
            qy, qx = queries[q] if q is not None else (0.5, 0.5)
            picture, _ = attention_maps.at_query(rec, k, qy, qx)
            if q is None:
                ax.imshow(picture.numpy(), cmap="viridis", interpolation="nearest", aspect="auto")
            else:
                _heat(ax, picture, img, label)
                _marks(ax, label, queries, only=q)
            if r == 0:
                ax.set_title(rec.name + ("" if q is None else f" {MARKERS[q]}"), fontsize=FONT)
        for ax in grid[r]:
            _bare(ax)
    return fig


def _legend(fig, cell: CellPictures) -> None:
    from matplotlib.patches import Patch

    names = list(cell.class_names) or [f"class {i}" for i in range(cell.n_classes)]
    handles = [Patch(fc=PALETTE[i % len(PALETTE)], ec="#57606a", lw=0.4, label=n) for i, n in enumerate(names)]
    handles.append(Patch(fc=IGNORED, ec="#57606a", lw=0.4, label="not scored (cue)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=FONT - 1,
               frameon=False)


def _label_rows(grid, images, labels, preds: list[tuple[str, np.ndarray]], titles: list[str]) -> None:
    rows = [("input", None), ("ground truth", None)] + preds
    for c in range(len(images)):
        for r, (name, pred) in enumerate(rows):
            ax = grid[r][c]
            if r == 0:
                ax.imshow(_image(images[c]), interpolation="nearest")
                ax.set_title(titles[c], fontsize=FONT - 1)
            else:
                ax.imshow(label_rgb(labels[c] if pred is None else pred[c]), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(name, fontsize=FONT - 1)
            _bare(ax)


def predictions_figure(cell: CellPictures):
    """Input, ground truth and each drawn trial's prediction for the grid images."""
    trials = [t for t in cell.trials if t.pred is not None]
    if not trials:
        return None
    n = len(cell.images)
    fig = _fig(PANEL * n + 1.0, PANEL * (2 + len(trials)) + 0.9)
    grid = fig.subplots(2 + len(trials), n, squeeze=False)
    _label_rows(grid, cell.images, cell.labels, [(_row_label(t), t.pred) for t in trials],
                [f"validation image {i}" for i in range(n)])
    _legend(fig, cell)
    return fig


def failures_figure(cell: CellPictures):
    """Input, ground truth and prediction of the validation images seed 0 segments worst."""
    f = cell.failures
    if not f or not f["index"]:
        return None
    n = len(f["index"])
    fig = _fig(PANEL * n + 1.0, PANEL * 3 + 0.9)
    grid = fig.subplots(3, n, squeeze=False)
    titles = [f"image {i}: mIoU {100 * v:.1f}" for i, v in zip(f["index"], f["miou"])]
    _label_rows(grid, f["images"], f["labels"], [(f"seed {f['seed']}", f["pred"])], titles)
    _legend(fig, cell)
    return fig


def figures(cells: list[CellPictures]) -> list[tuple[str, str, object]]:
    """(stem, caption, figure) of every cell's pictures."""
    out = []
    for cell in cells:
        for stem, cap, fig in ((f"maps-{cell.key}", _maps_caption(cell), maps_figure(cell)),
                               (f"predictions-{cell.key}", f"Predictions of {cell.title} on the first {GRID_IMAGES} "
                                f"validation images", predictions_figure(cell)),
                               (f"failures-{cell.key}", _failures_caption(cell), failures_figure(cell))):
            if fig is not None:
                out.append((stem, cap, fig))
    return out


def _maps_caption(cell: CellPictures) -> str:
    left = max((t.left_out for t in cell.trials), default=0)
    return (f"Attention maps of {cell.title} at the query pixels (+, x; the cue a dashed box), each panel "
            f"scaled to its own range" + (f"; {left} further recorded map(s) not drawn" if left else ""))


def _failures_caption(cell: CellPictures) -> str:
    f = cell.failures or {}
    return (f"The {FAILURES} validation images seed {f.get('seed')} of {cell.title} segments worst (lowest "
            "per-image mIoU from its stored counts)")


def lines(study_name: str, cells: list[CellPictures], figs: list[tuple[str, str, object]]) -> list[str]:
    """The report's section: what is drawn, per mechanism and per cell, with the pictures' links."""
    from ..attention import maps as attention_maps  # torch: imported only when pictures are drawn

    stems = {stem: cap for stem, cap, _ in figs}
    out = ["", "## Attention maps, predictions and failures", "",
           "Drawn from the final weights each finished trial kept (`final.pt` in its checkpoint folder), for "
           "seed 0, the cell's first learned seed and its first floor seed (against the table's learned "
           "threshold), on the validation split's first images. Query pixels (+, x) are the centres of each "
           "image's largest objects; the dashed box is the cue the task hides the class in (unscored, white in "
           "label maps). What each block records (`ablate.attention.maps.DRAWN`):", ""]
    blocks = dict.fromkeys(c.block for c in cells)
    mechanisms = {b: ", ".join(sorted({c.mechanism for c in cells if c.block == b})) for b in blocks}
    out += [f"- {mechanisms[b]} (`{b}`): {attention_maps.DRAWN.get(b, 'no entry: a plugin block')}" for b in blocks]
    for c in cells:
        out += ["", f"### {c.title}", ""]
        drawn = ", ".join(who(t) for t in c.trials)
        out.append(f"Drawn: {drawn}." if drawn else "Drawn: nothing.")
        if c.missing:
            out += ["", "Not drawn:", ""] + [f"- {m}" for m in c.missing]
        if c.trials and not any(t.maps for t in c.trials):
            out += ["", "No attention map: " + attention_maps.DRAWN.get(c.block, "the block records none") + "."]
        links = [f"![{stems[s]}]({study_name}/{s}.svg)" for s in (f"maps-{c.key}", f"predictions-{c.key}",
                                                                 f"failures-{c.key}") if s in stems]
        out += [""] + links if links else []
    return out


def section(study, tab: dict, data: dict) -> tuple[list | None, list[str] | None, list]:
    """(the cells' pictures, the Markdown section, the figures as (stem, caption, SVG, PNG)) for a
    report; (None, None, []) when no finished trial kept final weights (the report is as before)."""
    from . import figures as report_figures
    from .pictures import collect

    cells = collect(study, data, tab)
    if cells is None:
        return None, None, []
    drawn = figures(cells)
    figs = [(stem, cap, report_figures.svg(fig, f"{study.name}-{stem}"), report_figures.png(fig))
            for stem, cap, fig in drawn]
    return cells, lines(study.name, cells, drawn), figs
