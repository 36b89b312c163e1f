"""Write real images of an experiment's dataset as a reference `.npz` for the evaluators.

    python -m speed.experiments.export_reference -c configs/image/animals/base.yaml --out ref.npz

The images are a seeded random subset of the config's `data` node, without flips, in the ADM
evaluator's format (arr_0 uint8 [N, H, W, 3], arr_1 labels), so FID compares like with like.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from speed.config import load_config
from speed.errors import run_cli
from speed.runners.build import build_reference_dataset
from speed.utils.images import to_uint8


def export_reference(dataset, num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [num, H, W, 3] images, int64 [num] labels) drawn without replacement; `dataset`
    without random flips (`speed.runners.build.build_reference_dataset`), or the images depend on
    the torch random state of the moment."""
    if dataset.is_latent:
        raise ValueError("export_reference needs an image dataset, not a latent cache")
    order = np.random.default_rng(seed).permutation(len(dataset))[:num]
    images, labels = [], []
    state = torch.get_rng_state()
    for index in order:
        x, y = dataset[int(index)]
        images.append(x)
        labels.append(int(y))
    torch.set_rng_state(state)
    pixels = to_uint8(torch.stack(images))
    if pixels.shape[3] == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    return pixels, np.asarray(labels, dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="experiment YAML")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--num", type=int, default=1000, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)

    def export() -> int:
        dataset = build_reference_dataset(load_config(args.config, "inference", args.overrides))
        images, labels = export_reference(dataset, args.num, args.seed)
        np.savez(args.out, arr_0=images, arr_1=labels)
        print(f"wrote {args.out}: {len(images)} images {images.shape[1:]}")
        return 0

    return run_cli(export)


if __name__ == "__main__":
    raise SystemExit(main())
