"""Super-resolution scores: python -m evaluations.super_res REF SAMPLES [--floor BICUBIC].

REF holds the high-res references and SAMPLES the upsampled results, paired image by image (the
`.npz` files or folders the inference phase writes for a super-resolution model:
`inference/<name>.npz` and `inference/<name>/reference.npz`, `.../bicubic.npz`). Prints PSNR (dB)
and SSIM, the mean over the pairs (`evaluations.metrics.psnr` / `ssim`), and the FID against the
references (`evaluations.evaluate`'s registry), for the samples and for the floor (bicubic
up-sampling of the same low-res inputs), one row each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evaluations import metrics
from evaluations.cli import add_common_args, extractor_from_args
from evaluations.evaluate import compute_metrics
from evaluations.features import FeatureExtractor
from evaluations.image_io import ImageSource, load_source
from speed.errors import DataError, run_cli


def paired_scores(reference: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """{"psnr": mean dB, "ssim": mean} of images [N, H, W, C] against references [N, H, W, C]."""
    return {
        "psnr": float(np.mean(metrics.psnr(images, reference))),
        "ssim": float(np.mean(metrics.ssim(images, reference))),
    }


def score_sets(
    reference: ImageSource,
    sets: dict[str, ImageSource],
    extractor: FeatureExtractor | None,
    **fid_options,
) -> dict[str, dict[str, float]]:
    """{set name: {"psnr", "ssim"[, "fid"]}} of each image set against `reference` (the same
    number of images, in the same order); FID only with an extractor (fid_options:
    `compute_metrics`' batch_size, device, progress)."""
    rows = {}
    for name, source in sets.items():
        if source.images.shape != reference.images.shape:
            raise DataError(
                f"{source.path}: {source.images.shape} images, but the references in "
                f"{reference.path} are {reference.images.shape}; they must pair one to one"
            )
        rows[name] = paired_scores(reference.images, source.images)
        if extractor is not None:
            fid = compute_metrics(reference, source, extractor, which=("fid",), **fid_options)
            rows[name]["fid"] = fid["fid"]["value"]
    return rows


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """One line per set: PSNR (dB), SSIM and FID (when computed)."""
    lines = [f"{'':10s} {'PSNR (dB)':>10s} {'SSIM':>8s} {'FID':>9s}"]
    for name, row in rows.items():
        fid = f"{row['fid']:9.3f}" if "fid" in row else f"{'-':>9s}"
        lines.append(f"{name:10s} {row['psnr']:10.3f} {row['ssim']:8.4f} {fid}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="high-res references: .npz or image folder")
    parser.add_argument("samples", help="upsampled results, paired with REF: .npz or folder")
    parser.add_argument("--floor", default=None, help="bicubic up-sampling of the same inputs")
    parser.add_argument("--no-fid", action="store_true", help="PSNR and SSIM only (no features)")
    parser.add_argument("--out", type=Path, default=None, help="write the scores as JSON here")
    add_common_args(parser)
    args = parser.parse_args(argv)

    def evaluate() -> int:
        reference = load_source(args.ref, args.num_ref)
        if not isinstance(reference, ImageSource):
            raise DataError(f"{args.ref}: paired metrics need the reference images, not statistics")
        sets = {"model": load_source(args.samples, args.num)}
        if args.floor is not None:
            sets["bicubic"] = load_source(args.floor, args.num)
        extractor = None if args.no_fid else extractor_from_args(args)
        rows = score_sets(
            reference,
            sets,
            extractor,
            batch_size=args.batch_size,
            device=args.device,
            progress=not args.quiet,
        )
        print(f"{len(reference)} pairs; features: {extractor.name if extractor else 'none'}")
        print(format_table(rows))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
        return 0

    return run_cli(evaluate)


if __name__ == "__main__":
    sys.exit(main())
