"""The benchmark scripts are run as `python benchmarks/NAME.py`, so they import their sibling
(`models_forward`) as a top-level module: put benchmarks/ on the path the same way. Tests run
single-threaded (see `single_thread` in tests/conftest.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass
