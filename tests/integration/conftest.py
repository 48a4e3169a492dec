from __future__ import annotations

import pytest

from tests.integration.helpers import Workspace


@pytest.fixture
def workspace(tmp_path):
    ws = Workspace(tmp_path)
    yield ws
    ws.cleanup()
    assert not ws.leftovers(), "a test left Ray processes behind"
