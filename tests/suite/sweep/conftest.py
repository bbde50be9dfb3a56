"""Fixtures of the sweep tests: the ``sweepcheck`` test plugin (``tiny_model`` is in
``tests/suite/conftest.py``)."""

import os
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "sweepcheck"


@pytest.fixture
def plugin_env():
    """The environment of a process that has the ``sweepcheck`` plugin installed."""
    path = os.pathsep.join(p for p in (str(PLUGIN), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
