"""A new trial in a database storage in one transaction of a few statements.

Optuna's ``RDBStorage.create_new_trial(template_trial=...)`` writes a template's parameters and
attributes one at a time, each a look-up of the trial, a check that it can be updated and an
upsert: about two round trips to the server per attribute, ~45 for a claimed trial of ablate's
(its config, cell, seed, owner and checkpoint attributes). A claim does that while it holds the
study lock, so with many workers on PostgreSQL the lock's hold time, and the queue behind it,
is mostly those round trips.

:func:`create_trial` writes the same rows in one transaction: the study row locked ``FOR
UPDATE`` (as Optuna's own creation does, so a trial numbered by an Optuna sampler at the same
time cannot take the same number), the trial row, then its parameters, user attributes and
system attributes each in one multi-row ``INSERT``, then its number (the trials of the study
before it, Optuna's ``count_past_trials``); the commit makes all of it visible at once, so no
reader ever sees the trial without its cell, seed or owner. The rows are those Optuna writes
(same tables, JSON of the values, distributions as Optuna serialises them); Optuna reads the
trial back as usual. Journal and other storages: None (the caller uses Optuna's own path).

:func:`finish_trial` does the same for a trial's end: its result's user attributes (one
multi-row upsert on PostgreSQL, Optuna's own upsert per attribute elsewhere), its value and its
final state in one transaction, with the trial row locked ``FOR UPDATE`` and checked updatable as
Optuna's ``set_trial_state_values`` does; through Optuna, the same is ~15 transactions, each a
commit the server flushes to disk.
"""
from __future__ import annotations

import contextlib
import json

from optuna.trial import FrozenTrial


def database_of(storage):
    """The ``RDBStorage`` behind ``storage`` (ablate's retrying wrapper, Optuna's cache), or None."""
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    inner = storage.__dict__.get("_inner", storage)
    if isinstance(inner, _CachedStorage):
        inner = inner._backend
    return inner if isinstance(inner, RDBStorage) else None


def create_trial(storage, study_id: int, template: FrozenTrial) -> int | None:
    """Create ``template`` (a RUNNING trial without values or intermediate values) in study
    ``study_id`` of a database ``storage`` in one transaction; returns its trial id, or None for
    a storage that is not a database or a template this path does not write (the caller then
    calls ``storage.create_new_trial``). Retried through outages as every storage call is
    (:func:`ablate.storage.retry.call`)."""
    from optuna.trial import TrialState

    from .retry import call

    rdb = database_of(storage)
    if rdb is None or template.state != TrialState.RUNNING or template.values or template.intermediate_values:
        return None
    trial_id, number = call(_insert, getattr(storage, "_what", "storage"), rdb, study_id, template)
    _remember(storage.__dict__.get("_inner", storage), study_id, template, trial_id, number)
    return trial_id


def _remember(cache, study_id: int, template: FrozenTrial, trial_id: int, number: int) -> None:
    """What Optuna's cache does after its own creation: the new trial's id and number kept (its
    later ``set_trial_param`` looks them up)."""
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo

    if not isinstance(cache, _CachedStorage):
        return
    created = FrozenTrial(**{**_fields(template), "trial_id": trial_id, "number": number})
    with cache._lock:
        cache._studies.setdefault(study_id, _StudyInfo())
        cache._add_trials_to_cache(study_id, [created])


@contextlib.contextmanager
def _transaction(rdb):
    """A session of ``rdb`` committed at the block's end, rolled back on any error, always closed."""
    session = rdb.scoped_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _insert(rdb, study_id: int, template: FrozenTrial) -> tuple[int, int]:
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models as m

    with _transaction(rdb) as session:
        m.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        dists = template.distributions
        trial = m.TrialModel(
            study_id=study_id, number=None, state=template.state, datetime_start=template.datetime_start,
            params=[m.TrialParamModel(param_name=k, param_value=dists[k].to_internal_repr(v),
                                      distribution_json=distribution_to_json(dists[k]))
                    for k, v in template.params.items()],
            user_attributes=[m.TrialUserAttributeModel(key=k, value_json=json.dumps(v))
                             for k, v in template.user_attrs.items()],
            system_attributes=[m.TrialSystemAttributeModel(key=k, value_json=json.dumps(v))
                               for k, v in template.system_attrs.items()])
        session.add(trial)
        session.flush()
        trial.number = trial.count_past_trials(session)
        ids = int(trial.trial_id), int(trial.number)
    return ids


def _fields(t: FrozenTrial) -> dict:
    return {"number": t.number, "state": t.state, "value": None, "datetime_start": t.datetime_start,
            "datetime_complete": None, "params": dict(t.params), "distributions": dict(t.distributions),
            "user_attrs": dict(t.user_attrs), "system_attrs": dict(t.system_attrs), "intermediate_values": {},
            "trial_id": t._trial_id}


def finish_trial(storage, trial_id: int, user_attrs: dict, state, values: list[float]) -> bool:
    """Write ``user_attrs``, ``values`` and the finished ``state`` of a running trial of a database
    ``storage`` in one transaction; False for a storage that is not a database (the caller then
    writes them through Optuna). Optuna's errors for an unknown or finished trial are raised as
    its own path raises them. Retried through outages (:func:`ablate.storage.retry.call`)."""
    from .retry import call

    rdb = database_of(storage)
    if rdb is None or not state.is_finished():
        return False
    call(_finish, getattr(storage, "_what", "storage"), rdb, trial_id, user_attrs, state, values)
    return True


def _finish(rdb, trial_id: int, user_attrs: dict, state, values: list[float]) -> None:
    import datetime as dt

    from optuna.storages._rdb import models as m

    with _transaction(rdb) as session:
        trial = m.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        if user_attrs and rdb.engine.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert

            stmt = insert(m.TrialUserAttributeModel).values(
                [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in user_attrs.items()])
            session.execute(stmt.on_conflict_do_update(
                index_elements=[m.TrialUserAttributeModel.trial_id, m.TrialUserAttributeModel.key],
                set_={"value_json": stmt.excluded.value_json}))
        else:
            for k, v in user_attrs.items():
                rdb._set_trial_attr_without_commit(session, m.TrialUserAttributeModel, trial_id, k, v)
        for objective, v in enumerate(values):
            rdb._set_trial_value_without_commit(session, trial, objective, v)
        trial.state = state
        trial.datetime_complete = dt.datetime.now()
