"""The offline text-to-image demo set: two animal-mnist silhouettes side by side, captioned with
where each one stands ("a cat left of a zebra", "a zebra right of a cat").

Each image is `image_size` square: the left animal fills the left half, the right one the right
half (each resized to half the side, centred vertically on background). Pairs of two different
classes are drawn with a fixed seed, so the set is the same on every machine; the ordered class
pairs in `held_out` never appear in it, so prompts naming them test composition (sample and
evaluate them; `evaluations.text_alignment` scores pairs).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from speed.data.animals import ANIMAL_CLASSES, load_animal_mnist_arrays

# Ordered (left, right) pairs left out of training: every class appears once on each side.
HELD_OUT_PAIRS = (
    ("cat", "zebra"),
    ("dog", "horse"),
    ("bird", "elephant"),
    ("sheep", "bear"),
    ("giraffe", "cow"),
    ("zebra", "giraffe"),
    ("horse", "sheep"),
    ("elephant", "dog"),
    ("bear", "bird"),
    ("cow", "cat"),
)


def article(name: str) -> str:
    """`name` with its indefinite article ("a cat", "an elephant")."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def pair_captions(left: str, right: str) -> list[str]:
    """The captions of a pair: both ways of saying where each animal stands."""
    return [
        f"{article(left)} left of {article(right)}",
        f"{article(right)} right of {article(left)}",
    ]


_PAIR = re.compile(r"an? (\w+) (left|right) of an? (\w+)")


def parse_pair(caption: str) -> tuple[int, int] | None:
    """(left, right) class ids a caption of `pair_captions`' form asks for, else None."""
    match = _PAIR.fullmatch(" ".join(caption.lower().split()))
    if not match or not {match[1], match[3]} <= set(ANIMAL_CLASSES):
        return None
    first, second = ANIMAL_CLASSES.index(match[1]), ANIMAL_CLASSES.index(match[3])
    return (first, second) if match[2] == "left" else (second, first)


def compose_pair(left: torch.Tensor, right: torch.Tensor, side: int) -> torch.Tensor:
    """Two images [N, 1, s, s] in [-1, 1] (s = side / 2) -> [N, 1, side, side], left | right,
    centred vertically on background (-1)."""
    half = side // 2
    pair = torch.cat([left, right], dim=3)  # [N, 1, s, 2 s]
    top = (side - half) // 2
    return F.pad(pair, (0, side - 2 * half, top, side - half - top), value=-1.0)


class AnimalPairs(Dataset):
    """Pairs as x float32 [1, image_size, image_size] in [-1, 1], y the item index (int64);
    `captions(index)` gives its two captions and `pairs[index]` its (left, right) class ids.

    Args:
        image_size: side of the composed image (even); each animal is resized to half of it
            (56: the native 28 px, which the domain classifier reads as is).
        num_pairs: images in the set.
        held_out: ordered (left, right) class-name pairs never composed (default
            `HELD_OUT_PAIRS`).
        seed: seed of the pair draw (fixed: the set is part of the demo's definition).
    """

    num_channels = 1
    num_classes = 0
    class_names = None
    is_latent = False
    has_captions = True

    def __init__(
        self,
        image_size: int = 56,
        num_pairs: int = 20000,
        held_out: list[list[str]] | None = None,
        seed: int = 0,
    ):
        if image_size < 4 or image_size % 2:
            raise ValueError(f"data.image_size must be even and >= 4, got {image_size}")
        if num_pairs < 1:
            raise ValueError(f"data.num_pairs must be >= 1, got {num_pairs}")
        held = [tuple(p) for p in (HELD_OUT_PAIRS if held_out is None else held_out)]
        unknown = [name for pair in held for name in pair if name not in ANIMAL_CLASSES]
        if unknown or any(len(p) != 2 for p in held):
            raise ValueError(
                f"data.held_out: pairs of two of {ANIMAL_CLASSES}, got {held_out} ({unknown})"
            )
        index = {name: i for i, name in enumerate(ANIMAL_CLASSES)}
        self.held_out = sorted((index[a], index[b]) for a, b in held)
        allowed = [
            (a, b) for a in range(10) for b in range(10) if a != b and (a, b) not in self.held_out
        ]
        images, labels = load_animal_mnist_arrays()
        half = image_size // 2
        small = torch.from_numpy(images).unsqueeze(1)
        if half != small.shape[-1]:
            small = F.interpolate(small.float(), size=half, mode="bilinear", antialias=True)
            small = small.round().clamp(0, 255).to(torch.uint8)
        by_class = [torch.from_numpy((labels == c).nonzero()[0]) for c in range(10)]
        generator = torch.Generator().manual_seed(seed)
        choice = torch.randint(len(allowed), (num_pairs,), generator=generator)
        self.pairs = torch.tensor(allowed)[choice]  # [num_pairs, 2] class ids
        picks = [
            by_class_c[torch.randint(len(by_class_c), (num_pairs,), generator=generator)]
            for by_class_c in by_class
        ]  # one candidate image per class and pair
        rows = torch.arange(num_pairs)
        left = torch.stack(picks)[self.pairs[:, 0], rows]
        right = torch.stack(picks)[self.pairs[:, 1], rows]
        self.left, self.right = small[left], small[right]  # uint8 [num_pairs, 1, half, half]
        self.resolution = image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def captions(self, index: int) -> list[str]:
        left, right = self.pairs[index].tolist()
        return pair_captions(ANIMAL_CLASSES[left], ANIMAL_CLASSES[right])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        to_float = lambda u: u[None].float() / 127.5 - 1.0  # noqa: E731
        x = compose_pair(to_float(self.left[index]), to_float(self.right[index]), self.resolution)
        return x[0], torch.tensor(index, dtype=torch.int64)
