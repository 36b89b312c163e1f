"""python -m speed.serve RUN_DIR [--host 0.0.0.0] [--port 8000] [--backend fp32|bf16|compile|onnx]
[--max-images 16 ...]: serve a trained run's model over HTTP until SIGTERM or Ctrl-C, which
finish every accepted request before the process ends (docs/serve.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import uvicorn

from speed.errors import ConfigError, report_user_error
from speed.serve.app import create_app
from speed.serve.backends import BACKENDS
from speed.serve.client import TOKEN_ENV
from speed.serve.engine import Engine
from speed.serve.limits import ServeLimits
from speed.utils import bounds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m speed.serve", description="Serve a trained run's model over HTTP."
    )
    parser.add_argument("run_dir", help="a training run's experiment_dir (holds train/checkpoints)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="fp32", choices=list(BACKENDS))
    parser.add_argument("--checkpoint", help="a stem in train/checkpoints (default: the newest)")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="also unpickle checkpoints holding objects besides tensors (can run code)",
    )
    parser.add_argument(
        "--token-file",
        help=f"file holding the bearer token POST /generate needs (or set ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=60.0,
        help="seconds a shutdown waits for open requests (default 60)",
    )
    bounds.add_arguments(parser, ServeLimits)
    return parser.parse_args(argv)


def read_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        if not token:
            raise ConfigError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        limits = bounds.from_arguments(args, ServeLimits)
        engine = Engine(
            args.run_dir,
            args.device,
            args.backend,
            args.checkpoint,
            trust=args.trust_checkpoint,
            max_steps=limits.max_steps,
            rows=limits.rows,
            max_prompt_chars=limits.max_prompt_chars,
        )
        app = create_app(engine, limits, read_token(args))
    except Exception as error:
        return report_user_error(error)
    print(f"speed serve: {args.run_dir} ({engine.checkpoint}, {engine.backend})", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=args.graceful_timeout,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
