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
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from speed.deploy.manifest import load_manifest
from speed.diffusion.samplers.common import stride_timesteps
from speed.errors import DataError

PARAMETERISATIONS = ("epsilon", "start_x", "velocity")  # what the network predicts (DDIM needs x_0)


# ONNX Runtime's input types -> the numpy dtypes fed to them
ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


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
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(self.inputs)

    def __call__(
        self, x, t, y=None, guidance_scale: float = 1.0, conditions: Mapping | None = None
    ) -> np.ndarray:
        """Model output [N, C_out, H, W] for x [N, C, H, W], timesteps t [N] (original scale, or
        time_scale * t for an interpolant's graph), labels y [N] (class-conditional graphs) or a
        caption condition {"y": embeddings [N, L, D] or ids [N, L], "mask": [N, L]} (caption
        graphs, as `speed.text.TextEncoder.condition` returns it), `guidance_scale` for graphs
        with guidance, and the other inputs by name in `conditions` ({"control": [N, C, h, w]},
        {"low_res": [N, C, l, l]}; the manifest's `conditions` lists them)."""
        time_dtype = np.float32 if self.manifest.get("time_input") == "float32" else np.int64
        feeds = {"x": x, "t": np.asarray(t, dtype=time_dtype)}
        if isinstance(y, Mapping):
            feeds.update(y)
        elif "y" in self.inputs and y is None:
            raise DataError("this denoiser is class-conditional: pass labels y")
        elif "y" in self.inputs:
            feeds["y"] = y
        feeds.update(conditions or {})
        if "guidance_scale" in self.inputs:
            feeds["guidance_scale"] = guidance_scale
        elif guidance_scale != 1.0:
            raise DataError("this denoiser has no null label, so no classifier-free guidance")
        return self.run(**feeds)

    def run(self, **inputs) -> np.ndarray:
        """The graph's output for its inputs by name (arrays or tensors); a missing, unknown or
        misshapen input, or one of another kind (floats for ids), is a DataError naming it and
        what the graph expects."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise DataError(
                f"this denoiser has no input {unknown[0]!r}; its inputs: {', '.join(self.inputs)}"
            )
        feeds = {name: self._checked(name, inputs.get(name)) for name in self.inputs}
        batch = {name: a.shape[0] for name, a in feeds.items() if a.ndim}
        if len(set(batch.values())) > 1:
            raise DataError(f"the inputs' batches differ: {batch}; give every input N rows")
        return self.session.run(None, feeds)[0]

    def _checked(self, name: str, value) -> np.ndarray:
        """`value` as the numpy array graph input `name` takes, or a one-line DataError."""
        spec = self.inputs[name]
        expected = [d if isinstance(d, int) else "N" for d in spec.shape]
        dtype = ORT_TYPES[spec.type]
        wanted = f"{name} {expected} {np.dtype(dtype).name}"
        described = {c["name"]: c.get("what") for c in self.manifest.get("conditions", ())}
        if value is None:
            what = f" ({described[name]})" if described.get(name) else ""
            raise DataError(f"this denoiser needs input {wanted}{what}; it is missing")
        array = np.asarray(value.cpu() if hasattr(value, "cpu") else value)
        kind, given = np.dtype(dtype).kind, array.dtype.kind
        if kind in "ib" and given not in "uib" or kind == "f" and given == "b":
            raise DataError(f"input {name} must be {wanted}, got {array.dtype.name} values")
        sizes = zip(expected, array.shape)
        if array.ndim != len(expected) or any(e not in ("N", a) for e, a in sizes):
            raise DataError(f"input {name} must be {wanted}, got shape {list(array.shape)}")
        return array.astype(dtype, copy=False)


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
    conditions: Mapping | None = None,
) -> np.ndarray:
    """Sample x_0 [N, C, H, W] (float32) from noise x_T [N, C, H, W] in `num_steps` DDIM steps.

    Args:
        labels: class indices [N] for a class-conditional denoiser, or a caption condition
            {"y", "mask"} for a caption-conditioned one (`OnnxDenoiser`'s y).
        eta: stochasticity, 0 (deterministic) to 1; noise from `rng` (default: seed 0).
        guidance_scale: classifier-free guidance scale (1 = none).
        clip_denoised: clamp the x_0 prediction to [-1, 1] (pixel space), eps recomputed from it.
        callback: fn(step_index, t, x, pred_xstart) after every step.
        conditions: the graph's other inputs by name, N rows each (`OnnxDenoiser`'s), e.g.
            {"control": control images} or {"low_res": low-resolution images}.
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
        out = denoiser(x, t, labels, guidance_scale, conditions)[:, :channels]
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
