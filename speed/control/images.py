"""Control images from files: one image, or every image of a folder (sorted by path), read as
the datasets read theirs (`speed.data`: any mode to uint8, ADM's center crop, [-1, 1]); and the
name of the array of an inference `.npz` that holds each sample's control image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from speed.data.image_folder import DECODE_ERRORS, list_images
from speed.data.transforms import center_crop_arr, to_tensor, to_uint8_array
from speed.errors import DataError, MissingFileError

NPZ_CONTROL_KEY = "control"  # uint8 [N, H, W, C]: sample i's control image, beside arr_0


def load_control_images(path: str | os.PathLike, side: int, channels: int) -> torch.Tensor:
    """The control image(s) at `path` as [N, channels, side, side] in [-1, 1]."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"control.images: no image or folder at {path}")
    files = list_images(path) if path.is_dir() else [path]
    if not files:
        raise DataError(f"control.images: no images in {path}")
    maps = []
    for file in files:
        try:
            with Image.open(file) as image:
                pixels = to_uint8_array(image, channels)
        except DECODE_ERRORS as error:
            raise DataError(f"control.images: cannot read {file} ({error})") from None
        picture = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
        maps.append(to_tensor(np.array(center_crop_arr(picture, side))))  # writable
    return torch.stack(maps)
