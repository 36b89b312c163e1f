"""Image preprocessing shared by the datasets: any image mode to uint8, ADM center crop, [-1, 1]
tensors, random flip."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def center_crop_arr(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM / DiT preprocessing: PIL image -> uint8 [image_size, image_size, C] array.

    While the short side is at least 2 * image_size, halve both sides with a BOX filter (cheap,
    alias-free downscaling); then resize with BICUBIC so the short side equals image_size (sides
    rounded to the nearest pixel); then crop the central square (offsets rounded down).
    """
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    ratio = image_size / min(image.size)
    image = image.resize(tuple(round(side * ratio) for side in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, C] or [H, W] -> float32 [C, H, W] in [-1, 1] (0 -> -1, 255 -> 1)."""
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x.unsqueeze(-1) if x.ndim == 2 else x
    return x.permute(2, 0, 1).float() / 127.5 - 1.0


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror [..., W] left-right with probability 1/2, drawn from torch's global RNG (seeded per
    DataLoader worker, so runs repeat)."""
    return x.flip(-1) if torch.rand(()) < 0.5 else x


# The full-scale value of each mode holding more than 8 bits per pixel.
WIDE_MODES = {mode: 65535.0 for mode in ("I;16", "I;16B", "I;16L", "I;16N", "I")} | {"F": 1.0}
GRAY_MODES = {"1", "L", "LA", "La", "F", *WIDE_MODES}


def to_uint8_array(image: Image.Image, channels: int) -> np.ndarray:
    """Any PIL image -> uint8 [H, W, channels] (channels 1 or 3), converted as stated here.

    - More than 8 bits: 16-bit integers (PNG's and TIFF's `I;16*`, and `I`, which Pillow gives
      16-bit files) are scaled by 255 / 65535 and rounded, never clipped; floats (`F`) are read
      as intensities in [0, 1] and scaled by 255. Values outside that range, or not finite, are
      a ValueError naming the range (nothing says what they mean).
    - Transparency (`RGBA`, `LA`, premultiplied `RGBa` / `La`, `PA`, and `P`, `L` or `RGB`
      with a transparent colour) is composited over white, as a viewer shows the picture.
    - Everything else (`1`, `L`, `P`, `RGB`, `CMYK`, `YCbCr`, ...) goes through Pillow's
      conversion: to `L` with the ITU-R 601-2 luma for one channel, to `RGB` for three (gray
      repeated; CMYK by Pillow's formula, as ADM's and DiT's loaders do).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image.mode in WIDE_MODES:
        top = WIDE_MODES[image.mode]
        values = np.asarray(image, dtype=np.float64)
        if values.size and (
            not np.isfinite(values).all() or values.min() < 0 or values.max() > top
        ):
            raise ValueError(
                f"{image.mode} image with values in [{values.min():g}, {values.max():g}], "
                f"outside 0..{top:g}"
            )
        gray = np.rint(values * (255.0 / top)).astype(np.uint8)[..., None]
        return gray if channels == 1 else np.repeat(gray, 3, axis=2)
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        image = Image.fromarray(
            np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        )
    if channels == 1:
        return np.asarray(image.convert("L"))[..., None]
    return np.asarray(image.convert("RGB"))
