"""Claims that do not scan the study: the trials a claim reads from storage do not grow with the
trials already finished (a journal and PostgreSQL), and a (cell, seed) freed behind a worker's
place in the plan is claimed again (the index's cursor moves back), so exactly-once holds; on
PostgreSQL a claim writes its trial in one transaction of a few statements."""
from __future__ import annotations

import argparse
import datetime as dt
import random
from collections import Counter

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from ablate.storage import create
from ablate.storage.index import _DatabaseReader
from ablate.storage import records as st
from ablate.run.claims import choose, trial_attrs
from ablate.run.worker import open_worker
from ablate.study.load import load_study

from support import tiny_study

ARGS = argparse.Namespace(worker=False, worker_index=0, threads=1, workers=1, max_trials=0)


class Reads:
    """Counts what storage hands out: trials (rows) from Optuna's journal replay or from the
    database, whole-study reads (``get_all_trials``), and journal lines parsed."""

    def __init__(self, monkeypatch):
        from optuna.storages import RDBStorage
        from optuna.storages.journal import JournalFileBackend
        from optuna.storages.journal._storage import JournalStorageReplayResult as Replay

        self.rows = self.scans = self.lines = 0
        self._count_rows(monkeypatch, Replay, "get_trial", one=True)
        self._count_rows(monkeypatch, Replay, "get_all_trials", scan=True)
        self._count_rows(monkeypatch, RDBStorage, "get_trial", one=True)
        self._count_rows(monkeypatch, RDBStorage, "get_all_trials", scan=True)
        self._count_rows(monkeypatch, RDBStorage, "_get_trials")
        self._count_rows(monkeypatch, _DatabaseReader, "_light", pairs=True)  # (states, system attributes)
        read_logs = JournalFileBackend.read_logs

        def counted_logs(backend, start):
            for log in read_logs(backend, start):
                self.lines += 1
                yield log
        monkeypatch.setattr(JournalFileBackend, "read_logs", counted_logs)

    def _count_rows(self, monkeypatch, cls, name: str, one: bool = False, scan: bool = False, pairs: bool = False):
        real = getattr(cls, name)

        def counted(*args, **kwargs):
            out = real(*args, **kwargs)
            self.rows += 1 if one else len(out[0]) if pairs else len(out)
            self.scans += scan
            return out
        monkeypatch.setattr(cls, name, counted)

    def total(self) -> tuple[int, int, int]:
        return self.rows, self.scans, self.lines


def _prefill(url: str, study, n: int) -> list:
    """The first ``n`` (cell, seed) of the plan finished (a realistic record: curve, wall time,
    config), written straight to storage; returns the plan."""
    plan = study.trials()
    store, ostudy = st.open_study(url, study.name)
    now = dt.datetime.now()
    for i, (cell, seed) in enumerate(plan[:n]):
        config = study.trial(cell, seed)
        attrs = {**trial_attrs(cell, seed, config), "curve": [0.1 + 0.01 * e for e in range(20)], "wall_s": 3.0 + i % 5}
        template = FrozenTrial(number=-1, state=TrialState.COMPLETE, value=0.3, datetime_start=now,
                               datetime_complete=now, params={}, distributions={}, user_attrs=attrs,
                               system_attrs={}, intermediate_values={}, trial_id=-1)
        store.create_new_trial(ostudy._study_id, template_trial=template)
    return plan


def _claims(url: str, study, run_dir, reads: Reads, rounds: int) -> tuple[list, list]:
    """Two workers claiming in turn, each finishing its trial before its next claim; the reads
    of each claim after the workers' first (which reads the study once), and the pairs claimed."""
    workers = [open_worker(study, url, run_dir, ARGS) for _ in range(2)]
    per_claim, pairs = [], []
    for r in range(rounds):
        for w in workers:
            before = reads.total()
            claim, w.index = st.claim_next(url, w.ostudy, lambda index, w=w: choose(w, index), w.index)
            after = reads.total()
            if r > 0:
                per_claim.append(tuple(a - b for a, b in zip(after, before)))
            pairs.append((claim.cell.key, claim.seed))
            st.record_result(w.store, claim.trial_id, {"value": 0.5, "curve": [0.5], "wall_s": 1.0})
    return per_claim, pairs


def _per_claim_reads(url_for, tmp_path, monkeypatch, sizes=(50, 500)) -> dict:
    study = load_study(tiny_study(tmp_path, seeds=list(range(300))))  # 2 cells x 300 seeds
    reads, out = Reads(monkeypatch), {}
    for n in sizes:
        url = url_for(n)
        plan = _prefill(url, study, n)
        first = reads.total()
        per_claim, pairs = _claims(url, study, tmp_path, reads, rounds=4)
        out[n] = per_claim
        # the claims take the plan's next pairs, in order, each once
        assert pairs == [(c.key, s) for c, s in plan[n:n + 8]]
        assert reads.total()[0] - first[0] >= n, "the workers' first claims read the whole study once"
    return out


