"""The runner's study-level progress: trials done / total, failures and an ETA from the finished
trials' times; a plain line after each trial where output is not a terminal, one bar updated by
carriage returns on a terminal; mIoU in points, as in the reports."""
from __future__ import annotations

import io
import re
import statistics

import optuna
import pytest

from ablate.run import progress as P
from ablate.run import command as R
from ablate.run.worker import Worker
from ablate.storage import records as st
from ablate.report.build import _pts
from ablate.study.load import load_study

from support import run_cli, tiny_study
from support.fakes import seq_study_file

LINE = re.compile(r"^\[(\d+)/(\d+) done(?: \(up to (\d+)\))?, (\d+) failed, ETA (\S+)\]$")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- the arithmetic and the formats ------------------------------------------------------------


def test_eta_is_the_median_time_times_the_trials_left_over_the_workers():
    assert P.eta_seconds([], 10, 1) is None  # nothing finished: no time to go by
    assert P.eta_seconds([10.0, 30.0, 20.0], 6, 2) == pytest.approx(20.0 * 6 / 2)
    assert P.eta_seconds([10.0, 40.0], 4, 1) == pytest.approx(25.0 * 4)
    # one slow outlier does not drag the estimate as a mean would
    times = [10.0, 11.0, 12.0, 500.0]
    assert P.eta_seconds(times, 3, 1) == pytest.approx(statistics.median(times) * 3) != statistics.mean(times) * 3
    assert P.eta_seconds([10.0], 0, 4) == 0.0
    assert P.eta_seconds([10.0], 5, 0) == pytest.approx(50.0)  # no worker counted: at least this one


@pytest.mark.parametrize("seconds, text", [
    (None, "—"), (0, "0s"), (45.2, "45s"), (59.6, "1m00s"), (200, "3m20s"), (3599.6, "1h00m"),
    (3900, "1h05m"), (47 * 3600 + 59 * 60, "47h59m"), (2 * 86400 + 3 * 3600, "2d03h")])
def test_durations_are_short(seconds, text):
    assert P.duration(seconds) == text


def test_plain_line_carries_done_total_failed_and_eta():
    assert P.plain_line(P.StudyCounts(12, 232, 0, 3900.0)) == "[12/232 done, 0 failed, ETA 1h05m]"
    assert P.plain_line(P.StudyCounts(0, 8, 0, None)) == "[0/8 done, 0 failed, ETA —]"
    # sequential seeds: the total known now, and the most the looks could grow it to
    assert P.plain_line(P.StudyCounts(12, 14, 1, 30.0, most=32)) == "[12/14 done (up to 32), 1 failed, ETA 30s]"
    assert P.plain_line(P.StudyCounts(32, 32, 0, 0.0, most=32)) == "[32/32 done, 0 failed, ETA 0s]"
    for c in (P.StudyCounts(3, 9, 2, 61.0), P.StudyCounts(5, 7, 0, None, most=20)):
        m = LINE.match(P.plain_line(c))
        assert m and (int(m[1]), int(m[2]), int(m[4])) == (c.done, c.total, c.failed)


@pytest.mark.parametrize("x", [0.0, 0.00374, 0.41634, 0.41649, 0.41651, 0.999, 1.0, float("nan"), None])
def test_points_print_as_the_reports_do(x):
    assert P.points(x) == _pts(x)
    if x is not None and x == x:
        assert float(P.points(x)) == pytest.approx(100 * x, abs=0.05)


def test_the_bar_fills_with_the_trials_done_and_fits_the_terminal():
    half = P.bar_line(P.StudyCounts(5, 10, 0, 60.0), columns=80, prefix="[w1] ")
    assert half.startswith("[w1] [") and half.endswith("5/10 done, 0 failed, ETA 1m00s") and len(half) < 80
    bar = half[len("[w1] ["):half.index("]", len("[w1] ["))]
    assert set(bar) == {"#", "-"} and bar.count("#") == len(bar) // 2
    full = P.bar_line(P.StudyCounts(10, 10, 0, 0.0), columns=80)
    assert "-" not in full.split("]")[0]
    for columns in (40, 50, 120):
        assert len(P.bar_line(P.StudyCounts(123, 456, 7, 3900.0), columns=columns)) < max(columns, 36)


# --- the printer -----------------------------------------------------------------------------


