"""Mixed precision by name: the config's `precision` key (fp32 | bf16 | fp16) as an autocast dtype,
read by training (the whole forward and loss) and by sampling (the denoiser's forward only).

Sampling keeps the sampler's arithmetic in float32: `autocast_denoiser` runs the model's forward
under autocast and hands its output back as float32, so every update x_t -> x_{t-1}, the added
noise and the decoded images are float32 tensors, as in a float32 run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from speed.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a `precision` name (None for fp32); an unknown name is a
    ConfigError naming the key."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: unknown '{precision}'; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast_denoiser(model_fn: Callable, precision: str, device_type: str) -> Callable:
    """`model_fn(x, t, **kwargs)` run under autocast in `precision`'s dtype on `device_type`
    ("cpu", "cuda"), returning float32; `model_fn` itself for fp32.

    Under autocast the matrix multiplies and convolutions run in bf16/fp16 (torch's autocast op
    lists decide which ops). With classifier-free guidance `model_fn` is the model's
    `forward_with_cfg`, so the mix eps_u + s (eps_c - eps_u) is made from the low-precision
    outputs, before the cast.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:
        return model_fn

    @functools.wraps(model_fn)
    def denoiser(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type, dtype=dtype):
            out = model_fn(x, t, **kwargs)
        return out.float()

    return denoiser
