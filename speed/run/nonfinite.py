"""What training does when its numbers go non-finite (NaN or inf), so that none reach disk.

Two alarms: `max_nonfinite` optimizer steps in a row whose loss was NaN/inf on some rank (each
such step is skipped on every rank), and a model, EMA or optimizer state holding NaN/inf when a
checkpoint is due (that checkpoint is never written: one line). Either one answers with the
policy `on_nonfinite`:

- `stop`: the run ends with one line (`NonFiniteLossError`); its checkpoints, all finite, stay.
- `rollback`: the state is restored from the newest checkpoint that loads, and training goes on
  with the data that follows the failure: the batches in between are skipped (restarting from a
  checkpoint before a loss spike and skipping the batches around it, as Chowdhery et al. 2022,
  "PaLM", section 5.1, did). An alarm before one finite step has followed a rollback, or a
  second rollback to the same checkpoint (no newer one written since), stops the run: the
  trouble is not in the data.

Every rank takes the same decision: the alarms are reduced over the ranks before they are read.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from speed.errors import UserError
from speed.run import RunDir, TrainState, list_checkpoints, load_newest_good
from speed.utils.distributed import all_gather_objects, print0

ADVICE = "lower the lr, use bf16 instead of fp16, or set grad_clip"


class NonFiniteLossError(UserError, RuntimeError):
    """Training went non-finite and the policy (or the lack of a checkpoint to return to) says
    stop; one line, the run's finite checkpoints are kept."""


class NonFiniteGuard:
    """The run's answer to non-finite losses and states (see the module docstring)."""

    def __init__(self, cfg: DictConfig, dist, run: RunDir):
        self.policy = cfg.on_nonfinite
        self.max_in_a_row = cfg.max_nonfinite
        self.trust = cfg.trust_checkpoint
        self.dist, self.run = dist, run
        self.in_a_row = 0
        self.rolled_back_to: Path | None = None  # the last rollback's checkpoint, until a newer
        self.last_rollback: Path | None = None  # the last rollback's checkpoint
        self.stepped = True  # a finite step was taken since the last rollback

    def loss(self, state: TrainState, nonfinite: bool) -> bool:
        """Count a step whose loss was (`nonfinite`) or was not NaN/inf on some rank; act on the
        `max_nonfinite`-th in a row. True when the state was rolled back."""
        if not nonfinite:
            self.in_a_row, self.stepped = 0, True
            return False
        self.in_a_row += 1
        if self.in_a_row < self.max_in_a_row:
            return False
        self.act(state, f"loss was NaN/inf for {self.in_a_row} steps in a row at step {state.step}")
        return True

    def finite(self, state: TrainState, can_roll_back: bool = True) -> bool:
        """Whether `state` may be checkpointed: True when every rank's model, EMAs and optimizer
        state are finite; else the checkpoint is refused in one line and the policy acts (False
        after a rollback). `can_roll_back=False` (no data left to go on with) always stops."""
        bad = next((name for name in all_gather_objects(state.nonfinite_entry()) if name), None)
        if bad is None:
            self.rolled_back_to = None  # a newer checkpoint to return to
            return True
        print0(f"step {state.step}: checkpoint not written: NaN/inf in {bad}")
        self.act(state, f"NaN/inf in {bad} at step {state.step}", can_roll_back)
        return False

    def act(self, state: TrainState, what: str, can_roll_back: bool = True) -> None:
        """Apply the policy to the problem `what`: raise (stop), or roll `state` back."""
        if self.policy != "rollback" or not can_roll_back:
            raise NonFiniteLossError(f"{what}; {ADVICE} (or on_nonfinite=rollback)")
        if not self.stepped:
            raise NonFiniteLossError(
                f"{what}, with no finite step since rolling back to {self.last_rollback.name}; "
                f"{ADVICE}"
            )
        candidates = list_checkpoints(self.run.checkpoints)[::-1]
        if not candidates:
            raise NonFiniteLossError(f"{what}, and no checkpoint to roll back to yet; {ADVICE}")
        position = state.epoch, state.batches_in_epoch
        path = load_newest_good(
            state, candidates, self.dist.rank, world_size=self.dist.world_size, trust=self.trust
        )
        if path == self.rolled_back_to:
            raise NonFiniteLossError(f"{what}, again after rolling back to {path.name}; {ADVICE}")
        self.rolled_back_to = self.last_rollback = path
        self.in_a_row, self.stepped = 0, False
        state.epoch, state.batches_in_epoch = position  # go on with the data after the failure
        print0(f"{what}: rolled back to {path.name} (step {state.step}), skipping the data since")
