"""The benchmark scripts are run as `python benchmarks/NAME.py`, so they import their sibling
(`models_forward`) as a top-level module: put benchmarks/ on the path the same way. Tests run
single-threaded (tiny tensors; a busy shared CPU makes threads wait)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
