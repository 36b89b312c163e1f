"""A text-to-image run served: prompts in place of classes, each image the library's `generate`
on its seed's noise and its prompt's encoding, batched bit for bit as alone; the prompt bounds
and a request of the wrong kind (classes to a text model, a prompt to a class model) refused in
one line, through the engine and over HTTP; the page's grid drawn by the service's prompts."""

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from speed.app.studio import RunStudio
from speed.errors import ConfigError
from speed.generation import enlarge_factor, generate
from speed.runners.sample import captioned_rows
from speed.serve.app import create_app
from speed.serve.client import ServeClient
from speed.serve.engine import Engine
from speed.serve.limits import ServeLimits
from speed.text import ByteTokens
from speed.utils.images import make_grid, upscale

CAT, DOG = "a cat left of a zebra", "a dog left of a horse"


@pytest.fixture(scope="module")
def text_engine(tiny_text_run):
    return Engine(tiny_text_run[0], max_prompt_chars=40)


@pytest.fixture(scope="module")
def http(text_engine):
    with TestClient(create_app(text_engine, ServeLimits(batch_window=0.001))) as client:
        yield client


def test_an_image_is_the_generation_of_its_prompt_and_seed(text_engine):
    """The engine's images are `generate` on each seed's noise and the prompts' byte tokens
    (the run's text encoder, built here on its own), with the run's guidance (3: a doubled
    batch, the second half the null caption)."""
    engine = text_engine
    job = engine.job(prompt=[CAT, DOG], count=2, seeds=[9, 4], sampler="ddpm", num_steps=3)
    assert job.prompts == (CAT, DOG) and job.labels is None and job.guidance_scale == 3.0
    generators = [torch.Generator().manual_seed(s) for s in (9, 4)]
    noise = torch.cat([torch.randn(1, 1, 56, 56, generator=g) for g in generators])
    expected = generate(
        engine.denoiser,
        engine.diffusion,
        engine.decoder,
        noise,
        ByteTokens(max_length=32).condition([CAT, DOG], torch.device("cpu")),
        sampler=engine.sampler("ddpm", job.eta),
        num_steps=3,
        guidance_scale=3.0,
        generator=generators,
    )
    assert torch.equal(engine.images([job]), expected)


def test_prompts_batched_together_equal_each_alone(text_engine):
    settings = dict(sampler="ddim", num_steps=3, eta=1.0)
    jobs = [
        text_engine.job(prompt=CAT, count=2, seeds=[3, 11], **settings),
        text_engine.job(prompt=[DOG, CAT, DOG], count=3, seeds=5, **settings),
    ]
    together, start = text_engine.images(jobs), 0
    for job in jobs:
        assert torch.equal(together[start : start + job.count], text_engine.images([job]))
        start += job.count


def test_other_prompts_give_other_images_and_one_prompt_the_same(text_engine):
    """Seed 3 under each prompt: the prompt moves the pixels far beyond float rounding (an
    untrained text path would leave them equal), and the same prompt repeats them exactly."""
    job = text_engine.job(prompt=[CAT, DOG, CAT], count=3, seeds=[3, 3, 3], num_steps=3)
    cat, dog, again = text_engine.images([job])
    assert (cat - dog).abs().max() > 0.01
    assert torch.equal(cat, again)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"classes": 1, "prompt": CAT}, "has no classes; send prompt"),
        ({}, "prompt is required: this run's model is text-to-image"),
        ({"prompt": [CAT, DOG], "count": 3}, "2 prompts for count=3 images"),
        ({"prompt": "   "}, "every prompt must be a non-empty string"),
        ({"prompt": "x" * 41}, "a prompt of 41 characters is over this server's limit of 40"),
    ],
)
def test_bad_prompts_are_one_line(text_engine, settings, message):
    with pytest.raises(ConfigError, match=message) as caught:
        text_engine.job(**settings)
    assert "\n" not in str(caught.value)


def test_a_prompt_to_a_class_model_is_one_line(engine):
    with pytest.raises(ConfigError, match="class-conditional, it reads no text; send classes"):
        engine.job(classes=1, prompt=CAT)


def test_a_png_for_a_prompt_is_the_engines_picture(http, text_engine):
    options = http.get("/options").json()
    assert options["prompts"] is True and options["classes"] == []
    assert options["max_prompt_chars"] == 40
    reply = http.post("/generate", json={"prompt": f" {DOG} ", "seeds": [4], "num_steps": 2})
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(reply.content)))
    (expected,) = text_engine.sample([text_engine.job(prompt=DOG, seeds=[4], num_steps=2)])
    assert np.array_equal(picture, expected[0, :, :, 0])


def test_npz_holds_each_images_prompt(http):
    body = {"prompt": [CAT, DOG], "count": 2, "seeds": 7, "num_steps": 2, "format": "npz"}
    arrays = np.load(io.BytesIO(http.post("/generate", json=body).content))
    assert arrays["arr_0"].shape == (2, 56, 56, 1) and "arr_1" not in arrays
    assert arrays["prompts"].tolist() == [CAT, DOG] and arrays["seeds"].tolist() == [7, 8]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"classes": "cat"}, 400, "classes: this run's model is text-to-image"),
        ({"prompt": "x" * 41}, 400, "prompt: a prompt of 41 characters is over"),
        ({"prompt": CAT, "count": 17}, 400, "count must lie in 1..16 on this server"),
        ({"prompt": 5}, 422, "prompt.str: Input should be a valid string"),
    ],
)
def test_bad_prompt_requests_are_one_line(http, body, status, message):
    reply = http.post("/generate", json=body)
    assert reply.status_code == status and message in reply.json()["error"]


def test_a_prompt_to_a_class_service_is_a_400(engine):
    with TestClient(create_app(engine, ServeLimits())) as client:
        reply = client.post("/generate", json={"classes": 1, "prompt": CAT})
    assert reply.status_code == 400 and "it reads no text; send classes" in reply.json()["error"]


def test_the_page_draws_its_prompt_rows_through_the_service(tiny_text_run, http, text_engine):
    """The page's grid through the service is the service's images of each prompt (a row each,
    the columns its seeds), the prompts written to the left as the sample phase writes them."""
    client = ServeClient("http://testserver")
    client.http = http
    studio = RunStudio(tiny_text_run[0], service=client)
    settings = {"prompts": [CAT, DOG], "seeds": 2, "seed": 5, "sampler": "ddim", "num_steps": 2}
    grid = np.asarray(Image.open(io.BytesIO(studio.generate(settings)["grid"])))
    rows = [
        text_engine.sample([text_engine.job(prompt=p, count=2, seeds=5, num_steps=2)])[0]
        for p in (CAT, DOG)
    ]
    tiles = upscale(make_grid(np.concatenate(rows), nrow=2), enlarge_factor(56))
    expected = captioned_rows(tiles, [CAT, DOG])
    assert np.array_equal(grid, expected[:, :, 0])
