"""Text alignment of text-to-image samples from the command line: the animal-pairs demo's pair
accuracy (`evaluations.pair_alignment`: the shipped domain classifier reads the animal in each half
of a composed image), seen and held-out pairs apart, of an inference `.npz` that stores its prompts
(`-p inference` of a text-to-image run); with `--clip` also the CLIP score
(`evaluations.clip_score`):

    python -m evaluations.text_alignment runs/animals_text/inference/0001800.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evaluations.pair_alignment import (
    SHIPPED_CLASSIFIER,
    PairFeatures,
    alignment_report,
    read_halves,
)
from speed.errors import DataError, run_cli


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
        left, right = read_halves(images, PairFeatures(args.domain))
        report = {"pairs": alignment_report(left, right, prompts)}
        if args.clip:
            from evaluations.clip_score import ClipEmbedder, clip_score

            report["clip_score"] = clip_score(*ClipEmbedder(args.clip).embed(images, prompts))
        text = json.dumps(report, indent=1)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return 0

    return run_cli(evaluate)


if __name__ == "__main__":
    sys.exit(main())
