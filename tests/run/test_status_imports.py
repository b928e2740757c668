"""``python -m ablate.run.status`` on a journal imports no torch (the command only reads the study
and its storage; torch's import alone took it past a second on a large journal)."""
from __future__ import annotations

import subprocess
import sys

from optuna.trial import TrialState

from support import REPO, tiny_study

from ablate.storage import records as st
from ablate.storage.states import create_running_trial
from ablate.study.load import load_study

_STATUS = """
import runpy, sys
sys.argv = ["ablate status", *sys.argv[1:]]
try:
    runpy.run_module("ablate.run.status", run_name="__main__")
except SystemExit as e:
    assert not e.code, f"status exited {e.code}"
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("torch modules:", len(loaded), loaded[:3])
"""


def test_status_of_a_journal_imports_no_torch(tmp_path):
    path = tiny_study(tmp_path, seeds=[0, 1])
    study = load_study(path)
    url = str(tmp_path / "optuna.journal")
    _, ostudy = st.open_study(url, study.name)
    for i, cell in enumerate(study.cells()):
        trial = create_running_trial(ostudy, {}, {}, {"cell_key": cell.key, "seed": 0})
        ostudy._storage.set_trial_user_attr(trial, "wall_s", 12.0)
        ostudy._storage.set_trial_state_values(trial, TrialState.COMPLETE, [40.0 + i])
    out = subprocess.run([sys.executable, "-c", _STATUS, str(path), "--storage", url], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "total: 2 finished (0 pruned), 0 running, 0 failed, 2 waiting" in out.stdout, out.stdout
    assert "torch modules: 0 []" in out.stdout, out.stdout
