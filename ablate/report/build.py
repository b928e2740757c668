"""The report's files from what it is given: :func:`write` renders a study's collected data
(:func:`ablate.storage.summary.collect`) into ``<study>.md`` and, beside it, figures, HTML, LaTeX,
CSV, JSON and optionally a W&B summary run. Nothing here reads storage or runs the doctor
(:mod:`ablate.report.command` does both, once, for ``ablate report``; the runner passes what it read).

One row per cell: mean +- std of the metric over finished seeds, its 95% t interval, the
difference to the baseline cell with its interval at the corrected level, the attention block's
parameter count and forward FLOPs per image (recorded by the trial), its forward+backward latency
and peak memory (measured when the report is written, see :func:`block_costs`), seeds finished,
and a verdict from :mod:`ablate.stats`. W&B is never read.
"""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from ..config.forks import Pending
from .markdown import fingerprint_lines, render  # noqa: F401 - the Markdown, and names tests use
from .rows import COST_REPEATS, COST_WARMUP, block_shape, search_cells, table
from .rows import describe_setup, judge  # noqa: F401 - names tests use



def _pts(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def block_costs(cells: list, world_size: int = 1, device: str | None = None, head=None) -> dict:
    """Forward+backward latency and peak memory of each cell's attention block at its training
    input shape (:func:`ablate.costs.cell_costs`: once per distinct block, CUDA if there is one,
    the input's gradient subtracted from the peak). Returns cell key -> (Cost, extra peak bytes),
    ``"_device"`` and ``"_threads"``."""
    from ..costs.blocks import cell_costs

    return cell_costs([(c.key, c.mechanism, c.args, block_shape(c, world_size, head)) for c in cells],
                      device, repeats=COST_REPEATS, warmup=COST_WARMUP)


def write(study, data: dict, storage_label: str, reports_dir: str = "reports", run_info: dict | None = None,
          wandb: bool | None = None, run_dir: str | Path | None = None, reuse_costs: bool = False,
          health: list[str] | Pending | None = None) -> Path:
    """Write ``<study>.md`` and beside it the figures, HTML, TeX, CSV and JSON
    (:mod:`ablate.report.formats`); with ``wandb`` (default: at the end of a run whose study and
    command line did not turn W&B off) an offline W&B summary run under ``run_dir``
    (:mod:`ablate.report.wandb`); ``reuse_costs``: the latency and memory of the previous
    ``<study>.json`` there (:mod:`ablate.report.costs`) instead of measuring; ``health``: the
    health section's lines, or the doctor's check still to run (a
    :class:`~ablate.config.forks.Pending`: it runs beside the figures; the Markdown renderer never
    runs it). Returns the Markdown's path.

    Every file is written atomically (:mod:`ablate.config.atomic`): a write that fails (disk full, quota,
    ``ulimit -f``, a folder made read-only) leaves that file as it was, the hand-written notes
    below the Markdown's last line included, and raises :class:`ablate.config.errors.RetryableError`."""
    from ..config.atomic import make_folder, write_text
    from .costs import reuse
    from .drawings import section
    from .formats import write_formats

    cells = search_cells(study, data) if study.search else study.cells()
    done = [c for c in cells if c.key in data["records"]]
    if done and data["running_here"]:
        data["costs_skipped"] = data["running_here"]  # timings under a training load are not the block's
    elif done:
        data["cost_shapes"] = {c.key: block_shape(c, study.trainer.world_size, study.head) for c in done}
        prev = reuse(Path(reports_dir) / f"{study.name}.json", data["cost_shapes"]) if reuse_costs else None
        data["costs"] = prev or {**block_costs(done, study.trainer.world_size, head=study.head),
                                 "_measured": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    if run_info:  # the runner writes its run record to storage (ablate.run.run_record); the report only reads
        data["run"] = run_info
    out = Path(reports_dir) / f"{study.name}.md"
    make_folder(out.parent)
    later: list = []  # the seeds advice's simulations: run beside the figures, on the same cores
    tab = table(study, data, later)
    want_wandb = wandb if wandb is not None else _wandb_wanted(study, run_info)
    doctor = [health] if isinstance(health, Pending) else []  # its check: the longest piece, handed out first
    figs = _figures(study, tab, data, want_wandb, later, first=doctor)
    health = doctor[0].result if doctor else health
    pics, pic_lines, pic_figs = section(study, tab, data)  # from the trials' final weights, if they kept them
    md = render(study, data, storage_label, tab, [(f"{study.name}/{stem}.svg", cap) for stem, cap, _, _ in figs],
                health=health, pictures=pic_lines)
    md = _with_cost_notes(md, data, {c.key: c.title() for c in cells}) + _notes(out)
    write_text(out, md)  # whole or not at all: a failed write keeps the previous report and its notes
    write_formats(study, data, tab, md, [(stem, cap, text) for stem, cap, text, _ in figs + pic_figs], out.parent)
    if study.evals:  # evaluation-time factors: the train x eval table's CSV and JSON (ablate/report/evaluations.py)
        from .evaluations import write_files

        write_files(study, data, out.parent)
    if want_wandb:
        from .wandb import log_study

        log_study(study, tab, {**data, "pictures": pics} if pics else data, figs + pic_figs, run_dir)
    return out


def _with_cost_notes(md: str, data: dict, titles: dict) -> str:
    """The Markdown with a paragraph, above its last generated line, on each cell whose block
    was measured with a batch of one (the study's batch would not fit) or not measured at all
    (:func:`ablate.costs.cell_costs`: "not measured: <reason>")."""
    costs, shapes = data.get("costs") or {}, data.get("cost_shapes") or {}
    lines = [f"- {titles.get(k, k)}: not measured: {why}." for k, why in (costs.get("_not_measured") or {}).items()]
    for k, v in costs.items():
        shape = getattr(v[0], "shape", None) if isinstance(v, tuple) else None
        if shape and k in shapes and tuple(shape) != tuple(shapes[k]):
            lines.append(f"- {titles.get(k, k)}: measured with a batch of {shape[0]} at the study's resolution "
                         f"{tuple(shape)}; the study's batch {tuple(shapes[k])} would not fit in memory here.")
    if not lines:
        return md
    head, sep, tail = md.rpartition("\nReport written ")
    note = "\n".join(["", "Attention-block costs, where the training input could not be measured:", ""] + lines) + "\n"
    return head + note + sep + tail if sep else md + note


def _notes(path: Path) -> str:
    """Notes written by hand below the last generated line ("Report written ...") of the report
    at ``path``: rewriting the report keeps them (and the HTML shows them)."""
    if not path.is_file():
        return ""
    lines = path.read_text().splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.startswith("Report written ")), default=None)
    tail = "\n".join(lines[last + 1:]).strip("\n") if last is not None else ""
    return f"\n{tail}\n" if tail.strip() else ""


