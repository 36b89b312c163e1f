"""Image-folder datasets: one subfolder per class (sorted names -> labels 0..K-1), or a flat folder
of images for unconditional training. Preprocessing is ADM's center crop and a random flip.

Undecodable files are found when first read, not by scanning the whole set up front (too slow for
ImageNet): the file is named in a warning, counted, and the next readable image is returned in its
place, so a run never crashes or silently loses an index. The marks live in shared memory, so
DataLoader workers (of one process) share the count.
"""

from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from speed.data.transforms import center_crop_arr, random_hflip, to_tensor
from speed.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"}
# What PIL raises on truncated, unidentifiable or malformed files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_images(folder: Path) -> list[Path]:
    """Image files below `folder` (recursive), sorted by path; hidden files and folders are
    skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


class ImageFolderDataset(Dataset):
    """Images as x float32 [3, image_size, image_size] in [-1, 1], y int64 label (0 if none).

    Args:
        path: the folder (config key `data.path`). With subfolders, each one is a class and holds
            its images (at any depth); without, the images directly inside are one unlabelled set.
        image_size: output side in pixels (ADM center crop).
        random_flip: mirror each image left-right with probability 1/2.
        class_cond: use the subfolders as labels; False = unconditional even with subfolders.
    """

    num_channels = 3
    is_latent = False

    def __init__(
        self, path: str, image_size: int, random_flip: bool = True, class_cond: bool = True
    ):
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"data.path: no image folder at {root}")
        if image_size < 1:
            raise ValueError(f"data.image_size must be positive, got {image_size}")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if class_dirs and loose:
            raise ValueError(
                f"data.path: {root} holds both images ({loose[0].name}, ...) and subfolders; put "
                "every image in a class subfolder, or use a flat folder"
            )
        self.files = list_images(root)
        if not self.files:
            raise ValueError(
                f"data.path: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}"
            )
        if class_cond and class_dirs:
            self.class_names = [p.name for p in class_dirs]
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = [index[f.relative_to(root).parts[0]] for f in self.files]
        else:
            self.class_names = None
            labels = [0] * len(self.files)
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.num_classes = len(self.class_names) if self.class_names else 0
        self.resolution = image_size
        self.random_flip = random_flip
        # One byte per file, 1 = undecodable; shared with forked/spawned DataLoader workers.
        self._corrupt = multiprocessing.RawArray("b", len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_corrupt(self) -> int:
        """How many files were found undecodable so far (in this process and its workers)."""
        return sum(self._corrupt)

    @property
    def corrupt_files(self) -> list[Path]:
        """The undecodable files found so far."""
        return [f for f, bad in zip(self.files, self._corrupt) if bad]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item `index`, or the next readable one (cyclically) if its file cannot be decoded."""
        n = len(self.files)
        for offset in range(n):
            i = (index + offset) % n
            if self._corrupt[i]:
                continue
            arr = self._load(i)
            if arr is not None:
                x = to_tensor(arr)
                return (random_hflip(x) if self.random_flip else x), self.labels[i]
        folder = self.files[0].parent
        raise DataError(f"data.path: none of the {n} images in {folder} could be decoded")

    def _load(self, i: int):
        """uint8 [R, R, 3] center crop of file i; None (marked, counted, warned) if unreadable."""
        try:
            with Image.open(self.files[i]) as image:
                image.load()
                image = image.convert("RGB")
        except DECODE_ERRORS as error:
            self._corrupt[i] = 1
            warnings.warn(
                f"data: skipping undecodable image {self.files[i]} ({error}); "
                f"{self.num_corrupt} skipped so far",
                stacklevel=3,
            )
            return None
        return center_crop_arr(image, self.resolution)
