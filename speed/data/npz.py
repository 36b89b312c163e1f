"""Images stored in one `.npz` file in the ADM evaluator's layout: `arr_0` uint8 [N, H, W, C] (or
[N, H, W] grayscale), optional `arr_1` integer labels [N]."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from speed.data.transforms import random_hflip, to_tensor
from speed.errors import DataError


def open_npz(path: str | os.PathLike):
    """np.load of a `.npz` archive (a context manager); a file that is no archive (a text or
    pickle file named .npz, a truncated download) is one DataError line naming it."""
    try:
        data = np.load(path)
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{path} is not a readable .npz archive ({reason.split('. ')[0]})"
        ) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single .npy array, not a .npz archive")
    return data


class NpzDataset(Dataset):
    """x float32 [C, H, H] in [-1, 1], y int64 label (0 when the file has no `arr_1`).

    Args:
        path: the .npz file (config key `data.path`).
        random_flip: mirror each image left-right with probability 1/2.
    """

    is_latent = False
    class_names = None

    def __init__(self, path: str, random_flip: bool = True):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"data.path: no .npz file at {path}")
        with open_npz(path) as data:
            if "arr_0" not in data:
                raise ValueError(f"data.path: {path} has no 'arr_0' (uint8 [N, H, W, C] images)")
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data else None
        if images.ndim == 3:
            images = images[..., None]
        if len(images) == 0:
            raise ValueError(f"data.path: {path} holds no images")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(
                f"data.path: arr_0 of {path} must be uint8 [N, H, H, C], got {images.dtype} "
                f"{list(images.shape)}"
            )
        if labels is not None and (labels.shape != (len(images),) or labels.min() < 0):
            raise ValueError(
                f"data.path: arr_1 of {path} must hold {len(images)} labels >= 0, got "
                f"{list(labels.shape)}"
            )
        self.images = images
        self.labels = torch.from_numpy(
            np.zeros(len(images), np.int64) if labels is None else labels.astype(np.int64)
        )
        self.num_classes = 0 if labels is None else int(labels.max()) + 1
        self.num_channels = images.shape[3]
        self.resolution = images.shape[1]
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_tensor(self.images[index])
        return (random_hflip(x) if self.random_flip else x), self.labels[index]
