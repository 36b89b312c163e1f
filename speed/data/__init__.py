"""Datasets, the resumable sampler and the DataLoader.

Every dataset yields (x, y): x float32 [C, H, W] in [-1, 1] (or a scaled latent for the latent
cache), y an int64 label (0 when unconditional); and reports `resolution`, `num_channels`,
`num_classes` (0 = unconditional), `class_names` (or None) and `is_latent`. The
super-resolution pairs (`SuperResolution`) yield y as a dict of model kwargs: the low-res image
`low_res` (and the label `y` when class-conditional). A captioned dataset (`has_captions`) yields
the item index as y and lists each item's captions by `captions(index)`.
"""

from speed.data.animal_pairs import AnimalPairs
from speed.data.animals import ANIMAL_CLASSES, AnimalMNIST, load_animal_mnist_arrays
from speed.data.captions import CaptionedImageFolder
from speed.data.image_folder import ImageFolderDataset
from speed.data.latent_cache import LatentCacheDataset, extract_latents
from speed.data.npz import NpzDataset
from speed.data.sampler import ResumableSampler, build_dataloader
from speed.data.super_res import SuperResolution

__all__ = [
    "ANIMAL_CLASSES",
    "AnimalMNIST",
    "AnimalPairs",
    "CaptionedImageFolder",
    "ImageFolderDataset",
    "LatentCacheDataset",
    "NpzDataset",
    "ResumableSampler",
    "SuperResolution",
    "build_dataloader",
    "extract_latents",
    "load_animal_mnist_arrays",
]
