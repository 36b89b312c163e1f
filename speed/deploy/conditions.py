"""The graph inputs a denoiser takes beyond x, t, y and the guidance scale, each with what a
caller must know to make it (the manifest's `conditions`):

    y, mask   a caption-conditioned model (PixArt, `speed.text`): caption embeddings
              [N, L, D] float32 of a frozen text encoder (T5, CLIP) the caller runs, or token
              ids [N, L] int64 (`ByteTokens`, `WordTokens`: the model's own text transformer,
              inside the graph, embeds them); and the token mask [N, L] bool
    control   a ControlNet (`speed.control.ControlledModel`): the control image [N, C, h, w] in
              the model's input space, its control scale folded into the graph
    low_res   a super-resolution model (`speed.models.SuperResUNet`): the low-resolution image
              [N, C, l, l] in [-1, 1], upsampled inside the graph

Every input has a dynamic batch N (the rows of x); its other dimensions are fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class GraphInput:
    """One extra graph input: `name`, `dtype` ("float32", "int64" or "bool"), `shape` (the
    dimensions after the batch), `about` (what it is, for the manifest); `caption`: part of the
    caption condition (doubled with the null caption under guidance, `force_drop_ids`), else
    the same for both halves of a guided batch; `ids`: token ids lie in 1..ids-1 (int64)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    about: dict = field(default_factory=dict)
    caption: bool = False
    ids: int = 0

    def describe(self) -> dict:
        """The manifest's entry: name, shape (with "N" for the batch), dtype, then `about`."""
        return {"name": self.name, "shape": ["N", *self.shape], "dtype": self.dtype, **self.about}

    def example(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random values of this input for `batch` rows: N(0, 1) floats, ids in 1..ids-1, a
        mask whose first token is always on and the others on with probability 1/2."""
        shape = (batch, *self.shape)
        if self.dtype == "float32":
            return torch.randn(shape, generator=generator)
        if self.dtype == "int64":
            return torch.randint(1, self.ids, shape, generator=generator)
        mask = torch.rand(shape, generator=generator) < 0.5
        mask[:, 0] = True
        return mask


def caption_inputs(text_encoder, encoder_node: Mapping) -> tuple[GraphInput, GraphInput]:
    """(y, mask) of a caption-conditioned model read through `text_encoder` (a
    `speed.text.TextEncoder`), described by its config node `encoder_node` (`_target_`, `path`,
    `max_length`, ...): the encoder the caller runs (`condition(captions, "cpu")`), or, for token
    ids, the tokenizer."""
    length, node = int(text_encoder.max_length), dict(encoder_node)
    if text_encoder.dim:
        what = "caption embeddings: the frozen text encoder's last hidden states"
        y = GraphInput("y", "float32", (length, int(text_encoder.dim)), caption=True,
                       about={"what": what, "text_encoder": node})  # fmt: skip
    else:
        ids = text_encoder.ids_about
        what = f"caption token ids: {ids}; the model's text transformer embeds them"
        y = GraphInput("y", "int64", (length,), caption=True, ids=int(text_encoder.vocab_size),
                       about={"what": what, "text_encoder": node})  # fmt: skip
    mask = GraphInput("mask", "bool", (length,), caption=True,
                      about={"what": "caption token mask: True where y holds a token",
                             "text_encoder": node})  # fmt: skip
    return y, mask


def control_input(control, channels: int, side: int, latent: bool) -> GraphInput:
    """The control image of a `speed.control.ControlNet` for a model input [C, side, side];
    `latent`: the model samples latents, so control maps are encoded like images."""
    space = (
        "encoded by the run's autoencoder and scaled like x (the control map is an RGB image)"
        if latent
        else "in [-1, 1], pixel space"
    )
    return GraphInput(
        "control",
        "float32",
        (channels, side, side),
        about={
            "what": f"control image: the control transform of an image in [-1, 1], {space}",
            "transform": control.transform_name,
            "transform_options": dict(control.transform_options),
            "scale": control.scale,
            "scale_folded": True,
        },
    )


def low_res_input(model, low_size: int, degradation: Mapping) -> GraphInput:
    """The low-resolution image of a `speed.models.SuperResUNet`, `low_size` pixels a side,
    made in training by `degradation` ({"low_size", "blur_sigma", "noise_std"})."""
    return GraphInput(
        "low_res",
        "float32",
        (int(model.image_channels), int(low_size), int(low_size)),
        about={
            "what": "the low-resolution image in [-1, 1], pixel space; the graph upsamples it "
            f"({model.upsample_mode}) to x's side",
            "degradation": dict(degradation),
        },
    )
