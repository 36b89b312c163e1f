"""A tiny trained run of the demo config (its UNet, 2 training steps) and its engine."""

import pytest

from speed.config import load_config
from speed.runners.train import train
from speed.serve.engine import Engine


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_config, tiny_overrides):
    """The folder of the demo UNet trained for 2 steps."""
    run = tmp_path_factory.mktemp("serve") / "run"
    train(load_config(demo_config, "train", tiny_overrides(run)))
    return run


@pytest.fixture(scope="session")
def engine(tiny_run):
    return Engine(tiny_run)
