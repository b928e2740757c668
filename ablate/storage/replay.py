"""A read-only replay of a journal file for ``ablate status``: one study's attributes and trials
in one pass over the file, without Optuna's objects.

Optuna's reader replays every record into ``FrozenTrial`` objects (distributions rebuilt from JSON,
each update a copy of the trial): ~1.2 s of CPU for a 10,000-trial journal, more than everything
else ``ablate status`` does. What the status reads (a trial's number, state, values, intermediate
values, user and system attributes, start and end times) is rebuilt here by the same rules as
Optuna's replay (a study created twice keeps the first; records for a deleted study, an unknown
trial or a finished one are ignored; a second RUNNING for a running trial is refused; trial
numbers count a study's trials in order), and ``tests/storage/test_replay.py`` holds it equal to
Optuna's replay on every journal the project has committed. Parameters are not rebuilt (their
distributions are what costs): a caller that needs them opens the storage through Optuna.

The file is parsed once: a broken line before the last is the same stop as opening the journal
(:mod:`.journal`); a torn last line (a writer killed mid-line) is skipped, as Optuna's reader
skips it, and left for the next writer to cut.
"""
from __future__ import annotations

import datetime as dt
import json

from optuna.trial import TrialState

# Optuna's journal operation codes (optuna.storages.journal._storage.JournalOperation)
CREATE_STUDY, DELETE_STUDY, SET_STUDY_USER_ATTR, SET_STUDY_SYSTEM_ATTR = 0, 1, 2, 3
CREATE_TRIAL, SET_TRIAL_PARAM, SET_TRIAL_STATE_VALUES, SET_TRIAL_INTERMEDIATE_VALUE = 4, 5, 6, 7
SET_TRIAL_USER_ATTR, SET_TRIAL_SYSTEM_ATTR = 8, 9

_STATES = {s.value: s for s in TrialState}


class JournalTrial:
    """The fields of a trial the status reads, named as on ``optuna.trial.FrozenTrial``."""

    __slots__ = ("number", "state", "values", "_steps", "_raw_steps", "user_attrs", "system_attrs",
                 "datetime_start", "datetime_complete")

    def __init__(self, number: int, state: TrialState):
        self.number, self.state = number, state
        self.values = None
        self._steps: dict | None = {}
        self._raw_steps: dict = {}  # a created trial's intermediate values with the journal's string keys
        self.user_attrs: dict = {}
        self.system_attrs: dict = {}
        self.datetime_start = self.datetime_complete = None

    @property
    def value(self):
        return self.values[0] if self.values else None

    @property
    def intermediate_values(self) -> dict:
        """Step -> value (the keys made integers on first use: most callers only count them)."""
        if self._steps is None:
            self._steps = {int(k): v for k, v in self._raw_steps.items()}
        return self._steps

    def set_step(self, step: int, value) -> None:
        self._steps = {**self.intermediate_values, step: value}


class JournalStudy:
    """One study of a journal: its attributes and its trials in number order."""

    def __init__(self, name: str):
        self.study_name = name
        self.user_attrs: dict = {}
        self.system_attrs: dict = {}
        self.trials: list[JournalTrial] = []

    def get_trials(self, deepcopy: bool = False) -> list[JournalTrial]:
        return list(self.trials)


def _when(text):
    """A journal timestamp as Optuna's replay gives it: local time, naive."""
    return None if text is None else dt.datetime.fromisoformat(text).astimezone().replace(tzinfo=None)


