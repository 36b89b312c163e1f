"""Diffusion processes: schedules, the Gaussian diffusion, respacing, timestep sampling, samplers.

`create_diffusion` builds a diffusion from the config's `diffusion` node with DiT's argument names
and attaches SpeeD's (or another mode's) timestep sampler as `diffusion.timestep_sampler`.
"""

from __future__ import annotations

from speed.diffusion.gaussian_diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
)
from speed.diffusion.respace import SpacedDiffusion, respace, space_timesteps
from speed.diffusion.schedules import get_named_beta_schedule
from speed.diffusion.timesteps import build_timestep_sampler, option_names


def create_diffusion(
    timestep_respacing,
    noise_schedule: str = "linear",
    use_kl: bool = False,
    sigma_small: bool = False,
    predict_xstart: bool = False,
    learn_sigma: bool = True,
    rescale_learned_sigmas: bool = False,
    diffusion_steps: int = 1000,
    predict_v: bool = False,
    faster: bool = False,
    sampling: str | None = None,
    weighting: str | None = None,
    k: float = 5.0,
    lam: float = 0.6,
    tau: float = 700,
    **timestep_options,
) -> SpacedDiffusion:
    """Build a diffusion (DiT's `create_diffusion`, plus v-prediction and SpeeD's options).

    Args:
        timestep_respacing: "" or None for all `diffusion_steps` steps; "250", "10,15,20" or
            "ddim50" to keep a subset (see `space_timesteps`).
        noise_schedule: "linear", "cosine" (= "squaredcos_cap_v2"), "quad", "const", "sqrt_linear".
        use_kl: train on the variational bound (rescaled KL) instead of the MSE.
        sigma_small: with a fixed variance, use beta~_t instead of beta_t.
        predict_xstart / predict_v: the model predicts x_0 / v instead of eps.
        learn_sigma: the model also outputs the variance (learned range, hybrid loss).
        rescale_learned_sigmas: rescaled MSE (the VB term scaled by T / 1000).
        diffusion_steps: T of the original process.
        faster, sampling, weighting, k, lam, tau, **timestep_options: timestep sampling and loss
            weighting (`speed.diffusion.timesteps.build_timestep_sampler`; faster = SpeeD).
    Returns:
        a SpacedDiffusion with `timestep_sampler` set.
    """
    if predict_xstart and predict_v:
        raise ValueError("choose at most one of predict_xstart and predict_v")
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    if use_kl:
        loss_type = LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = LossType.RESCALED_MSE
    else:
        loss_type = LossType.MSE
    if predict_v:
        mean_type = ModelMeanType.VELOCITY
    else:
        mean_type = ModelMeanType.START_X if predict_xstart else ModelMeanType.EPSILON
    if learn_sigma:
        var_type = ModelVarType.LEARNED_RANGE
    else:
        var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    diffusion = SpacedDiffusion(
        use_timesteps=space_timesteps(diffusion_steps, timestep_respacing),
        betas=betas,
        model_mean_type=mean_type,
        model_var_type=var_type,
        loss_type=loss_type,
    )
    diffusion.timestep_sampler = build_timestep_sampler(
        diffusion.alphas_cumprod,
        timestep_map=diffusion.timestep_map,
        faster=faster,
        sampling=sampling,
        weighting=weighting,
        k=k,
        lam=lam,
        tau=tau,
        **timestep_options,
    )
    return diffusion


# The timestep-mode options that **timestep_options accepts, for config validation.
create_diffusion.extra_config_keys = option_names
create_diffusion.family = GaussianDiffusion.family  # which sampler family samples what it builds

__all__ = [
    "GaussianDiffusion",
    "LossType",
    "ModelMeanType",
    "ModelVarType",
    "SpacedDiffusion",
    "create_diffusion",
    "get_named_beta_schedule",
    "respace",
    "space_timesteps",
]