def test_on_a_terminal_one_bar_is_updated_in_place_under_the_lines():
    out = FakeTTY()
    p = P.Progress("", 4, out=out)
    p.study(P.StudyCounts(0, 4, 0, None))
    p.say("trial 1/4 a seed=0: started")
    p.study(P.StudyCounts(1, 4, 0, 10.0))
    p.study(P.StudyCounts(2, 4, 1, 4.0))
    p.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 2  # the one message, and the bar's end
    # the bar's updates are carriage returns, each at least as long as what it overwrites
    segments = text.split("\n")[1].split("\r")
    assert len(segments) == 3
    assert segments[0].rstrip().endswith("0/4 done, 0 failed, ETA —")
    assert segments[1].rstrip().endswith("1/4 done, 0 failed, ETA 10s")
    assert segments[2].rstrip().endswith("2/4 done, 1 failed, ETA 4s")
    assert all(len(b) >= len(a.rstrip()) for a, b in zip(segments, segments[1:]))
    # the message overwrote the first bar (padded to its length) and the bar was drawn again under it
    first = text.split("\n")[0]
    assert first.startswith("\r") and first.split("\r")[-1].startswith("trial 1/4 a seed=0: started")
    assert len(first.split("\r")[-1]) >= len(first.split("\r")[1])


def test_epoch_lines_print_points_at_about_each_quarter():
    out = io.StringIO()
    on_epoch = P.Progress("", 4, out=out).epoch_printer(2, "GloRe", 1, 8, 0.0)
    for epoch, miou in enumerate([0.1, 0.21634, 0.3, 0.41649, 0.5, 0.6, 0.7, 0.8]):
        on_epoch(epoch, miou)
    on_epoch(2, 0.05, True)
    lines = out.getvalue().splitlines()
    assert [re.search(r"epoch (\d)/8  val mIoU (\S+) ", ln).groups() for ln in lines] == [
        ("2", "21.6"), ("4", "41.6"), ("6", "60.0"), ("3", "5.0")]  # not the last epoch: the end line says it
    assert lines[-1].endswith("-> pruned") and all(ln.startswith("trial 2/4 GloRe seed=1") for ln in lines)


def test_off_a_terminal_the_study_line_is_a_plain_line():
    out = io.StringIO()
    p = P.Progress("[w0] ", 4, out=out)
    p.study(P.StudyCounts(1, 4, 0, 12.0))
    p.say("trial 2/4 a seed=1: started")
    p.close()
    assert out.getvalue() == "[w0] [1/4 done, 0 failed, ETA 12s]\n[w0] trial 2/4 a seed=1: started\n"


# --- the runner ------------------------------------------------------------------------------


def _lines(text: str) -> list[tuple[int, int, int | None, int, str]]:
    return [(int(m[1]), int(m[2]), int(m[3]) if m[3] else None, int(m[4]), m[5])
            for m in map(LINE.match, text.splitlines()) if m]


def test_counts_come_from_every_trial_in_storage(tmp_path):
    """Finished = complete, pruned, a final failure, or a harness failure of this run (not
    retried by it); a lost attempt beside a finished one and a trial of a cell no longer in the
    study are history. The ETA takes the study's finished trials' median time and as many workers as
    trials running, plus this one."""
    import warnings

    from optuna.trial import TrialState, create_trial

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    study = load_study(tiny_study(tmp_path, seeds=[0, 1, 2]))
    on, off = (c.key for c in study.cells())
    ostudy = optuna.create_study(storage=optuna.storages.InMemoryStorage())

    def add(state, key, seed, wall=None, **system):
        attrs = {"cell_key": key, "seed": seed, **({"wall_s": wall} if wall else {})}
        ostudy.add_trial(create_trial(state=state, value=0.5 if state in (TrialState.COMPLETE, TrialState.PRUNED)
                                      else None, user_attrs=attrs, system_attrs=system))

    add(TrialState.FAIL, on, 0, **{st.ATTR + "fail_kind": "lost"})
    add(TrialState.COMPLETE, on, 0, 10.0)
    add(TrialState.COMPLETE, on, 1, 30.0)
    add(TrialState.PRUNED, on, 2, 20.0)
    add(TrialState.FAIL, off, 0, **{st.ATTR + "fail_kind": "error"})
    add(TrialState.FAIL, off, 1, **{st.ATTR + "fail_kind": "harness", st.ATTR + "run": "r1"})
    add(TrialState.RUNNING, off, 2)
    add(TrialState.COMPLETE, "an-old-cell", 0, 1000.0)
    trials = ostudy.get_trials(deepcopy=False)

    def worker(run: str):
        return Worker(study, "", tmp_path, None, None, ostudy, P.Progress("", 6), run, {}, {}, study.cells())

    here = R.study_counts(worker("r1"), trials)
    assert (here.done, here.total, here.failed, here.most) == (5, 6, 2, None)
    median = statistics.median([10.0, 30.0, 20.0])  # the study's finished trials, not the old cell's
    assert here.eta == pytest.approx(median * 1 / 2)
    later = R.study_counts(worker("r2"), trials)  # another run retries the harness failure
    assert (later.done, later.failed) == (4, 1) and later.eta == pytest.approx(median * 2 / 2)


