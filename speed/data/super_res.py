"""Super-resolution data: pairs (high-res image, its degraded low-res image) made from any image
dataset, and low-res inputs read from an image file or a folder for sampling.

`SuperResolution` wraps a dataset (the demo set, an image folder) and computes each item's
low-res image with `speed.data.degradation.Degradation`. An item is (x, conditions): x the
high-res image [C, H, W], conditions the model kwargs {"low_res": [C, h, w]} (plus "y", the
label, for a class-conditional model), which the training loop passes to the model as it
passes labels. A fixed, seeded part of the dataset can be held out (`held_out`) for inference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from speed.data.degradation import Degradation
from speed.data.image_folder import DECODE_ERRORS, IMAGE_EXTENSIONS, list_images
from speed.data.transforms import center_crop_arr, to_tensor, to_uint8_array
from speed.errors import DataError, MissingFileError

HOLD_OUT_SEED = 0  # the permutation choosing held-out items never changes with the run's seed
SPLITS = ("train", "held_out")


class SuperResolution(Dataset):
    """(x [C, H, W], {"low_res": [C, low_size, low_size][, "y": label]}) from `dataset`.

    Args:
        dataset: the high-res image dataset (its `resolution` is the high side).
        low_size: side of the low-res image in pixels.
        blur_sigma: Gaussian blur before down-sampling, in high-res pixels (0 = none).
        noise_std: Gaussian noise added to the low-res image, [-1, 1] units (0 = none).
        held_out: items kept out of training (a seeded permutation's first `held_out`); the
            `held_out` split reads exactly these, unflipped, each with noise seeded by its index.
        split: "train" (all but the held-out items) or "held_out".
        class_cond: also give the dataset's labels (a class-conditional upsampler, as ADM's).
    """

    is_latent = False

    def __init__(
        self,
        dataset: Dataset,
        low_size: int,
        blur_sigma: float = 0.0,
        noise_std: float = 0.0,
        held_out: int = 0,
        split: str = "train",
        class_cond: bool = False,
    ):
        if getattr(dataset, "is_latent", False):
            raise ValueError("data.dataset: super-resolution trains on images, not latents")
        if split not in SPLITS:
            raise ValueError(f"data.split must be one of {SPLITS}, got {split!r}")
        if not 0 <= held_out < len(dataset):
            raise ValueError(f"data.held_out must lie in 0..{len(dataset) - 1}, got {held_out}")
        if split == "held_out" and not held_out:
            raise ValueError("data.split=held_out needs data.held_out > 0 items")
        if low_size >= dataset.resolution:
            raise ValueError(
                f"data.low_size={low_size} must be smaller than the images' side "
                f"{dataset.resolution}"
            )
        self.dataset = dataset
        self.degradation = Degradation(low_size, blur_sigma, noise_std)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(HOLD_OUT_SEED))
        # held-out items in the permutation's order (mixed classes), training items sorted
        self.indices = order[:held_out] if split == "held_out" else order[held_out:].sort().values
        self.split = split
        if split == "held_out" and hasattr(dataset, "random_flip"):
            dataset.random_flip = False  # references must be the images as they are
        self.resolution = dataset.resolution
        self.num_channels = dataset.num_channels
        self.num_classes = dataset.num_classes if class_cond else 0
        self.class_names = getattr(dataset, "class_names", None) if class_cond else None

    @property
    def low_size(self) -> int:
        return self.degradation.low_size

    @property
    def labels(self) -> torch.Tensor | None:
        """The items' labels [len(self)] (class-conditional only; the dataset's `labels`)."""
        return self.dataset.labels[self.indices] if self.num_classes else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = self.dataset[int(self.indices[index])]
        generator = torch.Generator().manual_seed(index) if self.split == "held_out" else None
        conditions = {"low_res": self.degradation(x, generator)}
        if self.num_classes:
            conditions["y"] = y
        return x, conditions


def read_low_res(
    path: str | Path, channels: int, high_size: int, degradation: Degradation
) -> tuple[list[str], torch.Tensor, torch.Tensor | None]:
    """(names, low-res images [N, C, l, l], references [N, C, H, W] or None) of an image file or
    the images in a folder (recursive, sorted).

    An image of exactly low_size x low_size is a low-res input as it is. Any other image is taken
    as a high-res reference: ADM's center crop to `high_size`, then degraded as in training
    (noise seeded by its position), so its result can be compared with it. References are given
    only when every input is one.
    """
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
    elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        files = [path]
    else:
        raise MissingFileError(f"low_res: no image or folder of images at {path}")
    if not files:
        raise DataError(f"low_res: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {path}")
    low, references = [], []
    size = degradation.low_size
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                pixels = to_uint8_array(image, channels)
        except DECODE_ERRORS as error:
            raise DataError(f"low_res: cannot read {file} ({error})") from None
        if pixels.shape[:2] == (size, size):
            low.append(to_tensor(np.array(pixels)))  # a writable copy: PIL's are read-only
            continue
        plane = pixels[..., 0] if channels == 1 else pixels
        reference = to_tensor(np.array(center_crop_arr(Image.fromarray(plane), high_size)))
        low.append(degradation(reference, torch.Generator().manual_seed(i)))
        references.append(reference)
    names = [str(f.relative_to(path)) if path.is_dir() else f.name for f in files]
    full = len(references) == len(files)
    return names, torch.stack(low), torch.stack(references) if full else None
