"""The objective: training losses on fixed tensors against the formulas (and SiT's loss terms),
the model's time scaling, and the end-point defaults."""

import pytest
import torch

from speed.flow import create_interpolant
from speed.flow.paths import LinearPath

F64 = torch.float64


def fixed_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(4, 2, 3, 3, generator=g, dtype=F64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=F64)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=F64)
    return x0, eps, t


class Recorder(torch.nn.Module):
    """A fixed 'network': out = 0.5 x + 0.01 t_model, recording its inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, **kwargs):
        self.calls.append((t.clone(), kwargs))
        return 0.5 * x + 0.01 * t.reshape(-1, 1, 1, 1).to(x.dtype)


@pytest.mark.parametrize("path", ["linear", "gvp"])
def test_velocity_loss_is_sits_on_fixed_tensors(path):
    objective = create_interpolant(path=path)
    x0, eps, t = fixed_case()
    model = Recorder()
    terms = objective.training_losses(model, x0, t, {"y": "labels"}, noise=eps)
    p = objective.path
    tt = t.reshape(-1, 1, 1, 1)
    xt = p.alpha(tt) * x0 + p.sigma(tt) * eps
    # SiT: loss = mean_flat((model_output - ut)^2) with ut in its time: ours is -ut
    target = p.d_alpha(tt) * x0 + p.d_sigma(tt) * eps
    out = 0.5 * xt + 0.01 * 1000 * tt
    expected = ((out - target) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["mse"], expected)
    torch.testing.assert_close(terms["loss"], expected)
    seen_t, seen_kwargs = model.calls[0]
    torch.testing.assert_close(seen_t.double(), 1000 * t, rtol=1e-6, atol=1e-4)
    assert seen_kwargs == {"y": "labels"}


def test_noise_and_score_losses_on_fixed_tensors():
    x0, eps, t = fixed_case(1)
    tt = t.reshape(-1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * eps
    out = 0.5 * xt + 0.01 * tt  # time_scale = 1 below
    noise = create_interpolant(prediction="noise", time_scale=1.0, train_eps=0.0)
    got = noise.training_losses(Recorder(), x0, t, noise=eps)["mse"]
    torch.testing.assert_close(got, ((out - eps) ** 2).mean(dim=(1, 2, 3)))
    score = create_interpolant(prediction="score", time_scale=1.0, train_eps=0.0)
    got = score.training_losses(Recorder(), x0, t, noise=eps)["mse"]
    # SiT: mean_flat(weight * (model_output * sigma_t + x0)^2) with its x0 the noise
    torch.testing.assert_close(got, ((out * tt + eps) ** 2).mean(dim=(1, 2, 3)))


def test_weights_multiply_the_loss_only():
    objective = create_interpolant()
    x0, eps, t = fixed_case()
    w = torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=F64)
    terms = objective.training_losses(Recorder(), x0, t, noise=eps, weights=w)
    torch.testing.assert_close(terms["loss"], w * terms["mse"])
    with pytest.raises(ValueError, match="weights must have shape"):
        objective.training_losses(Recorder(), x0, t, noise=eps, weights=w[:2])


class MaskedRecorder(Recorder):
    """A fixed masked 'network': the training dict of MaskDiT and MDT (speed.models.maskdit,
    speed.models.mdt) around Recorder's prediction: visible = the first two rows of pixels, a
    second prediction -out, and an extra loss t / 1000."""

    def forward(self, x, t, **kwargs):
        out = super().forward(x, t, **kwargs)
        visible = torch.zeros_like(x[:, :1])
        visible[:, :, :2] = 1
        extra = {"mae": t.to(x.dtype) / 1000}
        return {"output": out, "masked_output": -out, "visible": visible, "losses": extra}


def test_a_masked_backbones_output_is_combined_as_for_ddpm():
    """MSE of the output over its visible pixels, plus the masked pass's MSE over all, both times
    the weights, plus the extra loss unweighted: the terms GaussianDiffusion builds."""
    objective = create_interpolant()  # linear path, velocity: target eps - x0
    x0, eps, t = fixed_case()
    w = torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=F64)
    terms = objective.training_losses(MaskedRecorder(), x0, t, noise=eps, weights=w)
    tt = t.reshape(-1, 1, 1, 1)
    out = 0.5 * ((1 - tt) * x0 + tt * eps) + 0.01 * 1000 * tt
    target = eps - x0
    mse = ((out - target) ** 2)[:, :, :2].mean(dim=(1, 2, 3))
    masked_mse = ((-out - target) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["mse"], mse)
    torch.testing.assert_close(terms["masked_mse"], masked_mse)
    torch.testing.assert_close(terms["mae"], t)
    torch.testing.assert_close(terms["loss"], w * mse + w * masked_mse + t)


def test_a_variance_channel_is_refused_with_a_hint():
    objective = create_interpolant()
    x0, eps, t = fixed_case()

    def model(x, t, **kwargs):
        return torch.cat([x, x], dim=1)

    with pytest.raises(ValueError, match="learn_sigma=false"):
        objective.training_losses(model, x0, t, noise=eps)


def test_sits_end_point_defaults():
    assert (create_interpolant().train_eps, create_interpolant().sample_eps) == (0.0, 0.0)
    noise = create_interpolant(prediction="noise")
    assert (noise.train_eps, noise.sample_eps) == (1e-3, 1e-3)
    vp = create_interpolant(path="vp")
    assert (vp.train_eps, vp.sample_eps) == (1e-5, 1e-3)
    assert vp.timestep_sampler.distribution.t_min == 1e-5


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="diffusion.path"):
        create_interpolant(path="cosine")
    with pytest.raises(ValueError, match="prediction"):
        create_interpolant(prediction="x0")
    with pytest.raises(ValueError, match="unknown diffusion.sampling 'logitnormal'.*logit_normal"):
        create_interpolant(sampling="logitnormal")


def test_log_timesteps_bucket_t_on_the_1000_scale():
    objective = create_interpolant()
    t = torch.tensor([0.0, 0.0995, 0.5, 1.0])
    assert objective.original_timesteps(t).tolist() == [0, 99, 500, 999]
    assert isinstance(objective.path, LinearPath)
