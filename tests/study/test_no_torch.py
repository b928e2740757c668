"""Loading a study imports no torch: every committed study in studies/ is loaded, and every trial
config made, in a fresh interpreter, which must end with no module named torch or torch.* loaded.
(``ablate status`` reads a study and its storage; torch's import alone took it past a second. The
torch-free spec modules: data/synthetic_spec.py, data/real_spec.py, models/resnet_spec.py,
models/mmseg_layouts.py, models/registry.py, attention/carafe_spec.py, attention/manifest.py.)"""
from __future__ import annotations

import subprocess
import sys

from support import REPO

# a study of many presets (zoo), a search, a factorial design, eval-time factors, real datasets ...
STUDIES = sorted(p.name for p in (REPO / "studies").glob("*.yaml"))

_NO_TORCH = """
import sys
from pathlib import Path
from ablate.study.load import load_study
for path in sorted(Path("studies").glob("*.yaml")):
    study = load_study(path, check_files=False)
    for cell in study.cells():
        study.trial(cell, 0)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, f"loading the studies imported {loaded[:3]}"
print(len(list(Path("studies").glob("*.yaml"))))
"""


def test_loading_every_study_imports_no_torch():
    assert len(STUDIES) > 3 and "zoo.yaml" in STUDIES and "em_t_train_eval.yaml" in STUDIES
    out = subprocess.run([sys.executable, "-c", _NO_TORCH], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) == len(STUDIES)
