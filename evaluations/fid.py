"""FID between two image sets: python -m evaluations.fid REF SAMPLES [--features inception|domain].

REF and SAMPLES are `.npz` files (arr_0 uint8 NHWC, as the inference phase writes), image folders,
or (REF) a statistics `.npz` with `mu`/`sigma`. Prints the FID and the network that made it.
Under torchrun the processes share the feature extraction and rank 0 prints.
"""

from __future__ import annotations

import argparse
import sys

from evaluations.cli import add_common_args, extractor_from_args
from evaluations.evaluate import compute_metrics
from evaluations.image_io import load_source
from speed.errors import run_cli
from speed.utils.distributed import init_distributed, print0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="reference .npz, image folder or statistics .npz")
    parser.add_argument("samples", help="samples .npz or image folder")
    add_common_args(parser)
    args = parser.parse_args(argv)

    def fid() -> int:
        shared = init_distributed().world_size > 1
        reference = load_source(args.ref, args.num_ref)
        samples = load_source(args.samples, args.num)
        result = compute_metrics(
            reference,
            samples,
            extractor_from_args(args),
            which=("fid",),
            batch_size=args.batch_size,
            device=args.device,
            progress=not args.quiet,
            shared=shared,
        )
        print0(f"FID: {result['fid']['value']:.4f}")
        print0(f"features: {result['extractor']}")
        return 0

    return run_cli(fid)


if __name__ == "__main__":
    sys.exit(main())