def test_a_claim_on_a_journal_reads_the_same_few_trials_at_50_and_500_finished(tmp_path, monkeypatch):
    out = _per_claim_reads(lambda n: str(tmp_path / f"j{n}" / "optuna.journal"), tmp_path, monkeypatch)
    assert out[50] == out[500], out
    rows, scans, lines = (max(c[i] for c in out[500]) for i in range(3))
    assert scans == 0 and rows <= 4, out  # the other worker's new trial and its own finished one
    assert lines < 50, out  # journal lines since the last claim, not the journal


def test_a_claim_on_postgresql_reads_the_same_few_trials_at_20_and_200_finished(tmp_path, monkeypatch, pg_server):  # noqa: F811
    out = _per_claim_reads(lambda n: pg_server.new_database(), tmp_path, monkeypatch, sizes=(20, 200))
    assert out[20] == out[200], out
    rows, scans, _ = (max(c[i] for c in out[200]) for i in range(3))
    assert scans == 0 and rows <= 4, out


def test_a_pair_freed_behind_the_cursor_is_claimed_again_and_done_pairs_never(tmp_path):
    """Worker b's cursor is past a pair that worker a then loses (interrupted): b's next claim is
    that pair, not the next in the plan; a finished pair is never claimed, a running one neither."""
    study = load_study(tiny_study(tmp_path, seeds=list(range(6))))
    url = str(tmp_path / "optuna.journal")
    plan = _prefill(url, study, 3)
    a, b = (open_worker(study, url, tmp_path, ARGS) for _ in range(2))

    def claim(w):
        c, w.index = st.claim_next(url, w.ostudy, lambda index: choose(w, index), w.index)
        return c

    first = claim(a)
    second = claim(b)
    assert [(c.cell.key, c.seed) for c in (first, second)] == [(cell.key, s) for cell, s in plan[3:5]]
    st.record_failure(a.store, first.trial_id, "interrupted", "test")
    again = claim(b)
    assert (again.cell.key, again.seed) == (plan[3][0].key, plan[3][1])
    st.record_result(b.store, again.trial_id, {"value": 0.5, "curve": [0.5]})
    nxt = claim(a)
    assert (nxt.cell.key, nxt.seed) == (plan[5][0].key, plan[5][1])  # plan[4] is b's, still running
    done = {(t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in
            optuna.load_study(study_name="tiny", storage=st.open_storage(url)).get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE}
    assert len(done) == 4


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_index_keeps_the_status_that_statuses_computes(tmp_path, kind):
    """The index updated trial by trial (new versions of running trials included) gives each
    pair the status :func:`ablate.run.claims.statuses` computes from all trials at once, and
    holds each open trial's system attributes (owner, heartbeat) as storage has them: on a
    database, where a running trial is read light, its heartbeats included."""
    from ablate.run.claims import statuses

    if kind == "memory":
        store = optuna.storages.InMemoryStorage()
    else:
        store = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ostudy = optuna.create_study(storage=store)
    index = st.TrialIndex.open_on(store, ostudy._study_id, "r1")
    assert isinstance(index.reader, _DatabaseReader) == (kind == "sqlite")
    rng = random.Random(0)
    kinds = ["lost", "interrupted", "harness", "error"]
    for step in range(160):
        running = [t for t in ostudy.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        if running and rng.random() < 0.25:
            store.set_trial_system_attr(rng.choice(running)._trial_id, st.ATTR + "heartbeat", rng.random())
        elif running and rng.random() < 0.5:
            t = rng.choice(running)
            if rng.random() < 0.5:
                store.set_trial_state_values(t._trial_id, TrialState.COMPLETE, [rng.random()])
            else:
                store.set_trial_system_attr(t._trial_id, st.ATTR + "run", rng.choice(["r1", "r2"]))
                st.mark_failed(store, t._trial_id, rng.choice(kinds), "test")
        else:
            tid = st.create_running_trial(ostudy, {}, {}, {"cell_key": rng.choice("ab"), "seed": rng.randrange(3)})
            assert tid >= 0
        if step % 7 == 0:
            index.refresh()
            trials = ostudy.get_trials(deepcopy=False)
            assert index.status == statuses(trials, "r1"), step
            assert {t._trial_id: t.system_attrs for t in index.open_trials()} == \
                {t._trial_id: t.system_attrs for t in trials if not t.state.is_finished()}, step
    index.refresh()
    assert index.status == statuses(ostudy.get_trials(deepcopy=False), "r1")
    trials = ostudy.get_trials(deepcopy=False)
    assert +index.counts == Counter(st.trial_status(t, "r1") for t in trials)
    assert index.ok == {(t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in trials
                        if t.state == TrialState.COMPLETE}


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


PARAMS = {"mechanism": "glore", "train.lr": 0.01}
CHOICES = {"mechanism": ["glore", "danet"], "train.lr": [0.01, 0.1]}


def _attrs(n: int) -> dict:
    return {"cell_key": "abc", "seed": 3, "config": {"a": [1, 2.5, None], "b": "x"},
            **{f"extra{i}": i / 7 for i in range(n)}}


def _count_statements(rdb, do) -> int:
    seen = []

    def note(conn, cursor, statement, *rest):
        seen.append(statement)

    sqlalchemy.event.listen(rdb.engine, "before_cursor_execute", note)
    try:
        do()
    finally:
        sqlalchemy.event.remove(rdb.engine, "before_cursor_execute", note)
    return len(seen)


def test_a_claimed_trial_is_the_one_optunas_creation_makes_in_a_few_statements(pg_url, tmp_path):  # noqa: F811
    """PostgreSQL: a claim writes its trial in one transaction of a few statements (storage/create.py), what
    it does while holding the study lock; Optuna reads back the trial its own creation would make."""
    store = st.open_storage(pg_url)
    ostudy = st.load_or_create(store, "t")
    rdb = create.database_of(store)
    assert rdb is not None and create.database_of(st.open_storage(str(tmp_path / "j.journal"))) is None
    made, counts = [], []
    for n in (2, 40):
        counts.append(_count_statements(rdb, lambda: made.append(st.create_running_trial(
            ostudy, PARAMS, CHOICES, _attrs(n), {st.ATTR + "checkpoint_dir": "/c"}))))
    tid = made[-1]
    # Optuna's own path, for the same template, on a second study
    other = st.load_or_create(store, "u")
    template = optuna.trial.FrozenTrial(
        number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=store.get_trial(tid).datetime_start,
        datetime_complete=None, params=PARAMS,
        distributions={k: optuna.distributions.CategoricalDistribution(v) for k, v in CHOICES.items()},
        user_attrs=_attrs(40), system_attrs=store.get_trial(tid).system_attrs, intermediate_values={}, trial_id=-1)
    rdb.create_new_trial(other._study_id)  # number 0 there, so both trials are number 1
    theirs = rdb.get_trial(rdb.create_new_trial(other._study_id, template_trial=template))
    ours = optuna.load_study(study_name="t", storage=st.open_storage(pg_url)).get_trials(deepcopy=False)[-1]
    for field in ("number", "state", "value", "datetime_start", "datetime_complete", "params", "distributions",
                  "user_attrs", "system_attrs", "intermediate_values"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.user_attrs["config"] == {"a": [1, 2.5, None], "b": "x"} and ours.number == 1
    assert store._inner._trial_id_to_study_id_and_number[tid] == (ostudy._study_id, 1)  # Optuna's cache knows it
    # a handful of statements whatever the attributes (Optuna's own path: ~2 per attribute)
    assert counts[0] <= 12 and counts[1] == counts[0], counts


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_result_is_recorded_in_one_transaction_as_optunas_own_writes_would(kind, request, tmp_path):
    """A finished trial's attributes, value and state in one transaction (storage/create.py's
    finish_trial): Optuna reads back what its own calls (an attribute at a time, then the state)
    write; a PostgreSQL result is a few statements whatever its attributes; a finished trial is
    refused as Optuna refuses it; a journal is left to Optuna's path."""
    url = request.getfixturevalue("pg_url") if kind == "postgresql" else f"sqlite:///{tmp_path / 'r.db'}"
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, "f")
    rdb = create.database_of(store)
    result = {**_attrs(30), "value": 41.5, "curve": [0.1, 0.4], "wall_s": 3.0}
    pruned = {**result, "pruned_epoch": 2}

    def fresh():
        return st.create_running_trial(ostudy, PARAMS, CHOICES, _attrs(2), {})

    ours = [fresh(), fresh()]
    counts = [_count_statements(rdb, lambda: st.record_result(store, ours[0], result)),
              _count_statements(rdb, lambda: st.record_result(store, ours[1], pruned))]
    theirs = [fresh(), fresh()]
    for tid, res, state, values in ((theirs[0], result, TrialState.COMPLETE, [41.5]),
                                    (theirs[1], pruned, TrialState.PRUNED, [0.4])):
        for k, v in res.items():
            rdb.set_trial_user_attr(tid, k, v)
        rdb.set_trial_state_values(tid, state, values)
    read = {t._trial_id: t for t in optuna.load_study(study_name="f", storage=st.open_storage(url)).get_trials()}
    for a, b in zip(ours, theirs):
        for field in ("state", "values", "user_attrs", "params", "intermediate_values"):
            assert getattr(read[a], field) == getattr(read[b], field), field
        assert read[a].system_attrs.keys() == read[b].system_attrs.keys()  # the owner's (heartbeat times differ)
        assert read[a].datetime_complete is not None and read[a].datetime_complete >= read[a].datetime_start
    assert [read[t].state for t in ours] == [TrialState.COMPLETE, TrialState.PRUNED]
    if kind == "postgresql":
        assert max(counts) <= 10, counts  # Optuna's own path: ~2 per attribute and a commit each
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        create.finish_trial(store, ours[0], {"late": 1}, TrialState.COMPLETE, [1.0])
    journal = st.open_storage(str(tmp_path / "j.journal"))
    assert create.finish_trial(journal, 0, {}, TrialState.COMPLETE, [1.0]) is False
