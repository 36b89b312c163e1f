"""python -m speed.app RUN_DIR [--host 127.0.0.1] [--port 7860] [--max-images 256 ...]: serve the
sampling page of a trained run (its experiment_dir) until Ctrl-C. The --max-* and --timeout flags
bound what one request may ask for (`speed.app.limits`; docs/app.md)."""

from __future__ import annotations

import argparse
import sys

import torch

from speed.app import limits
from speed.app.server import make_server
from speed.app.studio import RunStudio
from speed.errors import report_user_error
from speed.serve.client import ServeClient


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m speed.app", description=__doc__.split(":")[1])
    parser.add_argument("run_dir", help="a training run's experiment_dir (holds train/checkpoints)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="also unpickle checkpoints holding objects besides tensors (can run code)",
    )
    parser.add_argument(
        "--service",
        help="a running `python -m speed.serve` of this run (URL): it draws the grid's images",
    )
    limits.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        bounds = limits.from_arguments(args)
        service = ServeClient(args.service) if args.service else None
        studio = RunStudio(
            args.run_dir, args.device, trust=args.trust_checkpoint, limits=bounds, service=service
        )
        server = make_server(studio, args.host, args.port)
    except Exception as error:
        return report_user_error(error)
    host, port = server.server_address[:2]
    print(f"speed app: {args.run_dir} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