def test_a_real_study_prints_done_counts_failures_and_points(tmp_path):
    """Not a terminal (captured): a plain line after each trial, reaching total/total; the first
    trial fails (an absurd learning rate), so there is no time for an ETA until the second ends."""
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 1}, factors={"gcn": [True], "train.lr": [1.0e30, 0.01]},
                      baseline={"train.lr": 0.01})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb", "--no-report", "--no-doctor"],
                  cwd=tmp_path, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr  # one trial failed (documented exit status)
    lines = _lines(res.stdout)
    assert [(d, t, f) for d, t, _, f, _ in lines] == [(1, 2, 1), (2, 2, 1)], res.stdout
    assert lines[0][4] == "—" and re.fullmatch(r"\d+s", lines[1][4])
    assert "\r" not in res.stdout
    # the finished trial's mIoU in points, one decimal, as the report prints it
    trials = optuna.load_study(study_name="tiny", storage=st.open_storage(str(tmp_path / "runs/tiny/optuna.journal")))\
        .get_trials(deepcopy=False)
    (good,) = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert re.search(rf"seed=0: val mIoU {re.escape(_pts(good.value))}  \(\d+s\)$", res.stdout, re.M), res.stdout


def test_two_workers_print_the_study_counts_from_storage(tmp_path):
    """Each worker process prints its own lines, but the counts are the study's: some line says
    6/6 although neither worker ran all six trials."""
    path = tiny_study(tmp_path, seeds=[0, 1, 2], train={"epochs": 1})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--workers", "2", "--no-wandb", "--no-report",
                   "--no-doctor"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    mine = {w: [ln[len(w) + 1:] for ln in res.stdout.splitlines() if ln.startswith(w + " ")] for w in ("[w0]", "[w1]")}
    ran = {w: sum(ln.endswith(": started") for ln in lines) for w, lines in mine.items()}
    assert sorted(ran.values()) != [0, 6] and sum(ran.values()) == 6, res.stdout
    counts = {w: _lines("\n".join(lines)) for w, lines in mine.items()}
    assert {w: len(c) for w, c in counts.items()} == ran  # a study line after each trial a worker ran
    assert all(t == 6 and f == 0 for c in counts.values() for _, t, _, f, _ in c)
    assert max(d for c in counts.values() for d, *_ in c) == 6
    for c in counts.values():  # a worker's view only grows
        assert [d for d, *_ in c] == sorted(d for d, *_ in c)


def test_sequential_totals_grow_with_the_looks(fake, capsys):  # noqa: F811 (the fixture)
    path = seq_study_file(fake)
    study = load_study(path)
    assert R.main([str(path), "--run-dir", "runs/seq", "--no-wandb", "--no-report", "--no-doctor"]) == 0
    lines = _lines(capsys.readouterr().out)
    start, most = len(study.trials()), len(study.cells()) * study.sequential["max"]
    trials = optuna.load_study(study_name="seq", storage=st.open_storage(str(fake / "runs/seq/optuna.journal")))\
        .get_trials(deepcopy=False)
    assert len(lines) == len(trials)  # one line per finished trial
    assert [d for d, *_ in lines] == list(range(1, len(trials) + 1))
    totals = [t for _, t, *_ in lines]
    assert totals[0] == start and totals[-1] == len(trials) > start and totals == sorted(totals)
    assert all(m == most for _, t, m, *_ in lines if t < most)
    assert lines[-1][3] == 0 and lines[-1][4] == "0s"


def test_on_a_terminal_the_runner_draws_one_bar(fake, monkeypatch):  # noqa: F811 (the fixture)
    out = FakeTTY()
    monkeypatch.setattr("sys.stdout", out)
    path = seq_study_file(fake, seeds={"start": 2, "max": 2})  # a plain grid of 8 trials in effect
    assert R.main([str(path), "--run-dir", "runs/seq", "--no-wandb", "--no-report", "--no-doctor"]) == 0
    text = out.getvalue()
    assert not _lines(text)  # no plain study lines on a terminal
    bars = [seg.rstrip() for line in text.split("\n") for seg in line.split("\r") if " done, " in seg]
    assert bars[0].endswith("0/8 done, 0 failed, ETA —") and bars[-1].endswith("8/8 done, 0 failed, ETA 0s")
    assert len(bars) >= 9  # drawn at the start and after each trial (and again under each message)
    assert text.endswith("\n")
    # each trial line overwrote the bar (a carriage return after it) and has a line of its own
    started = [line for line in text.split("\n") if ": started" in line]
    assert len(started) == 8
    for line in started:
        bar, msg = line.split("\r")[-2:]
        assert " done, " in bar and msg.startswith("trial ") and len(msg) >= len(bar)
