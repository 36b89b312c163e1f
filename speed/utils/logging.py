"""Run logging: stdout, TensorBoard, wandb (only when asked: wandb=offline|online or WANDB_MODE) and
`metrics.jsonl` (one JSON object per log line, `{"step": ..., "loss": ...}`, appended across
resumes; `read_metrics` reads it back for tables).

Only rank 0 creates writers; on other ranks every method is a no-op, so callers need no rank checks.

Progress: `start_progress` draws a tqdm bar of the steps (rate and ETA) on rank 0 when stderr is a
terminal; a log file (stderr not a terminal) gets only the periodic log lines, which end with the
ETA, never a bar's stream of redraws.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speed.errors import ConfigError
from speed.utils.distributed import get_rank

WANDB_MODES = ("offline", "online", "disabled")
METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Writes scalars and images of one phase to stdout, TensorBoard and wandb, and the scalars
    to `log_dir/metrics.jsonl`.

    Args:
        log_dir: folder for `tensorboard/`, `wandb/` and `metrics.jsonl`.
        config: resolved config (a plain dict) stored with the wandb run.
        wandb_mode: offline | online | disabled; the WANDB_MODE environment variable wins.
        tensorboard: write TensorBoard event files.
        project, name: wandb project and run name.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        config: dict | None = None,
        wandb_mode: str = "disabled",
        tensorboard: bool = True,
        project: str = "speed",
        name: str | None = None,
    ):
        self.enabled = get_rank() == 0
        self._bar = None
        self._tb = None
        self._wandb = None
        self._jsonl = None
        if not self.enabled:
            return
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(log_dir / "tensorboard"))
        mode = os.environ.get("WANDB_MODE", wandb_mode)
        if mode not in WANDB_MODES:
            raise ConfigError(
                f"wandb: unknown mode '{mode}' (WANDB_MODE or wandb); use one of "
                f"{', '.join(WANDB_MODES)}"
            )
        if mode != "disabled":
            import wandb

            self._wandb = wandb.init(
                project=project, name=name, dir=str(log_dir), config=config, mode=mode
            )
        self._jsonl = open(log_dir / METRICS_FILE, "a")  # closed in close()

    def start_progress(self, total: int, initial: int, desc: str = "train") -> None:
        """A bar of `total` steps from `initial` (steps/s, ETA) when `interactive()`, else none."""
        if self.enabled and interactive():
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def scalars(
        self, step: int, values: dict[str, float], echo: bool = True, note: str = ""
    ) -> None:
        """Log a dict of scalars at `step` (printed on one line when `echo`, followed by `note`,
        which is printed only, e.g. the ETA)."""
        if not self.enabled:
            return
        if echo:
            text = " ".join(f"{k}={_fmt(v)}" for k, v in values.items() if "/" not in k)
            line = f"[step {step:07d}] {text}{' ' + note if note else ''}"
            if self._bar is not None:
                self._bar.write(line)  # above the bar, which is redrawn below it
            else:
                print(line, flush=True)
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(dict(values), step=step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Log a uint8 HWC image (e.g. a sample grid)."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(image)}, step=step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(log_dir: str | os.PathLike) -> list[dict]:
    """The log lines RunLogger wrote to `log_dir/metrics.jsonl`, oldest first ([] if none); a line
    cut short by a killed process is left out."""
    path = Path(log_dir) / METRICS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    metrics = []
    for line in lines:
        try:
            metrics.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return metrics


def interactive() -> bool:
    """Whether stderr is a terminal (a person watching), not a log file or a pipe."""
    return sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    """A duration for people: 42s, 3m05s, 2h07m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"
