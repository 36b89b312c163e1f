"""Run a study, or rebuild its report: python -m speed.study STUDY.yaml [--report] [--shard i/n].

    python -m speed.study studies/speed_unet.yaml                    # the whole study, here
    python -m speed.study studies/speed_unet.yaml --shard 0/2 &      # or two workers sharing it
    python -m speed.study studies/speed_unet.yaml --shard 1/2 &
    python -m speed.study studies/speed_unet.yaml --report           # the report so far
    python -m speed.study studies/speed_unet.yaml --status           # where each run stands
    python -m speed.study studies/speed_unet.yaml --time --threads 1 # each method's s/step here

A stopped study (Ctrl-C, a killed worker, a lost machine) resumes with the same command: finished
runs are never redone, unfinished ones continue from their last checkpoint, and scores are cached
per checkpoint. The report is rebuilt from the records after every command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from speed.errors import ConfigError, run_cli
from speed.study.plan import open_study
from speed.study.report import write_report
from speed.study.scoring import Scorer
from speed.study.status import status_lines
from speed.study.timing import time_study
from speed.study.work import StudyInterrupted, work


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study file (YAML)")
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    parser.add_argument(
        "--status", action="store_true", help="where each run stands, and the training left"
    )
    parser.add_argument("--shard", default="0/1", help="i/n: this worker's share of the runs")
    parser.add_argument("--runs", type=Path, default=None, help="runs folder (default: the file's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--poll", type=float, default=60.0, help="seconds between looks for work")
    parser.add_argument(
        "--time", action="store_true", help="time every method here: <records>/timing.json"
    )
    parser.add_argument("--time-steps", type=int, default=4, help="optimizer steps per round")
    parser.add_argument("--time-rounds", type=int, default=3, help="timed rounds (the median)")
    parser.add_argument("--time-warmup", type=int, default=2, help="untimed steps first")
    return parser.parse_args(argv)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: write it as i/n, e.g. 0/2") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: i must lie in [0, n)")
    return index, count


def study_main(args: argparse.Namespace, command: str) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    shard = parse_shard(args.shard)
    study, sweep, runs, records = open_study(args.study, args.runs)
    if args.status:
        print("\n".join(status_lines(study, sweep, runs, records)))
        return 0
    if args.time:
        if min(args.time_steps, args.time_rounds) < 1 or args.time_warmup < 0:
            raise ConfigError("--time-steps and --time-rounds must be >= 1, --time-warmup >= 0")
        time_study(study, sweep, command, args.time_steps, args.time_rounds, args.time_warmup)
        if records:
            write_report(study, runs, records, command)
        return 0
    if not args.report:
        try:
            work(study, sweep, Scorer(study, sweep), shard, args.poll)
        except StudyInterrupted as stop:
            print(f"study stopped: {stop}; run the same command to resume", flush=True)
            return 1
        study, sweep, runs, records = open_study(args.study, args.runs)
    if not records:
        print(f"no finished runs in {study.records_dir} yet: run without --report to start")
        return 1 if args.report else 0
    write_report(study, runs, records, command)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return run_cli(lambda: study_main(args, " ".join(["python -m speed.study", *argv])))


if __name__ == "__main__":
    raise SystemExit(main())
