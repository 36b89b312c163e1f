"""All metrics, after ADM's evaluator: python -m evaluations.evaluator REF [SAMPLES] [options].

Prints every metric of `evaluations.evaluate.METRICS` (FID, sFID, IS, KID, precision, recall, and
class accuracy for the domain classifier), or those `--metrics` names (the text demo's
`pair_alignment`, under `--features pairs`, is scored only when named), each metric setting being
an option (`--kid-subsets`, `--pr-k`, ...); `--out metrics.json` also writes them with the feature
extractor of each.
`--save-ref stats.npz` stores REF's statistics (add `--save-ref-features` for KID / precision /
recall) so later runs can pass stats.npz as REF; SAMPLES may then be left out. Under torchrun the
processes share the feature extraction and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluations.cli import add_common_args, extractor_from_args
from evaluations.evaluate import (
    ALL_METRICS,
    METRICS,
    compute_metrics,
    format_report,
    metric_settings,
    source_stats,
)
from evaluations.image_io import load_source
from speed.errors import run_cli
from speed.utils.distributed import init_distributed, print0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="reference .npz, image folder or statistics .npz")
    parser.add_argument("samples", nargs="?", help="samples .npz or image folder")
    add_common_args(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    parser.add_argument(
        "--metrics", nargs="+", choices=list(METRICS), default=list(ALL_METRICS),
        help="metrics to score (default: all but pair_alignment)",
    )  # fmt: skip
    parser.add_argument("--save-ref", type=Path, default=None, help="save REF statistics here")
    parser.add_argument(
        "--save-ref-features", action="store_true", help="--save-ref also keeps the features"
    )
    for name, (default, meaning) in metric_settings().items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(default), default=default, help=meaning)
    args = parser.parse_args(argv)
    if args.samples is None and args.save_ref is None:
        parser.error("give SAMPLES, or --save-ref to only store REF's statistics")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def evaluate() -> int:
        dist = init_distributed()
        shared = dist.world_size > 1
        reference = load_source(args.ref, args.num_ref)
        samples = None if args.samples is None else load_source(args.samples, args.num)
        extractor = extractor_from_args(args)
        if args.save_ref is not None:
            reference = source_stats(
                reference, extractor, args.batch_size, args.device, not args.quiet, shared
            )
            if dist.is_main:
                reference.save(args.save_ref, with_features=args.save_ref_features)
            print0(f"saved reference statistics to {args.save_ref}")
        if samples is None:
            return 0
        result = compute_metrics(
            reference,
            samples,
            extractor,
            tuple(args.metrics),
            batch_size=args.batch_size,
            device=args.device,
            progress=not args.quiet,
            shared=shared,
            **{name: getattr(args, name) for name in metric_settings()},
        )
        print0(format_report(result))
        if args.out is not None and dist.is_main:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.out}")
        return 0

    return run_cli(evaluate)


if __name__ == "__main__":
    sys.exit(main())
