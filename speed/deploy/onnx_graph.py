"""The denoiser as an ONNX graph: a wrapper whose inputs are plain tensors, its export with a
dynamic batch, and the check that ONNX Runtime computes what PyTorch computes.

Graph inputs, in this order (N, the batch, is dynamic):
    x               float32 [N, C, H, W]  the noisy input (latents in latent space)
    t               int64 [N]             original timesteps 0..T-1 (Gaussian diffusion), or
                    float32 [N]           time_scale * t of an interpolant (`float_time`)
    y               int64 [N]             class labels (class-conditional models only)
    ...             the model's other inputs (`speed.deploy.conditions`): a caption's y and
                    mask, a ControlNet's control, an upsampler's low_res
    guidance_scale  float32 []            (models trained with label or caption dropout only)
Graph output:
    model_output    float32 [N, C_out, H, W]  what the network predicts (eps, x_0 or v; with a
                                              learned variance C_out = 2C, variance values last)

Classifier-free guidance (Ho & Salimans 2022) is folded into the graph rather than left to the
caller as a batch of two: the graph runs the network on [x; x] with labels [y; null] (a caption
model: the captions twice, the second half replaced by the null caption through
`force_drop_ids`) and mixes eps_uncond + s (eps_cond - eps_uncond) through `forward_with_cfg`, the
PyTorch path itself, so DiT's convention of guiding only some channels is kept, and a serving loop
makes one call per step with no knowledge of the null label or of which channels are guided. A
control or low-res image is given to both halves. The scale is an input, so one file serves every
scale; s = 1 gives the conditional prediction (both halves still run).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speed.models.guidance import guided_condition
from speed.utils.atomic import atomic_path

OPSET = 18  # ONNX opset of the exported graph
OUTPUT_NAME = "model_output"


class DenoiserGraph(nn.Module):
    """`model` (a `speed.models.conditional.ConditionalBackbone`, e.g. DiT, the ADM UNet, PixArt,
    or a `speed.control.ControlledModel`) with the graph's inputs as positional arguments, in
    `input_names` order: x, t, y for a class-conditional model, the `extras`
    (`speed.deploy.conditions.GraphInput`), guidance_scale when the model has a null label or
    caption. Returns the model output [N, C_out, H, W]. `float_time`: t is float32 (an
    interpolant's continuous time) instead of int64 timesteps."""

    def __init__(self, model: nn.Module, float_time: bool = False, extras: Sequence = ()):
        super().__init__()
        self.model = model
        self.float_time = float_time
        self.extras = tuple(extras)
        self.conditional = model.num_classes > 0
        self.guided = bool(model.has_null_label)

    @property
    def input_names(self) -> tuple[str, ...]:
        labels = ("y",) if self.conditional else ()
        guidance = ("guidance_scale",) if self.guided else ()
        return ("x", "t", *labels, *(e.name for e in self.extras), *guidance)

    def forward(self, *inputs):
        named = dict(zip(self.input_names, inputs))
        x, t = named.pop("x"), named.pop("t")
        scale = named.pop("guidance_scale", None)
        caption = {e.name: named.pop(e.name) for e in self.extras if e.caption}
        condition = caption or named.pop("y", None)  # labels [N], a caption, or None
        if scale is None:
            kwargs = caption or {"y": condition}
            return self.model(x, t, **kwargs, **named)
        kwargs = guided_condition(self.model, condition)  # [cond; uncond], 2N rows
        kwargs.update({name: torch.cat([value, value]) for name, value in named.items()})
        both = self.model.forward_with_cfg(
            torch.cat([x, x]), torch.cat([t, t]), cfg_scale=scale, **kwargs
        )  # [2N, C_out, H, W], both halves guided
        return both[: x.shape[0]]

    def example_inputs(self, batch: int, channels: int, side: int, seed: int = 0) -> tuple:
        """Random inputs of the graph's names: `batch` images, timesteps spread over 0..T-1 (T =
        1000; uniform on [0, 1000) with `float_time`), labels over the classes, the extras'
        `example`s, guidance scale 2."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, channels, side, side, generator=g)
        if self.float_time:
            t = 1000 * torch.rand(batch, generator=g)
        else:
            t = torch.randint(0, 1000, (batch,), generator=g)
        inputs = [x, t]
        if self.conditional:
            inputs.append(torch.randint(0, self.model.num_classes, (batch,), generator=g))
        inputs += [extra.example(batch, g) for extra in self.extras]
        if self.guided:
            inputs.append(torch.tensor(2.0))
        return tuple(inputs)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    channels: int,
    side: int,
    float_time: bool = False,
    extras: Sequence = (),
) -> Path:
    """Write `model` (in eval mode, on the CPU) as one self-contained ONNX file at `path`
    (atomically), with the inputs of `DenoiserGraph` (`extras`: the model's other inputs) and a
    dynamic batch. Uses torch.onnx's exporter based on torch.export (`dynamo=True`). Returns
    `path`."""
    graph = DenoiserGraph(model, float_time, extras).eval()
    inputs = graph.example_inputs(2, channels, side)
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple(None if name == "guidance_scale" else {0: batch} for name in graph.input_names)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # every input shares the batch axis; the exporter says so once per extra input
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
        torch.onnx.export(
            graph,
            inputs,
            str(tmp),
            input_names=list(graph.input_names),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dynamic,),  # of forward(*inputs)
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


@torch.no_grad()
def max_difference(graph: DenoiserGraph, session_fn, channels: int, side: int, batch: int) -> float:
    """Largest |ONNX Runtime - PyTorch| over the outputs of `graph` for random inputs of `batch`
    images; `session_fn(**{name: numpy array})` runs the exported graph (e.g. an
    `OnnxDenoiser`'s `run`)."""
    inputs = graph.eval().example_inputs(batch, channels, side, seed=1)
    expected = graph(*inputs).numpy()
    got = session_fn(**{name: i.numpy() for name, i in zip(graph.input_names, inputs)})
    return float(np.abs(got - expected).max())
