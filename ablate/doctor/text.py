"""The doctor's findings as text: a few Markdown lines for the report, one line per cell for the
command, and the runner's pre-flight summary (each distinct warning and error once, with its
cells). Re-exported by :mod:`ablate.doctor`.
"""
from __future__ import annotations

import sys

from .findings import CODES, SEVERITIES, Finding


def counts_text(findings: list[Finding]) -> str:
    """``2 warnings, 1 info``: the findings counted by severity (``ok`` for none)."""
    said = [f"{n} {sev}{'s' if n != 1 else ''}" for sev in SEVERITIES
            if (n := sum(f.severity == sev for f in findings))]
    return ", ".join(said) or "ok"


def _grouped(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """Findings with the same severity, code and message once each, with the titles of their cells."""
    groups: dict = {}
    for f in findings:
        groups.setdefault((f.severity, f.code, f.message), (f, []))[1].append(f.title or f.cell)
    return sorted(groups.values(), key=lambda g: SEVERITIES.index(g[0].severity))


def _cells_text(titles: list[str], limit: int = 4) -> str:
    titles = list(dict.fromkeys(titles))
    shown = "; ".join(titles[:limit])
    return shown + (f"; and {len(titles) - limit} more" if len(titles) > limit else "")


def summary_lines(findings: list[Finding]) -> list[str]:
    """A few Markdown lines for the report: the counts, one line per kind of warning or error
    with the blocks (or, when few, the cells) it concerns, and one line counting the by-design
    notes. The messages, with the factor to change, are the doctor's own output."""
    if not findings:
        return ["Health pre-flight (`python -m ablate.doctor`): no findings."]
    lines = [f"Health pre-flight (`python -m ablate.doctor STUDY`, for the details and the factor to change): "
             f"{counts_text(findings)}."]
    kinds: dict = {}
    for f in findings:
        kinds.setdefault((SEVERITIES.index(f.severity), f.code), []).append(f)
    notes = []
    for (level, code), found in sorted(kinds.items()):
        cells = list(dict.fromkeys(f.title or f.cell for f in found))
        if SEVERITIES[level] == "info":
            notes.append(f"{code} ({len(cells)} cells)")
            continue
        if len(cells) <= 4 and sum(map(len, cells)) <= 160:
            where = "; ".join(cells)
        else:
            blocks = {}
            for f in found:
                blocks.setdefault(f.block or "?", set()).add(f.title or f.cell)
            where = ", ".join(f"`{b}` ({len(c)})" for b, c in blocks.items()) + f": {len(cells)} cells"
        lines.append(f"- **{SEVERITIES[level]}** {CODES.get(code, code)}: {where}.")
    if notes:
        lines.append(f"- by design (info): {', '.join(notes)}.")
    return lines


def print_findings(cells: list, findings: list[Finding], out=sys.stdout) -> None:
    """One line per cell (its title, mechanism and counts), its findings indented under it."""
    by_cell: dict = {}
    for f in findings:
        by_cell.setdefault(f.cell, []).append(f)
    for cell in cells:
        mine = by_cell.get(cell.key, [])
        print(f"{cell.title()} [{cell.mechanism}]: {counts_text(mine)}", file=out)
        for f in sorted(mine, key=lambda f: SEVERITIES.index(f.severity)):
            print(f"    {f.line()}", file=out)


def print_preflight(findings: list[Finding], cells: list, path, out=sys.stdout) -> None:
    """The runner's pre-flight summary: a count, then each distinct warning or error once with the
    cells it concerns."""
    print(f"doctor: {len(cells)} cells checked: {counts_text(findings)} "
          f"(details: python -m ablate.doctor {path})", file=out)
    for f, titles in _grouped(findings):
        if f.severity != "info":
            print(f"  {f.severity} ({_cells_text(titles)}): {f.message}", file=out)
