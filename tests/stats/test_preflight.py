"""The statistics pre-flight: a plan whose seeds cannot decide is refused before anything runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablate.stats.exact import min_p
from ablate.stats.feasibility import check_family, seeds_to_decide

REPO = Path(__file__).resolve().parents[2]


def _run(*args, cwd=REPO, allow: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_ALLOW_UNDECIDABLE"}
    if allow:
        env["ABLATE_ALLOW_UNDECIDABLE"] = "1"
    return subprocess.run([sys.executable, "-m", "ablate.run", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("m,want", [(112, 8), (28, 7), (3, 5), (1, 4)])
def test_fewest_seeds_at_which_the_permutation_test_can_decide(m, want):
    """The smallest n with 2/C(2n, n) below 0.05/m (the numbers the zoo's review quoted)."""
    assert seeds_to_decide("perm", 0.05 / m) == want
    assert min_p("perm", want, want) < 0.05 / m <= min_p("perm", want - 1, want - 1)


def test_family_check_states_the_smallest_p_and_the_power():
    f = check_family("q", 3, 5, 0.05, "holm", 0.01, 0.01, (0.5, 1.0))
    assert f.decidable and f.min_p == pytest.approx(2 / 252) and f.level == pytest.approx(0.05 / 3)
    assert f.seeds_power_two_valued is not None and f.seeds_power_two_valued > 5
    g = check_family("q", 112, 2, 0.05, "holm", 0.01, 0.01, (0.5, 1.0), power=False)
    assert not g.decidable and g.seeds_to_decide == 8
    assert check_family("q", 112, 2, 0.05, "bh", 0.01, 0.01, (0.5, 1.0), power=False).level == 0.05


def test_a_two_seed_112_comparison_design_is_refused_with_the_seeds_that_would_decide(tmp_path):
    raw = yaml.safe_load((REPO / "studies" / "zoo.yaml").read_text())
    raw["seeds"] = [0, 1]
    raw["correction"] = "holm"
    raw.pop("screening", None)
    raw["name"] = "zoo_two_seeds"
    path = tmp_path / "zoo_two_seeds.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    dry = _run(path, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 2, dry.stdout + dry.stderr
    assert "no exact test can decide two-valued outcomes" in dry.stderr and "At least 7 seeds a cell" in dry.stderr
    assert "Traceback" not in dry.stderr
    run = _run(path, "--run-dir", tmp_path / "runs", "--reports-dir", tmp_path / "reports", cwd=tmp_path)
    assert run.returncode == 2 and not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()
    # a screen may run: the same plan passes the pre-flight with the flag or screening: true
    assert _run(path, "--dry-run", "--allow-undecidable", cwd=tmp_path).returncode == 0
    raw["screening"] = True
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ok = _run(path, "--dry-run", cwd=tmp_path)
    assert ok.returncode == 0 and "CANNOT decide two-valued outcomes" in ok.stdout


def test_the_readme_study_passes_its_pre_flight():
    out = _run(REPO / "studies" / "gcn_effect.yaml", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "question: m = 1," in out.stdout and "can decide" in out.stdout


def test_an_empty_factors_mapping_without_references_is_refused(tmp_path):
    raw = yaml.safe_load((REPO / "studies" / "gcn_effect.yaml").read_text())
    raw["factors"], raw["name"] = {}, "empty"
    raw.pop("references"), raw.pop("baseline")
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = _run(path, "--dry-run", cwd=tmp_path)
    text = " ".join(out.stderr.split())
    assert out.returncode == 2 and "key 'factors': is empty" in text and "Nothing was run." in text, out.stderr
    assert "Traceback" not in out.stderr
