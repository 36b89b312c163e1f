"""Text alignment of the animal-pairs demo without pretrained weights: the shipped domain
classifier (`evaluations.domain_classifier`) names the animal in each half of a composed image
(`speed.data.animal_pairs`), and a sample counts as aligned with its prompt "a cat left of a
zebra" when both halves show the animal the prompt put there.

`classify_halves` does the I/O-free network part (batches of images -> class ids); the scores
(`pair_alignment`) are a pure function of arrays. The command line scores an inference `.npz`
that stores its prompts (`-p inference` of a text-to-image run), seen and held-out pairs apart,
and with `--clip` adds the CLIP score (`evaluations.clip_score`):

    python -m evaluations.text_alignment runs/animals_text/inference/0001800.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from evaluations.cli import run
from evaluations.domain_classifier import DomainFeatures
from speed.data.animal_pairs import HELD_OUT_PAIRS, parse_pair
from speed.data.animals import ANIMAL_CLASSES
from speed.errors import DataError

SHIPPED_CLASSIFIER = Path(__file__).resolve().parents[1] / "benchmarks/assets/domain_classifier.pt"


def split_halves(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


@torch.no_grad()
def classify_halves(
    images, classifier: DomainFeatures, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class ids [N] of the left and of the right half of each image."""
    left, right = split_halves(images)
    predictions = []
    for halves in (left, right):
        logits = [
            classifier.activations(halves[i : i + batch_size])["logits"]
            for i in range(0, len(halves), batch_size)
        ]
        predictions.append(torch.cat(logits).argmax(1).numpy())
    return predictions[0], predictions[1]


def pair_alignment(left: np.ndarray, right: np.ndarray, pairs: np.ndarray) -> dict[str, float]:
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


def alignment_report(images, prompts: list[str], classifier: DomainFeatures) -> dict:
    """`pair_alignment` over the images whose prompt names a pair: all of them, those of pairs
    seen in training and those of the held-out pairs (`HELD_OUT_PAIRS`), each with its count."""
    pairs = prompt_pairs(prompts)
    named = pairs[:, 0] >= 0
    if not named.any():
        raise DataError("no prompt names an animal pair ('a cat left of a zebra')")
    left, right = classify_halves(np.asarray(images)[named], classifier)
    pairs = pairs[named]
    held = {(ANIMAL_CLASSES.index(a), ANIMAL_CLASSES.index(b)) for a, b in HELD_OUT_PAIRS}
    unseen = np.array([tuple(p) in held for p in pairs.tolist()])
    report = {}
    for name, rows in (("all", slice(None)), ("seen", ~unseen), ("held_out", unseen)):
        count = int(np.ones(len(pairs), bool)[rows].sum())
        if count:
            report[name] = {**pair_alignment(left[rows], right[rows], pairs[rows]), "count": count}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Text alignment of text-to-image samples.")
    parser.add_argument("npz", help="inference output holding arr_0 and prompts")
    parser.add_argument("--domain", default=str(SHIPPED_CLASSIFIER), help="classifier weights")
    parser.add_argument("--clip", default=None, help="local CLIP folder: add the CLIP score")
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    args = parser.parse_args(argv)

    def evaluate() -> int:
        path = Path(args.npz)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        data = np.load(path)
        if "prompts" not in data.files:
            raise DataError(f"{path} stores no prompts; make it with -p inference of a text model")
        images, prompts = data["arr_0"], data["prompts"].tolist()
        report = {"pairs": alignment_report(images, prompts, DomainFeatures(args.domain))}
        if args.clip:
            from evaluations.clip_score import ClipEmbedder, clip_score

            report["clip_score"] = clip_score(*ClipEmbedder(args.clip).embed(images, prompts))
        text = json.dumps(report, indent=1)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0

    return run(evaluate)


if __name__ == "__main__":
    sys.exit(main())
