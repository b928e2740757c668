"""The report runs its seeds advice's simulations beside its figures (``table(..., later)``, then
one run): the verdicts must read as they do when the table simulates them itself, advice included."""
from __future__ import annotations

from pathlib import Path

from ablate.config.forks import run_together
from ablate.report.rows import table
from ablate.storage.summary import collect
from ablate.study.load import load_study

ROOT = Path(__file__).resolve().parents[2]


def test_advice_run_later_gives_the_verdicts_the_table_gives_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))  # the first table fills it: the second reads it
    study = load_study(ROOT / "studies" / "drop_transforms.yaml", check_files=False)
    data = collect(study, str(ROOT / "reports" / "storage" / "drop_transforms.journal"))
    now = table(study, data)
    later: list = []
    deferred = table(study, data, later)
    words = [r.get("verdict_text") for r in now["rows"]]
    assert later and [r.get("verdict_text") for r in deferred["rows"]] != words  # no advice before the run
    run_together(later)
    assert [r.get("verdict_text") for r in deferred["rows"]] == words
    assert any("would decide" in (w or "") or "power" in (w or "") for w in words), words
