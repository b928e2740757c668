"""The status's journal replay (ablate.storage.replay) against Optuna's own: the same trials, in the
same order, with the same states, values, steps, attributes and times, on journals real runs wrote
and on one written to hit every rule of Optuna's replay (a study created twice, a deleted study's
name reused, a waiting trial claimed twice, a write to a finished trial, a torn last line)."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ablate.config.errors import StudyError
from ablate.storage.replay import read_journal
from support import REPO

FIELDS = ("number", "state", "values", "intermediate_values", "user_attrs", "system_attrs", "datetime_start",
          "datetime_complete")


def _optuna(path: Path, name: str):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.load_study(study_name=name, storage=storage)
    return study.user_attrs, study.get_trials(deepcopy=False)


def _same(path: Path, name: str) -> int:
    attrs, theirs = _optuna(path, name)
    mine = read_journal(str(path), name)
    assert mine.user_attrs == attrs
    assert len(mine.trials) == len(theirs)
    for a, b in zip(mine.get_trials(), theirs):
        for f in FIELDS:
            assert getattr(a, f) == getattr(b, f), (name, b.number, f)
        assert a.value == b.value
    return len(theirs)


# journals of real runs: a sequential study (looks, seeds added), pruned trials, a study with its
# evaluations' child study in the same file, interrupted and resumed trials
@pytest.mark.parametrize("journal,names", [
    ("adaptive_demo", ["adaptive_demo"]),
    ("em_pruning", ["em_pruning"]),
    ("em_t_train_eval", ["em_t_train_eval", "em_t_train_eval.evaluations"]),
    ("ci_repro", ["ci_repro"]),
])
def test_replay_equals_optunas_on_committed_journals(journal, names):
    path = REPO / "reports" / "storage" / f"{journal}.journal"
    assert sum(_same(path, n) for n in names) > 0


def test_replay_follows_optunas_rules(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "j.journal"

    def storage():  # each a worker of its own (Optuna's worker ids differ per storage object)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))

    a, b = storage(), storage()
    s = optuna.create_study(study_name="s", storage=a, direction="maximize")
    gone = optuna.create_study(study_name="gone", storage=a)
    gone.enqueue_trial({"x": 1})
    optuna.delete_study(study_name="gone", storage=a)
    optuna.create_study(study_name="gone", storage=b)  # the name reused after the delete
    s.set_user_attr("plan", [1, 2])
    s.enqueue_trial({"x": 0.5})
    s.enqueue_trial({"x": 0.25})
    t0 = s.ask()
    t0.report(0.1, 0)
    t0.report(0.2, 1)
    t0.set_user_attr("cell_key", "k")
    a.set_trial_system_attr(t0._trial_id, "ablate:host", "h")
    s.tell(t0, 0.3)
    with pytest.raises(Exception):
        a.set_trial_user_attr(t0._trial_id, "late", 1)  # written to the journal, refused on replay
    waiting = s.get_trials(states=(TrialState.WAITING,))[0]._trial_id
    assert a.set_trial_state_values(waiting, TrialState.RUNNING)
    assert not b.set_trial_state_values(waiting, TrialState.RUNNING)  # refused before it is written
    with open(path, "a") as f:  # a second claim that raced the first into the journal: refused on replay
        f.write(json.dumps({"op_code": 6, "worker_id": "racer", "trial_id": waiting, "state": 0, "values": None,
                            "datetime_start": "2030-01-01T00:00:00.000000+00:00"}) + "\n")
    a.set_trial_state_values(waiting, TrialState.FAIL)
    t2 = s.ask()
    s.tell(t2, state=TrialState.PRUNED)
    s.add_trial(optuna.trial.create_trial(value=0.9, params={"x": 0.1},
                                          distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                          intermediate_values={0: 0.5, 3: 0.9}, user_attrs={"seed": 3}))
    for name in ("s", "gone"):
        _same(path, name)
    # a torn last line (a writer killed mid-line) is skipped, as Optuna skips it
    with open(path, "ab") as f:
        f.write(b'{"op_code": 8, "worker_id": "w", "trial_id": 1, "user_at')
    assert _same(path, "s") == 4
    with pytest.raises(KeyError):
        read_journal(str(path), "never")


def test_a_broken_middle_line_is_the_same_stop_as_opening_the_journal(tmp_path):
    path = tmp_path / "j.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(StudyError) as e:
        read_journal(str(path), "s")
    assert "line 3 of the journal is broken" in str(e.value) and "ablate.storage repair" in str(e.value)
    json.loads(lines[0])  # the file is otherwise a journal
    # the same broken piece as the last line (a newline after it): skipped, as Optuna's reader skips it
    path.write_bytes(b"\n".join(lines[:2] + [lines[3], lines[2]]) + b"\n")
    _same(path, "s")
    sqlite = tmp_path / "s.db"
    sqlite.write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    with pytest.raises(StudyError) as e:
        read_journal(str(sqlite), "s")
    assert "sqlite:///" in str(e.value)
