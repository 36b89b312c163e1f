"""Adapters: fine-tune a trained backbone through a small set of new weights, applied by the
builder on top of any backbone (never a copy of one). `build_adapter` makes one from the config's
`adapter` node: `NoAdapter` (rank 0: the whole model trains and is saved) or `LoRA`.

An adapter's interface, used by the training state and the model builder:
`enabled`, `apply(model)`, `trainable(module)`, `state_dict(model)`,
`load_state_dict(model, state, source)`, `merge(model)`, `record()`, `check(record, source)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from speed.adapters.lora import LoRA
from speed.errors import ConfigError
from speed.models.loading import load_state_strict


class NoAdapter:
    """No adapter: the model trains whole and its checkpoints hold all its weights."""

    kind = None
    enabled = False

    def apply(self, model: nn.Module) -> nn.Module:
        return model

    def trainable(self, module: nn.Module) -> Iterator[nn.Parameter]:
        return module.parameters()

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def load_state_dict(self, model: nn.Module, state: Mapping, source) -> None:
        load_state_strict(model, state, source)

    def merge(self, model: nn.Module) -> nn.Module:
        return model

    def record(self) -> None:
        return None

    def check(self, record: Mapping | None, source) -> None:
        if record:
            if record.get("kind") == "controlnet":
                raise ConfigError(
                    f"{source} holds only a control branch of {record.get('base')}; resume it "
                    "with the control node it was trained with"
                )
            raise ConfigError(
                f"{source} holds only a LoRA adapter (rank {record.get('rank')}) of "
                f"{record.get('base')}; resume it with the adapter node it was trained with"
            )


def build_adapter(
    rank: int = 0,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: str | list[str] | None = None,
    base: str | None = None,
) -> NoAdapter | LoRA:
    """`NoAdapter` when rank is 0, else `LoRA` with these settings (see `LoRA`)."""
    if rank == 0:
        return NoAdapter()
    return LoRA(rank, alpha, dropout, target_modules, base)


def adapter_of_checkpoint(ckpt: Mapping, configured: NoAdapter | LoRA) -> NoAdapter | LoRA:
    """The adapter a loaded checkpoint needs to be sampled: `NoAdapter` for a full model's
    weights; for an adapter file, the recorded adapter over the configured `adapter.base` when
    set (else the base path the file records)."""
    record = ckpt.get("adapter") if isinstance(ckpt, Mapping) else None
    if not record:
        return NoAdapter()
    base = configured.base if configured.enabled else None
    return LoRA.from_record(record, base)


__all__ = ["LoRA", "NoAdapter", "adapter_of_checkpoint", "build_adapter"]
