"""The interpolant (flow-matching) objective, a peer of `speed.diffusion`: paths, the objective,
its continuous-time timestep distributions and its samplers (`speed.flow.samplers`).

`create_interpolant` builds it from the config's `diffusion` node:

    diffusion:
      _target_: speed.flow.create_interpolant
      path: linear          # linear | gvp | vp
      prediction: velocity  # velocity | noise | score
      sampling: uniform     # uniform | logit_normal | lognormal | speed
"""

from __future__ import annotations

from speed.flow.interpolant import Interpolant
from speed.flow.paths import PATHS, PREDICTIONS
from speed.flow.timesteps import build_time_sampler, time_option_names

# SiT's end-point defaults (`create_transport`): the noise and score predictions divide by
# alpha or sigma at the ends, so they keep 1e-3 away from them; VP's sigma vanishes at t = 0.
EPS_DEFAULTS = {  # (path, predicts velocity) -> (train_eps, sample_eps)
    ("linear", True): (0.0, 0.0),
    ("gvp", True): (0.0, 0.0),
    ("linear", False): (1e-3, 1e-3),
    ("gvp", False): (1e-3, 1e-3),
    ("vp", True): (1e-5, 1e-3),
    ("vp", False): (1e-5, 1e-3),
}


def create_interpolant(
    path: str = "linear",
    prediction: str = "velocity",
    time_scale: float = 1000.0,
    train_eps: float | None = None,
    sample_eps: float | None = None,
    faster: bool = False,
    sampling: str | None = None,
    weighting: str | None = None,
    k: float = 5.0,
    lam: float = 0.6,
    tau: float = 700,
    **timestep_options,
) -> Interpolant:
    """Build an interpolant objective (SiT's `create_transport`, plus the time distributions).

    Args:
        path: "linear" (rectified flow), "gvp" or "vp" (`speed.flow.paths`).
        prediction: what the network predicts: "velocity", "noise" or "score".
        time_scale: the model is called with time_scale * t (1000: the backbones' timestep
            range; 1: SiT's and REPA's raw t).
        train_eps, sample_eps: keep training times in [eps, 1 - eps] and sampling in
            [sample_eps, 1 - sample_eps]; None = SiT's defaults (`EPS_DEFAULTS`).
        faster, sampling, weighting, k, lam, tau, **timestep_options: the training-time
            distribution and loss weights (`speed.flow.timesteps.build_time_sampler`; faster =
            SpeeD in continuous time, tau on DDPM's 1000-step scale).
    """
    if path not in PATHS:
        raise ValueError(f"unknown diffusion.path {path!r}; choose one of {sorted(PATHS)}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"diffusion.prediction must be one of {PREDICTIONS}, got {prediction!r}")
    default_train, default_sample = EPS_DEFAULTS[(path, prediction == "velocity")]
    train_eps = default_train if train_eps is None else train_eps
    sample_eps = default_sample if sample_eps is None else sample_eps
    the_path = PATHS[path]()
    sampler = build_time_sampler(
        the_path,
        train_eps,
        1.0 - train_eps,
        faster=faster,
        sampling=sampling,
        weighting=weighting,
        k=k,
        lam=lam,
        tau=tau,
        **timestep_options,
    )
    return Interpolant(the_path, prediction, time_scale, train_eps, sample_eps, sampler)


create_interpolant.extra_config_keys = time_option_names  # for config validation
create_interpolant.family = Interpolant.family  # which sampler family samples what it builds

__all__ = ["Interpolant", "create_interpolant"]
