"""Sampling with an exported denoiser in ONNX Runtime: no PyTorch model, only the `.onnx` file
and its manifest (`speed.deploy.manifest`).

`OnnxDenoiser` runs the graph on numpy arrays; `ddim_sample` is DDIM (Song et al. 2021, eq. 12)
written from the manifest's schedule alone, on the same strided timesteps as the PyTorch sampler
"ddim" (`speed.diffusion.samplers.common.stride_timesteps`) and with its float32 arithmetic, so
the two give the same images from the same noise when eta = 0. With eta > 0 its noise comes from
a numpy Generator: the same distribution as PyTorch's, not the same draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from speed.deploy.manifest import load_manifest
from speed.diffusion.samplers.common import stride_timesteps

PARAMETERISATIONS = ("epsilon", "start_x", "velocity")  # what the network predicts (DDIM needs x_0)


class OnnxDenoiser:
    """An exported denoiser in an ONNX Runtime session (CPU), with its manifest.

    Args:
        path: the `.onnx` file; its manifest is the `.json` of the same stem unless given.
        threads: intra-op threads (0 = ONNX Runtime's default, one per core).
    """

    def __init__(self, path: str | os.PathLike, manifest: dict | None = None, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        self.manifest = (
            manifest if manifest is not None else load_manifest(path.with_suffix(".json"))
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, x, t, y=None, guidance_scale: float = 1.0) -> np.ndarray:
        """Model output [N, C_out, H, W] for x [N, C, H, W], timesteps t [N] (original scale, or
        time_scale * t for an interpolant's graph),
        labels y [N] (class-conditional graphs); `guidance_scale` for graphs with guidance."""
        time_dtype = np.float32 if self.manifest.get("time_input") == "float32" else np.int64
        feeds = {"x": np.asarray(x, dtype=np.float32), "t": np.asarray(t, dtype=time_dtype)}
        if "y" in self.input_names:
            if y is None:
                raise ValueError("this denoiser is class-conditional: pass labels y")
            feeds["y"] = np.asarray(y, dtype=np.int64)
        if "guidance_scale" in self.input_names:
            feeds["guidance_scale"] = np.asarray(guidance_scale, dtype=np.float32)
        elif guidance_scale != 1.0:
            raise ValueError("this denoiser has no null label, so no classifier-free guidance")
        return self.session.run(None, feeds)[0]


def _xstart(parameterisation: str, out, x, abar: float):
    """x_0 from the network output (float32, coefficients rounded to float32 like PyTorch's)."""
    f32 = np.float32
    if parameterisation == "epsilon":
        return f32(np.sqrt(1.0 / abar)) * x - f32(np.sqrt(1.0 / abar - 1.0)) * out
    if parameterisation == "start_x":
        return out
    if parameterisation == "velocity":
        return f32(np.sqrt(abar)) * x - f32(np.sqrt(1.0 - abar)) * out
    raise ValueError(f"unknown parameterisation {parameterisation!r}")


def ddim_sample(
    denoiser: OnnxDenoiser,
    noise: np.ndarray,
    labels: np.ndarray | None = None,
    num_steps: int = 25,
    *,
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    clip_denoised: bool = False,
    rng: np.random.Generator | None = None,
    callback: Callable | None = None,
) -> np.ndarray:
    """Sample x_0 [N, C, H, W] (float32) from noise x_T [N, C, H, W] in `num_steps` DDIM steps.

    Args:
        labels: class indices [N] for a class-conditional denoiser.
        eta: stochasticity, 0 (deterministic) to 1; noise from `rng` (default: seed 0).
        guidance_scale: classifier-free guidance scale (1 = none).
        clip_denoised: clamp the x_0 prediction to [-1, 1] (pixel space), eps recomputed from it.
        callback: fn(step_index, t, x, pred_xstart) after every step.
    """
    manifest = denoiser.manifest
    if manifest.get("objective", "gaussian") != "gaussian":
        raise ValueError(
            f"ddim_sample needs a Gaussian diffusion's denoiser; this one was trained with the "
            f"{manifest['objective']} objective (integrate its ODE, see the manifest)"
        )
    abar = np.asarray(manifest["schedule"]["alphas_cumprod"], dtype=np.float64)
    total = len(abar)
    if not 1 <= num_steps <= total or eta < 0:
        raise ValueError(f"need 1 <= num_steps <= {total} and eta >= 0, got {num_steps}, {eta}")
    parameterisation = manifest["parameterisation"]
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"ddim_sample cannot use a {parameterisation!r} model; it needs one of "
            f"{', '.join(PARAMETERISATIONS)}"
        )
    channels = manifest["image"]["channels"]
    rng = rng if rng is not None else np.random.default_rng(0)
    kept = stride_timesteps(total, num_steps)
    x = np.asarray(noise, dtype=np.float32)
    f32 = np.float32
    for step, i in enumerate(reversed(range(len(kept)))):
        a, a_prev = abar[kept[i]], abar[kept[i - 1]] if i > 0 else 1.0
        t = np.full(x.shape[0], kept[i], dtype=np.int64)
        out = denoiser(x, t, labels, guidance_scale)[:, :channels]
        x0 = _xstart(parameterisation, out, x, a)
        if clip_denoised:
            x0 = np.clip(x0, -1.0, 1.0)
        eps = (f32(np.sqrt(1.0 / a)) * x - x0) / f32(np.sqrt(1.0 / a - 1.0))
        sigma = eta * np.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
        x = x0 * f32(np.sqrt(a_prev)) + f32(np.sqrt(1.0 - a_prev - sigma**2)) * eps
        if sigma > 0:
            x = x + f32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)
        if callback is not None:
            callback(step, kept[i], x, x0)
    return x
