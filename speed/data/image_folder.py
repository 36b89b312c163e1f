"""Image-folder datasets: one subfolder per class (sorted names -> labels 0..K-1), or a flat folder
of images for unconditional training. Preprocessing is ADM's center crop and a random flip; every
image mode and bit depth is converted as `speed.data.transforms.to_uint8_array` states (16-bit
scaled, transparency over white).

Linked folders (a class folder that is a symbolic link, or a link below one) are followed, once
each (a link back to a folder already walked is not walked again), and named in one warning; a
link to nothing is an error. A class folder with no images is an error (its label would never be
trained).

Files that are no image at all (unknown format, empty) are found when the dataset is built, from
their headers only (threads read them), and left out with one warning naming them, so
`len(dataset)` counts only images. Files whose pixels are broken (truncated) are found when first
read: the file is named in a warning, counted, and the next readable image is returned in its
place, so a run never crashes or silently loses an index. The marks live in shared memory, so
DataLoader workers (of one process) share the count.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from speed.data.transforms import center_crop_arr, random_hflip, to_tensor, to_uint8_array
from speed.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"}
# What PIL raises on truncated, unidentifiable or malformed files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_images(folder: Path) -> list[Path]:
    """Image files below `folder` (recursive, following linked folders once each), sorted by
    path; hidden files and folders are skipped."""
    return sorted(_walk(folder, set())[0])


def _walk(folder: Path, seen: set[str]) -> tuple[list[Path], list[Path]]:
    """(image files, linked folders) below `folder`; `seen` holds the real paths walked."""
    files, links = [], []
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back to a folder already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        links += [Path(top, d) for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in names:
            path = Path(top, name)
            if not name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS:
                if path.is_file():
                    files.append(path)
    return files, links


def _no_image(path: Path) -> str | None:
    """Why `path` is no image Pillow can open (from its header only), or None."""
    try:
        with Image.open(path):
            return None
    except DECODE_ERRORS as error:
        return str(error) or type(error).__name__


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
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
        broken = [p for p in entries if p.is_symlink() and not p.exists()]
        if broken:
            raise ValueError(
                f"data.path: {broken[0]} is a link to {os.readlink(broken[0])}, which does not "
                "exist; fix or remove the link"
            )
        class_dirs = [p for p in entries if p.is_dir()]
        loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if class_dirs and loose:
            raise ValueError(
                f"data.path: {root} holds both images ({loose[0].name}, ...) and subfolders; put "
                "every image in a class subfolder, or use a flat folder"
            )
        files, links = _walk(root, set())
        if links:
            shown = ", ".join(f"{p.relative_to(root)} -> {os.readlink(p)}" for p in links[:3])
            more = f" and {len(links) - 3} more" if len(links) > 3 else ""
            warnings.warn(f"data: following linked folders in {root}: {shown}{more}", stacklevel=2)
        if not files:
            raise ValueError(
                f"data.path: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}"
            )
        self.files, self.skipped = _readable(sorted(files))
        if not self.files:
            raise ValueError(f"data.path: none of the {len(files)} images under {root} is readable")
        if class_cond and class_dirs:
            self.class_names = [p.name for p in class_dirs]
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = [index[f.relative_to(root).parts[0]] for f in self.files]
            present = set(labels)
            empty = [name for i, name in enumerate(self.class_names) if i not in present]
            if empty:
                raise ValueError(
                    f"data.path: class folder {root / empty[0]} holds no readable images (its "
                    "label would never be trained); add images or remove it"
                )
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
                pixels = to_uint8_array(image, self.num_channels)
        except DECODE_ERRORS as error:
            self._corrupt[i] = 1
            warnings.warn(
                f"data: skipping undecodable image {self.files[i]} ({error}); "
                f"{self.num_corrupt} skipped so far",
                stacklevel=3,
            )
            return None
        return center_crop_arr(Image.fromarray(pixels), self.resolution)


def _readable(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files Pillow can open, the others), each in order; the others named in one warning."""
    with ThreadPoolExecutor(max_workers=min(16, len(files) or 1)) as pool:
        reasons = list(pool.map(_no_image, files))
    bad = [(f, why) for f, why in zip(files, reasons) if why is not None]
    if bad:
        shown = "; ".join(f"{f} ({why})" for f, why in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(
            f"data: leaving out {len(bad)} file(s) that are no images: {shown}{more}", stacklevel=3
        )
    return [f for f, why in zip(files, reasons) if why is None], [f for f, _ in bad]
