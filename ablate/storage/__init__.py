"""Optuna storage (a journal file or PostgreSQL) as the one source of truth, and the owner of trial
records: claim the next trial exactly once, record results and failures, read typed
:class:`TrialRecord` values and the run record (:mod:`.records`); the claim index that reads only
new and running trials (:mod:`.index`); opening and locking (:mod:`.opening`); owners, liveness and
states (:mod:`.states`); the journal's lock, torn lines and repair (:mod:`.journal`); the status's
one-pass read of a journal (:mod:`.replay`); retries of
transient failures and password redaction (:mod:`.retry`). ``python -m ablate.storage repair
JOURNAL`` repairs a journal."""
from .records import (Claim, TrialRecord, claim_next, read_trials, record_failure, record_result,
                      save_run_record)

__all__ = ["Claim", "TrialRecord", "claim_next", "read_trials", "record_failure", "record_result",
           "save_run_record"]
