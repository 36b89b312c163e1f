"""The page as the service's client: its grid's images come from the service, one request per
row sent together; a page on another checkpoint than the service's is told so in one line."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from speed.app.studio import RunStudio
from speed.errors import ConfigError
from speed.generation import enlarge_factor
from speed.serve.app import create_app
from speed.serve.client import ServeClient, ServeRequestError
from speed.serve.limits import ServeLimits
from speed.utils.images import make_grid, upscale


@pytest.fixture(scope="module")
def service(engine):
    with TestClient(create_app(engine, ServeLimits(batch_window=0.2))) as http:
        client = ServeClient("http://testserver")
        client.http = http
        yield client


def test_the_page_grid_is_the_services_images(tiny_run, engine, service):
    studio = RunStudio(tiny_run, service=service)
    settings = {"classes": [0, 3], "seeds": 2, "seed": 5, "sampler": "ddim", "num_steps": 2}
    settings["eta"] = 0.0
    grid = np.asarray(Image.open(io.BytesIO(studio.generate(settings)["grid"])))
    rows = [
        engine.sample(
            [engine.job(classes=c, count=2, seeds=5, sampler="ddim", eta=0.0, num_steps=2)]
        )[0]
        for c in (0, 3)
    ]
    tiles = np.concatenate(rows)
    expected = upscale(make_grid(tiles, nrow=2), enlarge_factor(28))
    assert np.array_equal(grid, expected[:, :, 0])


def test_the_client_reads_images_and_refusals(service):
    result = service.generate(classes="cat", count=3, seeds=[1, 2, 3], num_steps=1)
    assert result["images"].shape == (3, 28, 28, 1) and result["labels"].tolist() == [2, 2, 2]
    assert result["seeds"].tolist() == [1, 2, 3] and result["batch_images"] >= 3
    with pytest.raises(ServeRequestError, match="count must lie in 1..16"):
        service.generate(classes=1, count=17)
    assert service.options()["checkpoint"] == "0000002"


def test_a_page_on_another_checkpoint_is_told_which_the_service_serves(tiny_run, service):
    studio = RunStudio(tiny_run, service=service)
    with pytest.raises(ConfigError, match="serves checkpoint '0000002'; choose it"):
        studio.generate({"checkpoint": "0000001", "classes": [0], "seeds": 1, "num_steps": 1})


def test_an_unreachable_service_is_one_line():
    with pytest.raises(ServeRequestError, match="cannot reach the service at http://127.0.0.1:9"):
        ServeClient("http://127.0.0.1:9", timeout=2).options()