def _figures(study, tab: dict, data: dict, png: bool = True, later: list = (),
             first: list = ()) -> list[tuple[str, str, str, bytes | None]]:
    """(stem, caption, SVG text, PNG bytes) of each figure the study has (:mod:`ablate.report.figures`);
    the PNG (for W&B alone) only with ``png``, else None. ``first`` and ``later``: other work
    (:class:`ablate.config.forks.Pending`) run with the figures' drawing, side by side, handed out
    before and after the figures."""
    from ..config.forks import run_together
    from . import figures

    if not png:  # the SVGs alone: drawn once for the same inputs, then read back (figures.svgs)
        drawn = run_together([*first, figures.svgs_pending(study, tab, data), *later])[len(first)]
        return [(stem, cap, text, None) for stem, cap, text in drawn]
    run_together([*first, *later])
    out = []
    for stem, cap, fig in figures.figures(study, tab, data):
        out.append((stem, cap, figures.svg(fig, f"{study.name}-{stem}"), figures.png(fig) if png else None))
    return out


def _wandb_wanted(study, run_info: dict | None) -> bool:
    """At the end of a run, a W&B summary run unless the study or the command turned W&B off
    (``ablate.run`` does not pass its --no-wandb here, so the command line recorded in run_info
    is read); ``python -m ablate.report`` makes one only with --wandb."""
    if not run_info or not study.tracking.get("wandb", True):
        return False
    return "--no-wandb" not in str(run_info.get("command", "")).split()
