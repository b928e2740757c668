"""A worker's index of its study's trials, kept current by reading only what changed.

A claim needs the status of each (cell, seed) and the trials that may still change: a trial that
is COMPLETE, PRUNED or FAILed never changes again (Optuna refuses to update a finished trial),
so only trials created since the last read and trials that were RUNNING then can differ. The
index reads exactly those (:meth:`TrialIndex.refresh`):

* a journal file: the journal is replayed from the last line read (Optuna keeps the byte
  offset), then the study's trial ids past the last one seen and the open ones are looked up;
* a database (PostgreSQL, SQLite, MySQL): one light query for the state and system attributes
  (owner, heartbeat) of the open trials and of those whose id is above the largest seen (trials of
  a study are created one at a time under the study lock, each committed before the next, so ids
  grow with creation and a read never misses an earlier one); then Optuna's read of the new
  trials and of those whose state changed, whole. A running trial's other parts (its intermediate
  values, a resumed trial's attributes) are read when it finishes: claims do not look at them;
* any other storage: every trial (``get_all_trials``), the fallback.

A worker's first refresh reads the whole study once; after that a claim reads the trials the
other workers created or finished since its last claim plus the running ones, O(workers),
whatever the number of finished trials. Most of that read happens before the claim takes the
study lock (:func:`ablate.storage.records.claim_next`); under the lock, a second refresh reads
what changed while it waited. The per-pair status follows :func:`ablate.run.claims.statuses`: done, then running,
then failed here, then free (:func:`merge_status`), recomputed only for pairs whose trials changed.
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Iterable

from optuna.trial import FrozenTrial, TrialState

from .states import TAKEN, trial_status

_RANK = {"done": 0, "running": 1, "failed here": 2}


def merge_status(current: str | None, status: str) -> str:
    """The status a (cell, seed) keeps when one more of its trials, of ``status``, is seen after
    those that gave ``current``: the better ranked of the two (done < running < failed here),
    else the earlier one."""
    if _RANK.get(status, 3) < _RANK.get(current, 3):
        return status
    return status if current is None else current


def pair_of(t: FrozenTrial) -> tuple:
    return t.user_attrs.get("cell_key"), t.user_attrs.get("seed")


class _JournalReader:
    """New and open trials of a journal storage: replay from the last line read, then look up."""

    def __init__(self, journal, study_id: int):
        self.journal, self.study_id, self.seen = journal, study_id, 0

    def read(self, open_trials: dict[int, FrozenTrial]) -> list[FrozenTrial]:
        j = self.journal
        with j._thread_lock:
            j._sync_with_backend()  # reads the lines appended since the last sync, nothing before
            replay = j._replay_result
            ids = replay._study_id_to_trial_ids[self.study_id]
            new, self.seen = ids[self.seen:], len(ids)
            return [replay.get_trial(i) for i in (*open_trials, *new)]


class _DatabaseReader:
    """New and changed trials of an RDB storage.

    The first read is Optuna's own incremental read of the whole study (without its cache, which
    would sort every trial of the study at each call). After it, one light query returns the state
    and system attributes of the open trials and of any trial created since (ids above the largest
    seen): an open trial still in the state it had is given back with its system attributes
    (owner, heartbeat) brought up to date; only new trials and those whose state changed are read
    whole (attributes, curve, values), by Optuna's read. So a refresh while W trials run reads W
    short rows and the few whole trials that changed, not W whole trials."""

    def __init__(self, rdb, study_id: int):
        self.rdb, self.study_id, self.max_id = rdb, study_id, -1

    def read(self, open_trials: dict[int, FrozenTrial]) -> list[FrozenTrial]:
        if self.max_id < 0:
            return self._whole(set(), -1)
        states, system = self._light(set(open_trials))
        whole = {i for i, state in states.items() if i not in open_trials or open_trials[i].state != state}
        out = []
        for i, t in open_trials.items():
            if i in states and i not in whole and system.get(i, {}) != t.system_attrs:
                t = copy.copy(t)
                t.system_attrs = system.get(i, {})
                out.append(t)
        return out + (self._whole(whole, self.max_id) if whole else [])

    def _whole(self, ids: set[int], above: int) -> list[FrozenTrial]:
        """Trials ``ids`` and every trial of the study above id ``above``, whole."""
        rows = self.rdb._get_trials(self.study_id, None, ids, above)
        self.max_id = max([self.max_id, *(t._trial_id for t in rows)])
        return rows

    def _light(self, open_ids: set[int]) -> tuple[dict[int, TrialState], dict[int, dict]]:
        """State and system attributes of trials ``open_ids`` and of those above the largest id
        seen, in one query."""
        from optuna.storages._rdb import models as m
        from sqlalchemy import or_, select

        t, a = m.TrialModel, m.TrialSystemAttributeModel
        query = (select(t.trial_id, t.state, a.key, a.value_json).outerjoin(a, a.trial_id == t.trial_id)
                 .where(t.study_id == self.study_id, or_(t.trial_id.in_(open_ids), t.trial_id > self.max_id)))
        session = self.rdb.scoped_session()
        try:
            rows = session.execute(query).all()
        finally:
            session.close()
        states: dict[int, TrialState] = {}
        system: dict[int, dict] = {}
        for tid, state, key, value in rows:
            states[tid] = state
            if key is not None:
                system.setdefault(tid, {})[key] = json.loads(value)
        return states, system


class _FullReader:
    """Any other storage: every trial of the study at each read."""

    def __init__(self, storage, study_id: int):
        self.storage, self.study_id = storage, study_id

    def read(self, open_trials: dict[int, FrozenTrial]) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False)


def reader_for(storage, study_id: int):
    """The cheapest reader of new and open trials for ``storage`` (an ablate storage, maybe
    wrapped in :class:`ablate.storage.retry.RetryingStorage` and Optuna's cache)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    inner = storage.__dict__.get("_inner", storage)
    if isinstance(inner, JournalStorage):
        return _JournalReader(inner, study_id)
    if isinstance(inner, _CachedStorage) and isinstance(inner._backend, RDBStorage):
        return _DatabaseReader(inner._backend, study_id)
    if isinstance(inner, RDBStorage):
        return _DatabaseReader(inner, study_id)
    return _FullReader(storage, study_id)


class TrialIndex:
    """Every trial of one study as invocation ``run`` sees it, by (cell key, seed).

    ``status[pair]``: the pair's status (:func:`merge_status` over its trials in creation order);
    ``counts``: trials per status (:func:`ablate.storage.states.trial_status`); ``ok``: pairs with
    a COMPLETE or PRUNED trial (``n_finished`` such trials); ``walls[pair]``: wall seconds of its finished trials; ``changed``:
    pairs whose status may have changed since a consumer last emptied it. Build it from a storage
    (:meth:`open`, then :meth:`refresh` under the study lock) or from a list of trials (:meth:`of`).
    """

    def __init__(self, run: str = "", reader=None, what: str = "storage"):
        self.run, self.reader, self.what = run, reader, what
        self.trials: dict[int, FrozenTrial] = {}
        self.order: list[int] = []  # trial ids in creation order
        self.by_pair: dict[tuple, list[int]] = {}
        self.status: dict[tuple, str] = {}
        self.counts: Counter = Counter()
        self.ok: set = set()
        self.n_finished = 0  # COMPLETE or PRUNED trials
        self.walls: dict[tuple, list[float]] = {}
        self.open: set[int] = set()  # trials not finished: the only ones that can still change
        self.changed: set = set()
        self.rows_read = 0  # trials read from storage, over the index's life

    @classmethod
    def open_on(cls, storage, study_id: int, run: str = "") -> "TrialIndex":
        """An empty index of study ``study_id`` in ``storage``: the first refresh reads it all."""
        return cls(run, reader_for(storage, study_id), getattr(storage, "_what", "storage"))

    @classmethod
    def of(cls, trials: Iterable[FrozenTrial], run: str = "") -> "TrialIndex":
        """An index of the trials given (no storage)."""
        index = cls(run)
        index.add(trials)
        return index

    def refresh(self) -> int:
        """Read the trials created since the last refresh and the open ones; returns rows read."""
        from .retry import call

        if self.reader is None:
            return 0
        rows = call(self.reader.read, self.what, {i: self.trials[i] for i in sorted(self.open)})
        self.add(rows)
        self.rows_read += len(rows)
        return len(rows)

    def add(self, trials: Iterable[FrozenTrial]) -> None:
        """Take in trials (new ones, or new versions of known ones)."""
        for t in trials:
            tid, old, pair = t._trial_id, self.trials.get(t._trial_id), pair_of(t)
            if old is None:
                self.order.append(tid)
                self.by_pair.setdefault(pair, []).append(tid)
            else:
                self.counts[trial_status(old, self.run)] -= 1
                if pair_of(old) != pair:  # a search's sample whose attributes came after its creation
                    self.by_pair[pair_of(old)].remove(tid)
                    self.by_pair.setdefault(pair, []).append(tid)
                    self.by_pair[pair].sort()
                    self._restatus(pair_of(old))
            self.trials[tid] = t
            self.counts[trial_status(t, self.run)] += 1
            if not t.state.is_finished():
                self.open.add(tid)
            elif tid in self.open or old is None:
                self.open.discard(tid)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    self.ok.add(pair)
                    self.n_finished += 1
                    wall = _wall(t)
                    if wall is not None:
                        self.walls.setdefault(pair, []).append(wall)
            self._restatus(pair)

    def _restatus(self, pair: tuple) -> None:
        status = None
        for tid in self.by_pair.get(pair, []):
            status = merge_status(status, trial_status(self.trials[tid], self.run))
        if status is None:
            self.status.pop(pair, None)
        else:
            self.status[pair] = status
        self.changed.add(pair)

    # -- what claims and progress lines ask ------------------------------------------------------

    def __len__(self) -> int:
        return len(self.trials)

    def all_trials(self) -> list[FrozenTrial]:
        """Every trial, in creation order (O(trials): for looks and samplers, not for claims)."""
        return [self.trials[i] for i in self.order]

    def open_trials(self) -> list[FrozenTrial]:
        """The trials not finished (RUNNING, or WAITING): what reaping looks at."""
        return [self.trials[i] for i in sorted(self.open)]

    def attempts(self, cell_key: str, seed: int) -> list[FrozenTrial]:
        """The trials of one (cell, seed), in creation order."""
        return [self.trials[i] for i in self.by_pair.get((cell_key, seed), [])]

    def taken_trials(self) -> int:
        """Trials whose status keeps their (cell, seed) from being claimed (:data:`TAKEN`)."""
        return sum(self.counts[s] for s in TAKEN)

    def taken_pairs(self) -> int:
        return sum(s in TAKEN for s in self.status.values())

    def pop_changed(self) -> set:
        changed, self.changed = self.changed, set()
        return changed


def _wall(t: FrozenTrial) -> float | None:
    """A finished trial's wall seconds, as :class:`ablate.storage.TrialRecord` reads it."""
    wall = t.user_attrs.get("wall_s")
    if isinstance(wall, (int, float)):
        return float(wall)
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None
