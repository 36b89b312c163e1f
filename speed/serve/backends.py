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
call (`model(x, t, y)`, `forward_with_cfg`, `num_classes`).
"""

from __future__ import annotations

import tempfile
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
    input mixes eps_u + s (eps_c - eps_u) inside one call on the N conditional rows, so
    `forward_with_cfg` runs the graph on the first half of its doubled batch and returns that
    output twice, the shape the model's own `forward_with_cfg` returns. A graph with guidance is
    called with scale 1 for unguided sampling.
    """

    def __init__(self, path: Path, model: nn.Module, float_time: bool, threads: int = 0):
        manifest = {"time_input": "float32" if float_time else "int64"}
        self.session = OnnxDenoiser(path, manifest, threads=threads)
        self.num_classes, self.has_null_label = model.num_classes, model.has_null_label
        self.path = path

    def guided(self, x: torch.Tensor, t: torch.Tensor, y, scale: float) -> torch.Tensor:
        """The graph's output for x [N, ...]: guided by `scale` when the graph has guidance."""
        labels = None if y is None or self.num_classes == 0 else y.cpu().numpy()
        out = self.session(x.cpu().numpy(), t.cpu().numpy(), labels, scale)
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        return self.guided(x, t, y, 1.0)

    def forward_with_cfg(self, x, t, y, cfg_scale: float) -> torch.Tensor:
        half = x.shape[0] // 2
        out = self.guided(x[:half], t[:half], y[:half], float(cfg_scale))
        return torch.cat([out, out])


def onnx_model(
    model: nn.Module, spec, float_time: bool, exported: Path | None, workdir: Path | None = None
) -> OnnxModel:
    """The `OnnxModel` of `model` (on the CPU): the graph at `exported` when that file exists,
    else one exported now into `workdir` (default: a new temporary folder)."""
    if exported is None or not exported.is_file():
        workdir = Path(workdir or tempfile.mkdtemp(prefix="speed-serve-"))
        cpu = model.to("cpu")
        exported = export_onnx(cpu, workdir / "denoiser.onnx", spec.channels, spec.side, float_time)
    return OnnxModel(exported, model, float_time)


def check_backend(name: str, device: torch.device) -> str:
    """`name` if it is a backend this device can run; else a ConfigError naming the choices."""
    if name not in BACKENDS:
        raise ConfigError(f"--backend: unknown {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "onnx" and device.type != "cpu":
        raise ConfigError("--backend onnx runs ONNX Runtime on the CPU: pass --device cpu")
    return name
