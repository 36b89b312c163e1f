"""Text alignment of the animal-pairs demo (`speed.data.animal_pairs`) without pretrained weights.

`PairFeatures` runs the shipped domain classifier (`evaluations.domain_classifier`) on the left and
on the right half of each composed image: its features (both halves' side by side) give an FID of
pair images, its logits (both halves' side by side) the animal read on each side. A sample is
aligned with its prompt "a cat left of a zebra" when both halves show the animal the prompt put
there; `pair_scores` and `alignment_report` are pure functions of those predictions, scored for
all prompts and for the pairs seen in training and the held-out ones (`HELD_OUT_PAIRS`) apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from evaluations.domain_classifier import DomainFeatures
from evaluations.features import FeatureExtractor, extract_features
from speed.data.animal_pairs import HELD_OUT_PAIRS, parse_pair
from speed.data.animals import ANIMAL_CLASSES
from speed.errors import DataError

SPLITS = ("all", "seen", "held_out")
SHIPPED_CLASSIFIER = Path(__file__).resolve().parents[1] / "benchmarks/assets/domain_classifier.pt"


def split_halves(images) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, S, S, C] (or float [N, C, S, S] in [-1, 1]) -> the left and right halves as float
    [N, C, S/2, S/2], each the vertically centred square of its half (where the animal stands)."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = (x.permute(0, 3, 1, 2).float() / 127.5) - 1.0
    side = x.shape[2]
    if x.ndim != 4 or x.shape[3] != side or side % 2:
        raise DataError(f"text alignment needs square images of even side, got {list(x.shape)}")
    half = side // 2
    top = (side - half) // 2
    rows = x[:, :, top : top + half]
    return rows[..., :half], rows[..., half:]


class PairFeatures(FeatureExtractor):
    """The domain classifier (default: the shipped one, which the demo's scores use) on each half:
    features [N, 2 D] and logits [N, 2 C], left half first."""

    has_logits = True

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        self.halves = DomainFeatures(SHIPPED_CLASSIFIER if path is None else path)
        self.num_features = 2 * self.halves.num_features
        self.num_classes = int(self.halves.meta["num_classes"])
        self.name = "each half's " + self.halves.name

    def activations(self, images) -> dict[str, torch.Tensor]:
        left, right = (self.halves.activations(h) for h in split_halves(images))
        return {key: torch.cat([left[key], right[key]], dim=1) for key in ("features", "logits")}

    def predictions(self, logits) -> tuple[np.ndarray, np.ndarray]:
        """The class read on the left and on the right half, from `activations`' logits."""
        logits = np.asarray(logits)
        return logits[:, : self.num_classes].argmax(1), logits[:, self.num_classes :].argmax(1)


def read_halves(images, extractor: PairFeatures, batch_size: int = 256):
    """The class read on the left and on the right half of each image (ints [N] each)."""
    logits = extract_features(extractor, np.asarray(images), batch_size, progress=False)
    return extractor.predictions(logits.logits)


def pair_scores(left: np.ndarray, right: np.ndarray, pairs: np.ndarray) -> dict[str, float]:
    """Scores of predicted classes left [N], right [N] against the prompts' (left, right) class
    ids pairs [N, 2]: `left_accuracy`, `right_accuracy` (each half alone), `pair_accuracy` (both
    halves right: the prompt followed) and `swapped` (the two animals on the wrong sides)."""
    left, right, pairs = np.asarray(left), np.asarray(right), np.asarray(pairs)
    n = len(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not left.shape == right.shape == (n,):
        raise DataError(
            f"pair alignment needs left [N], right [N], pairs [N, 2]; got {left.shape}, "
            f"{right.shape}, {pairs.shape}"
        )
    left_ok, right_ok = left == pairs[:, 0], right == pairs[:, 1]
    return {
        "left_accuracy": float(left_ok.mean()),
        "right_accuracy": float(right_ok.mean()),
        "pair_accuracy": float((left_ok & right_ok).mean()),
        "swapped": float(((left == pairs[:, 1]) & (right == pairs[:, 0])).mean()),
    }


def prompt_pairs(prompts: list[str]) -> np.ndarray:
    """(left, right) class ids [N, 2] each prompt asks for; -1 where it names no pair."""
    return np.array([parse_pair(p) or (-1, -1) for p in prompts], dtype=np.int64).reshape(-1, 2)


def alignment_report(left: np.ndarray, right: np.ndarray, prompts: list[str]) -> dict:
    """`pair_scores` of the predictions left [N], right [N] over the images whose prompt names a
    pair: all of them, those of pairs seen in training and those of the held-out pairs, each with
    its count (a split without images is left out)."""
    pairs = prompt_pairs(prompts)
    named = pairs[:, 0] >= 0
    if not named.any():
        raise DataError("no prompt names an animal pair ('a cat left of a zebra')")
    left, right, pairs = np.asarray(left)[named], np.asarray(right)[named], pairs[named]
    held = {(ANIMAL_CLASSES.index(a), ANIMAL_CLASSES.index(b)) for a, b in HELD_OUT_PAIRS}
    unseen = np.array([tuple(p) in held for p in pairs.tolist()])
    report = {}
    for name, rows in zip(SPLITS, (np.ones(len(pairs), bool), ~unseen, unseen)):
        if rows.any():
            scores = pair_scores(left[rows], right[rows], pairs[rows])
            report[name] = {**scores, "count": int(rows.sum())}
    return report
