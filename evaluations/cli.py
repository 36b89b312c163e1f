"""Arguments shared by the `evaluations.fid` and `evaluations.evaluator` CLIs (their errors:
`speed.errors.run_cli`)."""

from __future__ import annotations

import argparse

from evaluations.evaluate import FEATURE_KINDS, build_extractor
from evaluations.features import FeatureExtractor


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Feature-extractor choice, batching, device and image-count options."""
    parser.add_argument(
        "--features",
        choices=FEATURE_KINDS,
        default="inception",
        help="inception: TF-Inception pool3 (standard FID); domain: the small demo-set "
        "classifier; pairs: that classifier on each half of the text demo's images",
    )
    parser.add_argument(
        "--inception", default=None, help="Inception weights (default: default_1.pt)"
    )
    parser.add_argument("--domain", default=None, help="domain classifier weights file")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    parser.add_argument("--num", type=int, default=None, help="use only the first N samples")
    parser.add_argument("--num-ref", type=int, default=None, help="use only the first N references")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def extractor_from_args(args: argparse.Namespace) -> FeatureExtractor:
    return build_extractor(args.features, args.inception, args.domain)
