"""Batch-invariant sampling: the denoiser and the decoder always see batches of exactly `rows`
rows, so an image's pixels cannot depend on the batch it was served in.

Float32 kernels pick their blocking by batch size: on the CPU, MKL's GEMM takes another path
below 4 rows and convolutions re-block at other sizes, so the same row computed in batches of 2,
5 or 9 differs in its last bits (measured on this project's demo UNet: up to 7e-10 per step).
With one fixed batch size the row results depend neither on the row's position nor on the other
rows (checked bit for bit in tests/serve/test_engine.py). Padding rows repeat the last row and
are dropped; a batch of more rows runs in several calls of `rows`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from speed.generation import condition_rows
from speed.models import guidance


def in_rows(fn: Callable, rows: int) -> Callable:
    """`fn(*tensors)` (each [N, ...], or None) run on consecutive slices of exactly `rows` rows,
    the last one padded with copies of its last row; the outputs concatenated, N rows kept."""

    def call(*tensors):
        n = tensors[0].shape[0]
        pad = -n % rows

        def padded(v):
            if v is None or not pad:
                return v
            return torch.cat([v, v[-1:].expand(pad, *v.shape[1:])])

        full = [padded(v) for v in tensors]
        outs = [
            fn(*(None if v is None else v[i : i + rows] for v in full))
            for i in range(0, n + pad, rows)
        ]
        return torch.cat(outs)[:n]

    return call


class FixedRowsDenoiser:
    """`model` (a `ConditionalBackbone`, or an `OnnxModel` whose graph folds guidance in) called
    the way the samplers call a model, in batches of exactly `rows` rows."""

    def __init__(self, model, rows: int):
        self.model, self.rows = model, rows
        self.num_classes = model.num_classes
        self.has_null_label = model.has_null_label

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y=None, **kwargs) -> torch.Tensor:
        """kwargs: the model's other inputs of N rows each (a caption condition's `mask` and
        `force_drop_ids`), sliced with x."""
        return self._in_rows(self.model, x, t, y, kwargs)

    def forward_with_cfg(self, x, t, y, cfg_scale: float, **kwargs) -> torch.Tensor:
        """As the model's own (`speed.models.guidance.forward_with_cfg`): both halves of the
        [cond; uncond] batch hold the guided output."""
        folded = getattr(self.model, "guided", None)  # a graph with guidance inside
        if folded is None:
            channels = self.model.guided_channels
            return guidance.forward_with_cfg(self, x, t, y, cfg_scale, channels, **kwargs)
        # the graph adds the null label or caption itself: it reads the conditional half only,
        # whose force_drop_ids are all 0
        kwargs.pop("force_drop_ids", None)
        half = x.shape[0] // 2
        first = {name: value[:half] for name, value in kwargs.items()}

        def run(x, t, y, **rest):
            return folded(x, t, y, cfg_scale, **rest)

        out = self._in_rows(run, x[:half], t[:half], y[:half], first)
        return torch.cat([out, out])

    def _in_rows(self, fn: Callable, x, t, y, kwargs: dict) -> torch.Tensor:
        """`fn(x, t, y, **kwargs)` on slices of exactly `rows` rows of every input."""
        names = list(kwargs)

        def call(x, t, y, *rest):
            return fn(x, t, y, **dict(zip(names, rest)))

        return in_rows(call, self.rows)(x, t, y, *kwargs.values())


class FixedRowsDecoder:
    """An autoencoder whose `decode` sees batches of exactly `rows` latents."""

    def __init__(self, autoencoder, rows: int):
        self.autoencoder, self.rows = autoencoder, rows

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return in_rows(self.autoencoder.decode, self.rows)(latents)


class FixedRowsEncoder:
    """A text encoder whose `condition` encodes captions in batches of exactly `rows`."""

    def __init__(self, text_encoder, rows: int):
        self.text_encoder, self.rows = text_encoder, rows

    def condition(self, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """`text_encoder.condition(captions, device)`, padded with copies of the last caption."""
        n, rows = len(captions), self.rows
        full = list(captions) + list(captions[-1:]) * (-n % rows)
        encode = self.text_encoder.condition
        parts = [encode(full[i : i + rows], device) for i in range(0, len(full), rows)]
        joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
        return condition_rows(joined, slice(0, n))
