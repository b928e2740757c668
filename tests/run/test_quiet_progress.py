"""Quiet progress (issue 30 item 5): Lightning's hint to launch with ``srun`` is shown only inside
a SLURM job (mIoU in points is tests/run/test_progress.py's)."""
from __future__ import annotations

import warnings

from lightning.fabric.plugins.environments import slurm

from ablate.trainer.fit import quiet_libraries


def _hint_warnings(monkeypatch, job_id: str | None) -> list[str]:
    """The warnings Lightning's srun check emits after :func:`quiet_libraries`, with an srun on
    the PATH and the process not started by it."""
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    if job_id is not None:
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/srun" if name == "srun" else None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        slurm.SLURMEnvironment._validate_srun_used()
    return [str(w.message) for w in seen if "srun" in str(w.message)]


def test_srun_hint_is_silenced_outside_slurm_and_kept_inside(monkeypatch):
    assert _hint_warnings(monkeypatch, None) == []
    inside = _hint_warnings(monkeypatch, "4242")
    assert len(inside) == 1 and inside[0].startswith("The `srun` command is available")

