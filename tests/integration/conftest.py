from __future__ import annotations

import pytest

from tests.integration.helpers import Workspace


@pytest.fixture
def workspace(tmp_path):
    ws = Workspace(tmp_path)
    yield ws
    ws.cleanup()
    assert not ws.leftovers(), "a test left Ray processes behind"


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """One smoke sweep of the shipped sinusoid spec (`smk`, with its GP overlay), inspected by
    several tests (test_sweep.py, test_mlflow_ui.py)."""
    ws = Workspace(tmp_path_factory.mktemp("smoke"))
    proc = ws.cli("run", "sinusoid", "--profile", "smoke", "--name", "smk")
    yield ws, proc
    ws.cleanup()
    assert not ws.leftovers()
