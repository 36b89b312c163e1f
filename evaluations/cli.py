"""Arguments and error handling shared by the `evaluations.fid` and `evaluations.evaluator` CLIs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from evaluations.evaluate import FEATURE_KINDS, build_extractor
from evaluations.features import FeatureExtractor
from speed.errors import report_user_error


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Feature-extractor choice, batching, device and image-count options."""
    parser.add_argument(
        "--features",
        choices=FEATURE_KINDS,
        default="inception",
        help="inception: TF-Inception pool3 (standard FID); domain: the small demo-set classifier",
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


def run(main: Callable[[], int]) -> int:
    """Call `main`; a user error (`speed.errors.user_message`: a bad path, a bad file, too few
    images, a full disk) prints one `error: ...` line and returns 2. Any other exception is a bug
    and keeps its traceback; SPEED_DEBUG=1 shows the traceback of user errors too."""
    try:
        return main()
    except Exception as error:
        return report_user_error(error)
