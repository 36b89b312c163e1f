"""speed: python main.py -c CONFIG -p PHASE [key=value ...]  (also under torchrun).

Phases: train, inference, sample, extract (encode a dataset into a latent cache), config (print
the resolved config and exit).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from speed.config import ConfigError, config_to_yaml, load_config

PHASES = {
    "train": "speed.runners.train:train",
    "inference": "speed.runners.inference:inference",
    "sample": "speed.runners.sample:sample",
    "extract": "speed.runners.extract:extract",
    "config": None,
}
USER_ERRORS = (ConfigError, FileNotFoundError, ValueError)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="experiment YAML under configs/")
    parser.add_argument("-p", "--phase", required=True, choices=sorted(PHASES))
    parser.add_argument(
        "--print-config", action="store_true", help="print the config resolved for PHASE and exit"
    )
    parser.add_argument("overrides", nargs="*", help="key=value or phase.key=value overrides")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    phase = "train" if args.phase == "config" else args.phase
    try:
        cfg = load_config(args.config, phase, args.overrides)
        if args.phase == "config" or args.print_config:
            print(config_to_yaml(cfg), end="")
            return 0
        module_name, fn_name = PHASES[args.phase].split(":")
        getattr(importlib.import_module(module_name), fn_name)(cfg)
    except USER_ERRORS as error:
        if os.environ.get("SPEED_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
