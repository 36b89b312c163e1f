"""Image preprocessing shared by the datasets: ADM center crop, [-1, 1] tensors, random flip."""

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
