"""Model tests run single-threaded (see `single_thread` in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass
