"""A tiny trained run of the demo config (2 steps) and the app serving it on a free local port;
the app over the tiny text-to-image run too."""

import threading

import pytest

from speed.app.server import make_server
from speed.app.studio import RunStudio
from speed.config import load_config
from speed.runners.train import train


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_config, tiny_overrides):
    """(run folder, its overrides): the demo UNet trained for 2 steps."""
    run = tmp_path_factory.mktemp("app") / "run"
    overrides = tiny_overrides(run)
    train(load_config(demo_config, "train", overrides))
    return run, overrides


def serving(run):
    """The URL of the app over `run`, served on a thread until the generator is closed."""
    server = make_server(RunStudio(run), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def app_url(tiny_run):
    """The URL of the app over `tiny_run`, served on a thread for the session."""
    yield from serving(tiny_run[0])


@pytest.fixture(scope="session")
def text_app_url(tiny_text_run):
    """The URL of the app over the tiny text-to-image run (`tiny_text_run`)."""
    yield from serving(tiny_text_run[0])
