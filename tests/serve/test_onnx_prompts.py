"""The onnx backend on a text-to-image run: the tiny text run's graph written by `-p export`
(inputs x, t, y byte ids, mask, guidance_scale) fed by the run's text encoder in PyTorch gives
the PyTorch backend's images for the same prompts and seeds, guided and not, and the same PNG
over HTTP to one grey level; other prompts give other images; a checkpoint with no exported
graph is exported at start-up with the caption inputs; a class request is still a 400."""

import io
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from speed.serve.app import create_app
from speed.serve.engine import Engine
from speed.serve.limits import ServeLimits

CAT, DOG = "a cat left of a zebra", "a dog left of a horse"
# float32 in two kernel libraries (ONNX Runtime, PyTorch) over 4 steps at guidance 3; measured
# at most 9.2e-5 (dpm_solver++) on images in [-1, 1], tests/runners/test_export_conditions.py's
# bound for DDIM-4 at guidance 3
ATOL = 5e-4


@pytest.fixture(scope="module")
def exported_run(tiny_text_run, tmp_path_factory, text_config, main):
    """A copy of the tiny text run (the shared one stays as it was) exported by `-p export`."""
    run, overrides = tiny_text_run
    copy = tmp_path_factory.mktemp("onnx_text") / "run"
    shutil.copytree(run, copy)
    words = [f"experiment_dir={copy}" if w.startswith("experiment_dir=") else w for w in overrides]
    assert main(["-c", text_config, "-p", "export", *words]) == 0
    return copy


@pytest.fixture(scope="module")
def engines(exported_run):
    """(PyTorch engine, ONNX engine) of the newest checkpoint, the one exported."""
    return Engine(exported_run), Engine(exported_run, backend="onnx")


def test_the_service_runs_the_exported_graph(exported_run, engines):
    torch_engine, onnx_engine = engines
    assert onnx_engine.model.path == exported_run / "export" / "0000002.onnx"
    assert onnx_engine.options() == {**torch_engine.options(), "backend": "onnx"}
    assert onnx_engine.options()["prompts"] is True and onnx_engine.guided


@pytest.mark.parametrize(
    "sampler, scale", [("ddim", 3.0), ("dpm_solver++", 3.0), ("ddpm", 3.0), ("ddim", 1.0)]
)
def test_onnx_images_of_prompts_are_pytorchs(engines, sampler, scale):
    """Three images (two prompts, one seed twice) batched in 8 fixed rows: equal to ATOL."""
    torch_engine, onnx_engine = engines
    job = torch_engine.job(
        prompt=[CAT, DOG, CAT], count=3, seeds=[3, 3, 8], sampler=sampler, num_steps=4,
        guidance_scale=scale,
    )  # fmt: skip
    expected, got = torch_engine.images([job]), onnx_engine.images([job])
    assert expected.abs().max() > 0.5  # pictures, not zeros
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=ATOL)


def test_other_prompts_give_other_onnx_images(engines):
    """Seed 3 under each prompt, through the graph: the prompt moves the pixels far beyond
    ATOL, and the same prompt repeats them exactly."""
    _, onnx_engine = engines
    job = onnx_engine.job(prompt=[CAT, DOG, CAT], count=3, seeds=[3, 3, 3], num_steps=3)
    cat, dog, again = onnx_engine.images([job])
    assert (cat - dog).abs().max() > 0.01
    assert np.array_equal(cat.numpy(), again.numpy())


def test_a_checkpoint_without_a_graph_is_exported_at_start_up(exported_run):
    onnx_engine = Engine(exported_run, backend="onnx", checkpoint="0000001")
    assert not (exported_run / "export" / "0000001.onnx").exists()
    assert onnx_engine.model.path.name == "denoiser.onnx"
    torch_engine = Engine(exported_run, checkpoint="0000001")
    job = torch_engine.job(prompt=[CAT, DOG], count=2, seeds=5, sampler="ddim", num_steps=4)
    expected, got = torch_engine.images([job]), onnx_engine.images([job])
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=ATOL)


def test_an_onnx_png_is_the_pytorch_picture_to_one_grey_level(engines):
    torch_engine, onnx_engine = engines
    body = {"prompt": DOG, "count": 2, "seeds": 4, "sampler": "dpm_solver++", "num_steps": 4}
    with TestClient(create_app(onnx_engine, ServeLimits(batch_window=0.001))) as client:
        reply = client.post("/generate", json={**body, "format": "npz"})
        assert reply.status_code == 200
        got = np.load(io.BytesIO(reply.content))["arr_0"]
        png = client.post("/generate", json={**body, "count": 1, "seeds": [4]})
        wrong = client.post("/generate", json={"classes": 1})
    settings = {key: value for key, value in body.items() if key != "prompt"}
    (expected,) = torch_engine.sample([torch_engine.job(prompt=DOG, **settings)])
    assert got.shape == expected.shape == (2, 56, 56, 1)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    picture = np.asarray(Image.open(io.BytesIO(png.content)))
    assert np.abs(picture.astype(int) - expected[0, :, :, 0].astype(int)).max() <= 1
    assert wrong.status_code == 400
    assert "classes: this run's model is text-to-image" in wrong.json()["error"]
