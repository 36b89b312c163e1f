"""How the service runs its model: `BACKENDS` maps a name to the sampling precision and the
wrapping of the loaded PyTorch model.

    fp32     the model as trained, float32 throughout
    bf16     the model's forward under bfloat16 autocast; the sampler's arithmetic stays float32
             (`speed.utils.precision.autocast_denoiser`)
    compile  float32, the model's forward compiled by torch.compile (the first batch of each
             shape pays the compilation)
    onnx     the denoiser as an ONNX graph in ONNX Runtime (CPU): the run's `export/<ckpt>.onnx`
             when the `export` phase wrote one, else exported at start-up into a temporary folder

Every backend serves every sampler: the ONNX graph sits behind the model interface the samplers
call (`model(x, t, y)`, `forward_with_cfg`, `num_classes`). A text-to-image model's graph takes
the caption condition its text encoder makes (`speed.text`, run in PyTorch): y (embeddings or byte
ids) and mask, the graph inputs of `speed.deploy.conditions.caption_inputs`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speed.deploy.onnx_graph import export_onnx
from speed.deploy.onnx_sampling import OnnxDenoiser
from speed.errors import ConfigError

BACKENDS = {"fp32": "fp32", "bf16": "bf16", "compile": "fp32", "onnx": "fp32"}  # -> precision


class OnnxModel:
    """`model`'s ONNX graph in an ONNX Runtime session, called like the model.

    The graph folds guidance in (`speed.deploy.onnx_graph.DenoiserGraph`): its `guidance_scale`
    input mixes eps_u + s (eps_c - eps_u) inside one call on the N conditional rows (the null
    label or null caption added inside), so `forward_with_cfg` runs the graph on the first half
    of its doubled batch and returns that output twice, the shape the model's own
    `forward_with_cfg` returns; the second half's labels or `force_drop_ids` are not read. A
    graph with guidance is called with scale 1 for unguided sampling.
    """

    def __init__(self, path: Path, model: nn.Module, float_time: bool, threads: int = 0):
        manifest = {"time_input": "float32" if float_time else "int64"}
        self.session = OnnxDenoiser(path, manifest, threads=threads)
        self.num_classes, self.has_null_label = model.num_classes, model.has_null_label
        self.path = path

    def guided(self, x: torch.Tensor, t: torch.Tensor, y, scale: float, mask=None) -> torch.Tensor:
        """The graph's output for x [N, ...]: guided by `scale` when the graph has guidance. y:
        labels [N], or with `mask` [N, L] a caption's y (embeddings [N, L, D] or ids [N, L])."""
        if mask is not None:
            condition = {"y": y.cpu().numpy(), "mask": mask.cpu().numpy()}
        else:
            condition = None if y is None or self.num_classes == 0 else y.cpu().numpy()
        out = self.session(x.cpu().numpy(), t.cpu().numpy(), condition, scale)
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None, mask=None) -> torch.Tensor:
        return self.guided(x, t, y, 1.0, mask)

    def forward_with_cfg(self, x, t, y, cfg_scale: float, mask=None, force_drop_ids=None):
        half = x.shape[0] // 2
        mask = None if mask is None else mask[:half]
        out = self.guided(x[:half], t[:half], y[:half], float(cfg_scale), mask)
        return torch.cat([out, out])


def onnx_model(
    model: nn.Module,
    spec,
    float_time: bool,
    exported: Path | None,
    workdir: Path | None = None,
    extras: Sequence = (),
) -> OnnxModel:
    """The `OnnxModel` of `model` (on the CPU): the graph at `exported` when that file exists,
    else one exported now into `workdir` (default: a new temporary folder) with the graph inputs
    `extras` beyond x, t, y (`speed.deploy.conditions`: a caption's y and mask)."""
    if exported is None or not exported.is_file():
        workdir = Path(workdir or tempfile.mkdtemp(prefix="speed-serve-"))
        path, cpu = workdir / "denoiser.onnx", model.to("cpu")
        exported = export_onnx(cpu, path, spec.channels, spec.side, float_time, extras)
    return OnnxModel(exported, model, float_time)


def check_backend(name: str, device: torch.device) -> str:
    """`name` if it is a backend this device can run; else a ConfigError naming the choices."""
    if name not in BACKENDS:
        raise ConfigError(f"--backend: unknown {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "onnx" and device.type != "cpu":
        raise ConfigError("--backend onnx runs ONNX Runtime on the CPU: pass --device cpu")
    return name
