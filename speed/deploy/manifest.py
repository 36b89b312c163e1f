"""The JSON that travels with an exported denoiser: everything a sampler outside PyTorch needs.

    {
      "format": "speed-onnx-denoiser/1",
      "onnx": "0004000.onnx",                 file name, beside this JSON
      "checkpoint": {"file": ..., "step": 4000, "weights": "ema" | "model"},
      "inputs": ["x", "t", "y", "guidance_scale"], "output": "model_output",
                                              (the graph's input names in order; a model with
                                              more inputs has them before guidance_scale)
      "objective": "gaussian" | "interpolant",
      "time_input": "int64" | "float32",      t: original timesteps, or time_scale * t
    a Gaussian diffusion's denoiser:
      "schedule": {"num_timesteps": T, "betas": [T floats], "alphas_cumprod": [T floats]},
      "parameterisation": "epsilon" | "start_x" | "velocity" | "previous_x",
      "variance": "fixed_small" | "fixed_large" | "learned" | "learned_range",
      "learn_sigma": bool,                    output has 2C channels, variance values last
    an interpolant's (flow matching, `speed.flow`):
      "interpolant": {"path": "linear" | "gvp" | "vp", "prediction": "velocity" | "noise" |
                      "score", "time_scale": s, "sample_eps": e},
                                              x_t = alpha_t x_0 + sigma_t eps, t = 1 noise;
                                              the graph takes s t; integrate t from 1 - e to e
      "image": {"channels": C, "side": h, "pixel_side": H, "autoencoder": name,
                "latent_scale": s},           x is [N, C, h, h]; pixels = decode(x) for latents
      "classes": {"num_classes": K, "null_label": K or null, "names": [...] or null},
      "guidance": {"folded": true, "input": "guidance_scale", "guided_channels": g,
                   "null": "label" | "caption"} or null,
      "conditions": [{"name": ..., "shape": ["N", ...], "dtype": ..., "what": ..., ...}],
                                              the inputs beyond x, t, y and the guidance scale
                                              (`speed.deploy.conditions`): a caption's y and
                                              mask with the text encoder to run, a ControlNet's
                                              control (transform, folded scale), an upsampler's
                                              low_res (its degradation); [] for none
      "settings": {"sampler": ..., "num_steps": ..., "eta": ..., "guidance_scale": ...,
                   "clip_denoised": ...},     the run's sampling settings, as defaults
      "export": {"opset": 18, "torch": version, "check_batch": 2, "max_abs_diff": float}
    }

The schedule is the original (unrespaced) one in float64; a sampler picks its own timesteps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from speed.errors import DataError, MissingFileError
from speed.utils.atomic import atomic_write

FORMAT = "speed-onnx-denoiser/1"


def gaussian_fields(diffusion) -> dict:
    """A Gaussian diffusion's part of the manifest: its schedule and parameterisation."""
    return {
        "time_input": "int64",
        "schedule": {
            "num_timesteps": int(diffusion.original_num_steps),
            "betas": [float(b) for b in diffusion.base_betas],
            "alphas_cumprod": [float(a) for a in diffusion.base_alphas_cumprod],
        },
        "parameterisation": diffusion.model_mean_type.name.lower(),
        "variance": diffusion.model_var_type.name.lower(),
        "learn_sigma": bool(diffusion.learns_variance),
    }


def interpolant_fields(objective) -> dict:
    """An interpolant's part of the manifest: path, prediction and the time the graph takes."""
    return {
        "time_input": "float32",
        "interpolant": {
            "path": objective.path.name,
            "prediction": objective.prediction,
            "time_scale": objective.time_scale,
            "sample_eps": objective.sample_eps,
        },
        "learn_sigma": False,
    }


# The manifest's objective part, by the objective's `family`.
OBJECTIVE_FIELDS = {"gaussian": gaussian_fields, "interpolant": interpolant_fields}


def describe(
    diffusion,
    model: nn.Module,
    graph_inputs: tuple[str, ...],
    output_name: str,
    image: dict,
    class_names: list[str] | None,
    conditions: Sequence = (),
) -> dict:
    """The manifest's model part: schedule, parameterisation, inputs, shapes, classes, guidance.

    Args:
        diffusion: the run's objective (`GaussianDiffusion`: its base schedule is written; an
            `Interpolant`: its path, prediction and time scale).
        model: the exported backbone (`num_classes`, `has_null_label`, `guided_channels`).
        image: {"channels", "side", "pixel_side", "autoencoder", "latent_scale"}.
        conditions: the graph's other inputs (`speed.deploy.conditions.GraphInput`s).
    """
    null_label = model.num_classes if model.has_null_label and model.num_classes else None
    caption = any(c.caption for c in conditions)
    return {
        "format": FORMAT,
        "inputs": list(graph_inputs),
        "output": output_name,
        "objective": diffusion.family,
        **OBJECTIVE_FIELDS[diffusion.family](diffusion),
        "image": dict(image),
        "classes": {
            "num_classes": int(model.num_classes),
            "null_label": null_label,
            "names": list(class_names) if class_names else None,
        },
        "guidance": (
            {
                "folded": True,
                "input": "guidance_scale",
                "guided_channels": model.guided_channels,
                "null": "caption" if caption else "label",
            }
            if "guidance_scale" in graph_inputs
            else None
        ),
        "conditions": [c.describe() for c in conditions],
    }


def save_manifest(manifest: dict, path: str | os.PathLike) -> Path:
    return atomic_write(path, json.dumps(manifest, indent=1) + "\n")


def load_manifest(path: str | os.PathLike) -> dict:
    """Read a manifest; MissingFileError when absent, DataError when not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"no manifest {path}; an exported .onnx needs the .json the export phase writes "
            "beside it"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a manifest of format {FORMAT}")
    return manifest
