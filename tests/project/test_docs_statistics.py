"""docs/statistics.md cannot drift from the code: its smallest-p table and its seeds-to-decide
table are parsed and recomputed with ablate.stats.exact.min_p and
ablate.stats.feasibility.seeds_to_decide (and the latter also checked against the former)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ablate.stats.exact import min_p
from ablate.stats.feasibility import seeds_to_decide

DOC = Path(__file__).resolve().parents[2] / "docs" / "statistics.md"
TESTS = {"permutation": "perm", "sign-flip": "signflip", "Boschloo": "boschloo"}


def _table(header_start: str) -> tuple[list[str], list[list[str]]]:
    """(column names, rows of cells) of the Markdown table whose header line starts with
    ``header_start``; exactly one such table must exist."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
    assert len(starts) == 1, f"expected one table starting {header_start!r} in {DOC}, found {len(starts)}"
    i = starts[0]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head, rows = cells(lines[i]), []
    for line in lines[i + 2:]:  # skip the |---| line
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    assert rows and all(len(r) == len(head) for r in rows), f"malformed table {header_start!r}"
    return head, rows


def test_smallest_p_table_matches_min_p():
    head, rows = _table("| seeds a cell |")
    assert head[1:] == list(TESTS)
    assert [int(r[0]) for r in rows] == list(range(2, 11))
    for row in rows:
        n = int(row[0])
        for name, cell in zip(head[1:], row[1:]):
            want = min_p(TESTS[name], n, n)
            # printed to 3 significant digits
            assert float(cell) == pytest.approx(want, rel=6e-3), (name, n, cell, want)


def test_seeds_to_decide_table_matches_feasibility():
    head, rows = _table("| m | level")
    assert head[2:] == list(TESTS)
    assert [int(r[0]) for r in rows] == [1, 3, 28, 112]
    for row in rows:
        m = int(row[0])
        level = 0.05 / m  # Holm's (and Bonferroni's) first step
        assert float(row[1]) == pytest.approx(level, rel=6e-3), (m, row[1])
        for name, cell in zip(head[2:], row[2:]):
            test, n = TESTS[name], int(cell)
            assert seeds_to_decide(test, level) == n, (name, m, n)
            # independently of seeds_to_decide: n seeds can beat the level, n - 1 cannot
            assert min_p(test, n, n) < level <= min_p(test, n - 1, n - 1), (name, m, n)
