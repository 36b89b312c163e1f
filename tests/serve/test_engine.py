"""The engine: requests checked into jobs, and a request batched with others sampled, bit for
bit in float32 on the CPU, as it is alone."""

import numpy as np
import pytest
import torch

from speed.errors import ConfigError, MissingFileError
from speed.generation import generate
from speed.serve.engine import Engine, Job


@pytest.mark.parametrize(
    "sampler, scale, eta",
    [("ddpm", 1.0, 0.0), ("ddim", 2.0, 1.0), ("euler_ancestral", 3.0, 0.0), ("plms", 1.0, 0.0)],
)
def test_a_batched_request_equals_it_served_alone(engine, sampler, scale, eta):
    """Three requests of one key sampled together give each exactly its pictures alone: the
    stochastic samplers (ddpm, ddim with eta=1, euler_ancestral) draw each image's noise from
    its own generator, with and without guidance's doubled batch."""
    settings = dict(sampler=sampler, num_steps=4, guidance_scale=scale, eta=eta)
    jobs = [
        engine.job(classes="bird", count=2, seeds=[3, 11], **settings),
        engine.job(classes=[0, 4, 9], count=3, seeds=5, **settings),
        engine.job(classes=7, count=1, seeds=[3], **settings),
    ]
    together = engine.images(jobs)
    start = 0
    for job in jobs:
        alone = engine.images([job])
        assert alone.dtype == torch.float32 and alone.shape == (job.count, 1, 28, 28)
        assert torch.equal(together[start : start + job.count], alone)
        start += job.count
    pictures = engine.sample(jobs)
    assert [p.shape for p in pictures] == [(2, 28, 28, 1), (3, 28, 28, 1), (1, 28, 28, 1)]
    assert pictures[0].dtype == np.uint8


def test_an_image_is_the_generation_of_its_own_seed(engine):
    """What the engine returns is `generate` on noise from the seed's generator, that generator
    then drawing the sampler's noise: the serving is the library's sampling, nothing more."""
    job = engine.job(classes=2, count=1, seeds=[9], sampler="ddpm", num_steps=3)
    g = torch.Generator().manual_seed(9)
    noise = torch.randn(1, 1, 28, 28, generator=g)
    expected = generate(
        engine.denoiser,
        engine.diffusion,
        engine.decoder,
        noise,
        torch.tensor([2]),
        sampler=engine.sampler("ddpm", job.eta),
        num_steps=3,
        guidance_scale=job.guidance_scale,
        generator=g,
    )
    assert job.guidance_scale == 2.0  # the run's: a doubled batch, both halves drawing from g
    assert torch.equal(engine.images([job]), expected)


def test_a_job_reads_names_and_one_seed_for_all(engine):
    job = engine.job(classes=["Zebra", 1], count=2, seeds=40, sampler="ddim", num_steps=2)
    assert job == Job((9, 1), (40, 41), "ddim", 2, 2.0, 1.0)
    assert job.key == ("ddim", 2, 2.0, 1.0)
    one = engine.job(classes="cat", count=3, num_steps=2)
    assert one.labels == (2, 2, 2) and one.seeds == (0, 1, 2)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"classes": 12}, "outside 0..9"),
        ({"classes": "zebar"}, "did you mean 'zebra'"),
        ({"classes": None}, "classes is required"),
        ({"classes": [1, 2], "count": 3}, "2 classes for count=3"),
        ({"seeds": [1, 2], "count": 3}, "2 seeds for count=3"),
        ({"seeds": [-1]}, "seeds: a seed must lie in 0..4294967295"),
        ({"num_steps": 0}, "num_steps must lie in 1..1000"),
        ({"sampler": "ddimm"}, "did you mean 'ddim'"),
        ({"sampler": "ddim", "eta": -1}, "must be >= 0"),
    ],
)
def test_bad_settings_are_one_line(engine, settings, message):
    settings = {"classes": 1, **settings}
    with pytest.raises(ConfigError, match=message) as caught:
        engine.job(**settings)
    assert "\n" not in str(caught.value)


def test_dopri5_requests_are_never_batched():
    a = Job(None, (1,), "dopri5", 10, 1.0, 0.0)
    b = Job(None, (1,), "dopri5", 10, 1.0, 0.0)
    assert a.key != b.key and Job(None, (1,), "heun", 10, 1.0, 0.0).key == (
        Job(None, (2,), "heun", 10, 1.0, 0.0).key
    )


def test_a_folder_without_checkpoints_is_one_line(tmp_path):
    with pytest.raises(MissingFileError, match="holds no checkpoints"):
        Engine(tmp_path)


def test_the_steps_bound_of_the_server(tiny_run):
    engine = Engine(tiny_run, max_steps=8)
    with pytest.raises(ConfigError, match="num_steps must lie in 1..8 on this server"):
        engine.job(classes=1, num_steps=9)


@pytest.mark.slow
def test_the_onnx_backend_samples_what_pytorch_does(tiny_run, engine, tmp_path):
    """ONNX Runtime's graph behind every sampler: the same pictures as PyTorch's within a
    rounding step (float32 kernels differ in their last bits)."""
    onnx = Engine(tiny_run, backend="onnx")
    job = engine.job(classes=[1, 5], count=2, seeds=2, sampler="dpm_solver++", num_steps=4)
    (ours,) = onnx.sample([job])
    (torchs,) = engine.sample([job])
    assert np.abs(ours.astype(int) - torchs.astype(int)).max() <= 1


def test_the_bf16_backend_samples_finite_pictures_of_the_same_shape(tiny_run, engine):
    bf16 = Engine(tiny_run, backend="bf16")
    job = engine.job(classes=[1, 5], count=2, seeds=2, sampler="ddim", num_steps=2)
    images = bf16.images([job])
    assert bf16.precision == "bf16" and images.dtype == torch.float32
    assert images.shape == engine.images([job]).shape and bool(torch.isfinite(images).all())


def test_onnx_on_a_gpu_is_refused_in_one_line(tiny_run):
    with pytest.raises(ConfigError, match="--backend onnx runs ONNX Runtime on the CPU"):
        Engine(tiny_run, device="cuda", backend="onnx")
