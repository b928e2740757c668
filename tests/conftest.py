"""Fixtures every test package uses, and the environment every test runs in (offline W&B, Triton's
interpreter on the CPU, one worker, an own cost cache). Plain helpers are in ``support``; a
package's own fixtures are in its ``conftest.py``."""
from __future__ import annotations

import os

import pytest

from support import tiny_study
from support.fakes import fake  # noqa: F401 - fixtures every package may use: a fake trainer,
from support.postgres import pg_server, pg_url  # noqa: F401 - a throwaway PostgreSQL server and database,
from support.runs import in_process  # noqa: F401 - python -m ablate.run in this process


os.environ.setdefault("WANDB_MODE", "offline")
# Triton kernels run in Triton's interpreter on CPU tensors unless a GPU run asks otherwise
# (ABLATE_GPU_TESTS=1); it must be set before triton is first imported.
if os.environ.get("ABLATE_GPU_TESTS", "0") in ("", "0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# the runs the tests make use 1-2 seeds: the statistics pre-flight would refuse them (tests/stats/test_preflight.py
# checks the refusal with this unset)
os.environ.setdefault("ABLATE_ALLOW_UNDECIDABLE", "1")
# one in-process worker unless a test asks for more: many tests patch the trainer in this process
# (tests/run/test_parallel.py checks the machine's own choice with this unset)
os.environ.setdefault("ABLATE_WORKERS", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine spinning
    threads make every op many times slower: in-process tests use one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _own_cost_cache(tmp_path_factory, monkeypatch):
    """Each test measures block costs afresh: ablate.costs' cache (``$ABLATE_CACHE``) goes to a
    folder of the test's own, never the user's ``~/.cache/ablate``; child processes inherit it."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.mktemp("ablate-cache")))


@pytest.fixture
def study_factory(tmp_path):
    def make(**overrides):
        return tiny_study(tmp_path, **overrides)
    return make


@pytest.fixture(autouse=True)
def _no_inherited_wandb_service():
    """wandb.init in this process sets WANDB_SERVICE (its wandb-core); a later test's subprocess that
    inherited it would write its runs through this process's service. Each test leaves it unset."""
    yield
    os.environ.pop("WANDB_SERVICE", None)
