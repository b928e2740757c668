"""Fixtures of the runner's tests."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def own_environment():
    """An in-process run sets WANDB_DIR and the run id in os.environ; give them back, so that later
    tests' subprocesses do not inherit this test's folders."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