def read_journal(path: str, study_name: str) -> JournalStudy:
    """The study ``study_name`` of the journal at ``path``; KeyError when it holds none, a
    StudyError (with the repair command) for a broken line before the last."""
    from .journal import broken_line_error

    replay, first, bad = _Replay(), b"", 0
    with open(path, "rb") as f:  # line by line: memory holds the replayed trials, not the file
        for i, line in enumerate(f):
            if i == 0:
                first = line
                if line.startswith(b"SQLite format 3\0"):
                    raise broken_line_error(path, 1, line)
            if bad:  # a broken line with more after it
                raise broken_line_error(path, bad, first)
            if not line.endswith(b"\n"):
                break  # a torn last line (no newline): Optuna's reader skips it too
            try:
                log = json.loads(line)
            except ValueError:
                bad = i + 1  # skipped, as Optuna skips it, if it is the last line
                continue
            replay.apply(log)
    for study in replay.studies.values():
        if study.study_name == study_name:
            return study
    raise KeyError(study_name)


class _Replay:
    """The studies and trials of the records applied so far (Optuna's rules: the module's docstring)."""

    def __init__(self):
        self.studies: dict[int, JournalStudy] = {}
        self.names: set[str] = set()
        self.next_study = 0
        self.trials: list[JournalTrial] = []  # by trial id: ids count every trial created, as Optuna's

    def apply(self, log: dict) -> None:
        op = log["op_code"]
        if op == CREATE_TRIAL:
            self.create_trial(log)
        elif op in (SET_TRIAL_USER_ATTR, SET_TRIAL_SYSTEM_ATTR, SET_TRIAL_INTERMEDIATE_VALUE, SET_TRIAL_STATE_VALUES):
            tid = log["trial_id"]
            t = self.trials[tid] if 0 <= tid < len(self.trials) else None
            if t is None or t.state.is_finished():
                return
            if op == SET_TRIAL_USER_ATTR:
                t.user_attrs = {**t.user_attrs, **log["user_attr"]}
            elif op == SET_TRIAL_SYSTEM_ATTR:
                t.system_attrs = {**t.system_attrs, **log["system_attr"]}
            elif op == SET_TRIAL_INTERMEDIATE_VALUE:
                t.set_step(log["step"], log["intermediate_value"])
            else:
                self.set_state(t, log)
        elif op == CREATE_STUDY:
            name = log["study_name"]
            if name not in self.names:
                self.studies[self.next_study] = JournalStudy(name)
                self.names.add(name)
                self.next_study += 1
        elif op == DELETE_STUDY:
            gone = self.studies.pop(log["study_id"], None)
            if gone is not None:
                self.names.discard(gone.study_name)
        elif op in (SET_STUDY_USER_ATTR, SET_STUDY_SYSTEM_ATTR):
            study = self.studies.get(log["study_id"])
            if study is not None and op == SET_STUDY_USER_ATTR:
                study.user_attrs = {**study.user_attrs, **log["user_attr"]}
            elif study is not None:
                study.system_attrs = {**study.system_attrs, **log["system_attr"]}
        # SET_TRIAL_PARAM: parameters are not rebuilt (see the module's docstring)

    def create_trial(self, log: dict) -> None:
        study = self.studies.get(log["study_id"])
        if study is None:
            return
        t = JournalTrial(len(study.trials), _STATES[log.get("state", TrialState.RUNNING.value)])
        t.user_attrs = log.get("user_attrs", {})
        t.system_attrs = log.get("system_attrs", {})
        raw = log.get("intermediate_values")
        if raw:
            t._raw_steps, t._steps = raw, None
        t.datetime_start = _when(log["datetime_start"])
        t.datetime_complete = _when(log.get("datetime_complete"))
        values, value = log.get("values"), log.get("value")
        t.values = list(values) if values is not None else ([value] if value is not None else None)
        self.trials.append(t)
        study.trials.append(t)

    @staticmethod
    def set_state(t: JournalTrial, log: dict) -> None:
        state = _STATES[log["state"]]
        if state == TrialState.RUNNING and t.state == TrialState.RUNNING:
            return  # another worker already took this waiting trial
        if state == TrialState.RUNNING:
            t.datetime_start = _when(log["datetime_start"])
        if state.is_finished():
            t.datetime_complete = _when(log["datetime_complete"])
        t.state = state
        if log["values"] is not None:
            t.values = log["values"]
