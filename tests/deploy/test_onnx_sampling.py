"""DDIM over an exported denoiser: known answers on an analytic denoiser, and the same images as
PyTorch's "ddim" sampler from the same noise through ONNX Runtime.

The analytic denoiser: data x_0 ~ N(MU, S^2 I) has the exact eps prediction
eps*(x_t, t) = sqrt(1 - abar) (x_t - sqrt(abar) MU) / (abar S^2 + 1 - abar), and the probability
flow ODE from timestep t maps x_t to MU + S (x_t - sqrt(abar_t) MU) / sqrt(abar_t S^2 + 1 - abar_t).
"""

import numpy as np
import pytest
import torch

from speed.autoencoders import Identity
from speed.deploy.manifest import describe
from speed.deploy.onnx_graph import OUTPUT_NAME, DenoiserGraph
from speed.deploy.onnx_sampling import OnnxDenoiser, ddim_sample
from speed.diffusion import create_diffusion
from speed.generation import generate, grid_noise
from speed.runners.build import DataSpec
from speed.utils.images import to_uint8

MU, S = 0.3, 0.5
SIDE = 8  # the side of conftest's tiny models
ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))


class GaussianDenoiser:
    """The exact network output (eps, x_0 or v) for N(MU, S^2) data, with a manifest."""

    def __init__(self, parameterisation="epsilon"):
        self.manifest = {
            "schedule": {"alphas_cumprod": ABAR.tolist()},
            "image": {"channels": 1},
            "parameterisation": parameterisation,
        }

    def __call__(self, x, t, y=None, guidance_scale=1.0, conditions=None):
        a = ABAR[t].reshape(-1, 1, 1, 1)
        eps = np.sqrt(1 - a) * (x - np.sqrt(a) * MU) / (a * S**2 + 1 - a)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        v = np.sqrt(a) * eps - np.sqrt(1 - a) * x0
        out = {"epsilon": eps, "start_x": x0, "velocity": v}[self.manifest["parameterisation"]]
        return out.astype(np.float32)


def gaussian_noise(n=256):
    return np.random.default_rng(0).standard_normal((n, 1, 4, 4)).astype(np.float32)


@pytest.mark.parametrize("parameterisation", ["epsilon", "start_x", "velocity"])
def test_deterministic_ddim_follows_the_exact_flow(parameterisation):
    noise = gaussian_noise()
    out = ddim_sample(GaussianDenoiser(parameterisation), noise, num_steps=1000)
    exact = MU + S * (noise - np.sqrt(ABAR[999]) * MU) / np.sqrt(ABAR[999] * S**2 + 1 - ABAR[999])
    assert np.abs(out - exact).max() < 1e-2


def ddim_moments(num_steps: int, eta: float) -> tuple[float, float]:
    """Mean and variance of DDIM's output from N(0, 1) on the analytic denoiser, exactly: each
    step is affine in x (A x + B) plus independent noise of variance sigma^2."""
    kept = list(range(0, 1000, 1000 // num_steps))
    mean, var = 0.0, 1.0
    for i in reversed(range(len(kept))):
        a, ap = ABAR[kept[i]], ABAR[kept[i - 1]] if i > 0 else 1.0
        e1, e0 = (
            np.sqrt(1 - a) / (a * S**2 + 1 - a),
            -np.sqrt(1 - a) * np.sqrt(a) * MU / (a * S**2 + 1 - a),
        )
        sigma2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        k = np.sqrt(1 - ap - sigma2)
        A = np.sqrt(ap) * (1 - np.sqrt(1 - a) * e1) / np.sqrt(a) + k * e1
        B = -np.sqrt(ap) * np.sqrt(1 - a) * e0 / np.sqrt(a) + k * e0
        mean, var = A * mean + B, A**2 * var + sigma2
    return mean, var


def test_stochastic_ddim_has_the_exact_moments():
    """eta = 1, 100 steps: 4096 values (standard errors 0.007 for the mean, 0.005 for the std)."""
    mean, var = ddim_moments(100, eta=1.0)
    out = ddim_sample(GaussianDenoiser(), gaussian_noise(), num_steps=100, eta=1.0)
    assert abs(out.mean() - mean) < 0.03 and abs(out.std() - np.sqrt(var)) < 0.02
    assert abs(np.sqrt(var) - np.sqrt(ddim_moments(100, eta=0.0)[1])) > 0.01  # eta matters
    again = ddim_sample(GaussianDenoiser(), gaussian_noise(), num_steps=100, eta=1.0)
    assert np.array_equal(out, again)  # the default generator is seeded


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_steps"):
        ddim_sample(GaussianDenoiser(), gaussian_noise(2), num_steps=0)
    with pytest.raises(ValueError, match="previous_x"):
        ddim_sample(GaussianDenoiser("previous_x"), gaussian_noise(2), num_steps=2)


@pytest.mark.parametrize("name,clip", [("unet", True), ("dit", False)])
def test_onnx_grid_equals_the_pytorch_grid(exported, name, clip):
    """A 5 x 2 grid (classes x seeds), DDIM-10 with guidance 2: the PyTorch sampler and the
    ONNX Runtime loop, from the same noise, agree to 1e-4 (relative, or absolute in [-1, 1]) and
    as uint8 pictures to one grey level. Unclipped, the random DiT drifts far outside [-1, 1]."""
    model, path = exported(name)
    learn_sigma = model.out_channels == 2 * model.in_channels
    diffusion = create_diffusion("", learn_sigma=learn_sigma)
    spec = DataSpec(channels=model.in_channels, side=SIDE, num_classes=model.num_classes)
    noise = grid_noise(spec, rows=model.num_classes, seeds=2, seed=3, device="cpu")
    labels = torch.arange(model.num_classes).repeat_interleave(2)
    options = {"num_steps": 10, "guidance_scale": 2.0, "clip_denoised": clip}
    expected = generate(model, diffusion, Identity(), noise, labels, sampler="ddim", **options)

    image = {"channels": spec.channels, "side": SIDE}
    manifest = describe(
        diffusion, model, DenoiserGraph(model).input_names, OUTPUT_NAME, image, None
    )
    got = ddim_sample(
        OnnxDenoiser(path, manifest, threads=1), noise.numpy(), labels.numpy(), **options
    )
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
    grey = to_uint8(torch.from_numpy(got)).astype(int) - to_uint8(expected).astype(int)
    assert np.abs(grey).max() <= 1 and (grey != 0).mean() < 0.01
