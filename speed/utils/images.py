"""Conversions between model tensors and pictures: uint8 arrays, PNG files and grids."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from speed.utils.atomic import atomic_write


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] floats in [-1, 1] -> uint8 [N, H, W, C] (rounded, clipped)."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, nrow: int, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, C] images row-major into one uint8 [H', W', C] grid, `nrow` per row."""
    n, h, w, c = images.shape
    ncol = nrow
    nrows = (n + ncol - 1) // ncol
    grid = np.full(
        (nrows * (h + padding) + padding, ncol * (w + padding) + padding, c),
        pad_value,
        dtype=np.uint8,
    )
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = img
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 HWC image (C = 1 or 3) encoded as PNG."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 HWC image (C = 1 or 3) as PNG atomically (a killed run never leaves a
    truncated PNG that looks finished), creating parent folders."""
    return atomic_write(path, png_bytes(image))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of a uint8 HWC image, so tiny samples are visible."""
    if factor <= 1:
        return image
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
