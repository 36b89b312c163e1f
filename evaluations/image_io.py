"""Evaluation inputs: image sets (`.npz` or folder) and precomputed statistics files.

`load_source(path)` returns an `ImageSource` (uint8 images [N, H, W, C], C in {1, 3}, optional
labels) or, for an `.npz` holding only `mu`/`sigma`, a `FeatureStats`.
- `.npz` with `arr_0` uint8 [N, H, W, C] (or [N, H, W]) and optional `arr_1` labels [N]: the ADM
  evaluator's format, written by the inference phase. Statistics stored beside the images (ADM
  reference batches) are kept in `ImageSource.stats`.
- A folder: png/jpg/jpeg/webp files found recursively, sorted by relative path. Unreadable files
  are skipped with a warning naming each one; `ImageSource.skipped` lists them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from evaluations.reference import FeatureStats, stats_from_npz
from speed.data.npz import open_npz
from speed.data.transforms import GRAY_MODES, to_uint8_array
from speed.errors import DataError, MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class ImageSource:
    """An image set: images uint8 [N, H, W, C], labels int64 [N] or None, and the prompt of each
    image for text-to-image samples (an inference `.npz`'s `prompts`)."""

    path: str
    images: np.ndarray
    labels: np.ndarray | None = None
    stats: FeatureStats | None = None
    skipped: list[str] = field(default_factory=list)
    prompts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)


def load_source(path: str | os.PathLike, num: int | None = None) -> ImageSource | FeatureStats:
    """Read an `.npz` or an image folder; `num` keeps only the first `num` images."""
    path = Path(path)
    if path.is_dir():
        source = load_image_folder(path)
    elif path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: expected an .npz file or an image folder")
        source = load_npz(path)
    else:
        raise MissingFileError(
            f"{path}: no such file or folder (expected an .npz with arr_0 images or mu/sigma "
            "statistics, or a folder of images)"
        )
    if num is not None and isinstance(source, ImageSource):
        if not 1 <= num <= len(source):
            raise DataError(f"{path}: asked for {num} images but it holds {len(source)}")
        source.images = source.images[:num]
        source.labels = None if source.labels is None else source.labels[:num]
        source.prompts = None if source.prompts is None else source.prompts[:num]
    return source


def _as_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    """Check uint8 [N, H, W(, C)] with C in {1, 3}; add the channel axis to [N, H, W]."""
    if images.dtype != np.uint8:
        raise DataError(f"{path}: arr_0 must be uint8 in 0..255, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = " (it looks channels-first; transpose to NHWC)" if images.ndim == 4 else ""
        raise DataError(
            f"{path}: arr_0 must be [N, H, W, C] with C in {{1, 3}}, got {images.shape}{hint}"
        )
    return images


def load_npz(path: str | os.PathLike) -> ImageSource | FeatureStats:
    """An ADM-format `.npz`: images (`arr_0`, `arr_1`) and/or statistics (`mu`, `sigma`, ...)."""
    path = Path(path)
    with open_npz(path) as data:
        stats = stats_from_npz(data, path) if "mu" in data else None
        if "arr_0" not in data:
            if stats is None:
                raise DataError(
                    f"{path}: has neither 'arr_0' (images) nor 'mu'/'sigma' (statistics); "
                    f"keys: {sorted(data)}"
                )
            return stats
        images = _as_nhwc(data["arr_0"], path)
        labels = data["arr_1"].astype(np.int64) if "arr_1" in data else None
        prompts = data["prompts"].tolist() if "prompts" in data else None
    if labels is not None and labels.shape != (len(images),):
        raise DataError(
            f"{path}: arr_1 must hold one label per image, "
            f"got {labels.shape} for {len(images)} images"
        )
    if prompts is not None and len(prompts) != len(images):
        raise DataError(f"{path}: {len(prompts)} prompts for {len(images)} images")
    return ImageSource(str(path), images, labels, stats, prompts=prompts)


def _read_image(file: Path) -> np.ndarray:
    """One picture as uint8 [H, W, 1] (grayscale modes, 16-bit and float ones included) or
    [H, W, 3] (everything else), converted by `speed.data.transforms.to_uint8_array` (16-bit
    scaled, transparency over white)."""
    with Image.open(file) as image:
        image.load()
        return to_uint8_array(image, 1 if image.mode in GRAY_MODES else 3)


def load_image_folder(path: str | os.PathLike) -> ImageSource:
    """All pictures under `path` (recursive, sorted by relative path) stacked as [N, H, W, C]."""
    path = Path(path)
    files = sorted(
        (f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda f: f.relative_to(path).as_posix(),
    )
    images, names, skipped = [], [], []
    for file in files:
        try:
            images.append(_read_image(file))
            names.append(file)
        except (OSError, ValueError) as error:
            warnings.warn(f"skipping unreadable image {file}: {error}", stacklevel=2)
            skipped.append(str(file))
    if not images:
        raise DataError(f"{path}: no readable {'/'.join(IMAGE_SUFFIXES)} images found")
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} unreadable file(s)", stacklevel=2)
    channels = max(im.shape[2] for im in images)
    for name, image in zip(names, images):
        if image.shape[:2] != images[0].shape[:2]:
            raise DataError(
                f"{name}: size {image.shape[:2]} differs from {names[0]}'s {images[0].shape[:2]}"
            )
    images = [np.repeat(im, channels // im.shape[2], axis=2) for im in images]
    return ImageSource(str(path), np.stack(images), skipped=skipped)
