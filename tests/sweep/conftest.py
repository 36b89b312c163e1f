"""`cli(words) -> exit code`: main.py's main() called in this process."""

import importlib.util
from pathlib import Path

import pytest

MAIN = Path(__file__).resolve().parents[2] / "main.py"


@pytest.fixture(scope="session")
def cli():
    spec = importlib.util.spec_from_file_location("speed_main", MAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
