"""The demo dataset: animal-mnist (PyPI `animal-mnist==0.4`, MIT), 10,000 28x28 grayscale animal
silhouettes, 1,000 per class.

The package's own loader imports tensorflow, so the two gzip'd pickles it ships are read directly.
Labels follow the alphabetical class order (checked by viewing the images of each label).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from speed.data.transforms import random_hflip
from speed.errors import ConfigError

ANIMAL_CLASSES = [
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
]
NATIVE_SIZE = 28
_DATA_FILE = "animal_data_version_3.gz"
_LABEL_FILE = "animal_label_version_3.gz"


def animal_mnist_folder() -> Path:
    """The folder of the installed package holding the two pickles."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "data: the demo dataset needs the animal-mnist package; "
            "install it with `pip install --no-deps animal-mnist==0.4`"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"


def load_animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28], labels int64 [10000]) in the package's order."""
    folder = animal_mnist_folder()
    arrays = []
    for name in (_DATA_FILE, _LABEL_FILE):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"data: animal-mnist file missing at {path}; reinstall it")
        with gzip.open(path, "rb") as f:
            arrays.append(np.asarray(pickle.load(f)))
    images, labels = arrays
    if images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE) or len(images) != len(labels):
        raise ValueError(f"data: unexpected animal-mnist arrays {images.shape}, {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def class_index(name_or_index: int | str) -> int:
    """The label of an animal-mnist class given by name ("zebra") or index (9)."""
    if isinstance(name_or_index, str) and not name_or_index.isdigit():
        if name_or_index not in ANIMAL_CLASSES:
            raise ConfigError(
                f"data.classes: no class {name_or_index!r}; the classes are "
                + ", ".join(ANIMAL_CLASSES)
            )
        return ANIMAL_CLASSES.index(name_or_index)
    index = int(name_or_index)
    if not 0 <= index < len(ANIMAL_CLASSES):
        raise ConfigError(
            f"data.classes: {index} is not a class index (0..{len(ANIMAL_CLASSES) - 1})"
        )
    return index


class AnimalMNIST(Dataset):
    """animal-mnist as x float32 [1, R, R] in [-1, 1] (R = pad_to or image_size), y int64 label.

    Args:
        image_size: side the 28x28 images are resized to (bilinear, antialiased; 28 = as is).
        random_flip: mirror each image left-right with probability 1/2.
        pad_to: pad the (resized) images with background (-1) to this side, centred; None = no
            padding. Lets patch sizes that don't divide image_size be used (e.g. 28 -> 32).
        classes: keep only the images of these classes (names or label indices; None = all).
            Labels keep their indices and the model its 10 class rows, so a run on some classes
            can later be adapted to one it never saw (docs/adapt.md).
    """

    num_channels = 1
    num_classes = len(ANIMAL_CLASSES)
    class_names = ANIMAL_CLASSES
    is_latent = False

    def __init__(
        self,
        image_size: int = NATIVE_SIZE,
        random_flip: bool = True,
        pad_to: int | None = None,
        classes: list[int | str] | None = None,
    ):
        if image_size < 1:
            raise ValueError(f"data.image_size must be positive, got {image_size}")
        if pad_to is not None and pad_to < image_size:
            raise ValueError(f"data.pad_to={pad_to} is smaller than data.image_size={image_size}")
        images, labels = load_animal_mnist_arrays()
        if classes is not None:
            keep = np.isin(labels, [class_index(c) for c in classes])
            images, labels = images[keep], labels[keep]
        x = torch.from_numpy(images).unsqueeze(1)  # [N, 1, 28, 28] uint8
        if image_size != NATIVE_SIZE:
            x = F.interpolate(x.float(), size=image_size, mode="bilinear", antialias=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
        self.images = x
        self.labels = torch.from_numpy(labels)
        self.image_size = image_size
        self.pad_to = pad_to
        self.random_flip = random_flip
        self.resolution = pad_to or image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float() / 127.5 - 1.0
        if self.pad_to is not None:
            before = (self.pad_to - self.image_size) // 2
            after = self.pad_to - self.image_size - before
            x = F.pad(x, (before, after, before, after), value=-1.0)
        if self.random_flip:
            x = random_hflip(x)
        return x, self.labels[index]
