"""speed: python main.py -c CONFIG -p PHASE [key=value ...]  (also under torchrun).

Phases: train, inference, sample, extract (encode a dataset into a latent cache), export (the
denoiser as ONNX), config (print the resolved config and exit). With -m/--multirun, swept values
(`diffusion.k=1,5,10`, `range(...)`, `choice(...)`, `config=glob(...)`) run one experiment per
combination, each in `<experiment_dir>/sweep/<key=value,...>/` (see docs/sweeps.md).

A mistake the user can fix (`speed.errors.user_message`: a config value, a missing or broken
file, a full disk, a run folder held by another run) prints one `error: ...` line and exits with
2 (SPEED_DEBUG=1 shows its traceback); any other exception is a bug and keeps its traceback.
Training stopped by SIGTERM/SIGINT checkpoints, prints one `interrupted: ...` line with the
checkpoint and the command that resumes it, and exits with 128 + the signal (143, 130).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import shlex
import signal
import sys
from pathlib import Path

from speed.config import check_values, config_to_yaml, load_config
from speed.errors import Interrupted, report_user_error
from speed.utils.distributed import leave_process_group

PHASES = {
    "train": "speed.runners.train:train",
    "inference": "speed.runners.inference:inference",
    "sample": "speed.runners.sample:sample",
    "extract": "speed.runners.extract:extract",
    "export": "speed.runners.export:export",
    "config": None,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="experiment YAML under configs/")
    parser.add_argument("-p", "--phase", required=True, choices=sorted(PHASES))
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="one run per combination of swept values"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the config resolved for PHASE and exit"
    )
    parser.add_argument("overrides", nargs="*", help="key=value or phase.key=value overrides")
    return parser.parse_args(argv)


def run_phase(phase: str, cfg) -> None:
    module_name, fn_name = PHASES[phase].split(":")
    getattr(importlib.import_module(module_name), fn_name)(cfg)


def multirun(args: argparse.Namespace, phase: str, show: bool) -> None:
    """-m: print every run's config (`-p config`), or run the sweep."""
    from speed.sweep.launch import plan_sweep, run_sweep

    if show:
        sweep, configs = plan_sweep(args.config, phase, args.overrides)
        for run, cfg in zip(sweep.runs, configs):
            print(f"# {sweep.sweep_dir / run.name}\n{config_to_yaml(cfg)}", end="")
        return
    script = Path(__file__).resolve()
    run_sweep(args.config, phase, args.overrides, functools.partial(run_phase, phase), script)


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues an interrupted training (a sweep resumes its unfinished runs
    by itself); under torchrun, with the same torchrun options."""
    words = [w for w in args.overrides if not w.startswith(("resume=", "overwrite="))]
    words = ["-m", *words] if args.multirun else [*words, "resume=true"]
    launcher = "torchrun <same options>" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "python"
    return f"{launcher} {shlex.join(['main.py', '-c', args.config, '-p', 'train', *words])}"


def main(argv=None) -> int:
    args = parse_args(argv)
    phase = "train" if args.phase == "config" else args.phase
    show = args.phase == "config" or args.print_config
    try:
        if args.multirun:
            multirun(args, phase, show)
            leave_process_group()
            return 0
        cfg = load_config(args.config, phase, args.overrides)
        check_values(cfg)
        if show:
            print(config_to_yaml(cfg), end="")
            return 0
        run_phase(phase, cfg)
        leave_process_group()
    except Interrupted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            name = signal.Signals(stop.signum).name
            print(
                f"interrupted ({name}) at step {stop.step}: saved {stop.checkpoint}; "
                f"resume with: {resume_command(args)}",
                file=sys.stderr,
                flush=True,
            )
        leave_process_group()
        return stop.exit_code
    except Exception as error:
        return report_user_error(error)  # a bug (or SPEED_DEBUG=1) keeps its traceback
    return 0


if __name__ == "__main__":
    sys.exit(main())
