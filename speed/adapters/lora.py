"""LoRA (Hu et al. 2021, arXiv 2106.09685) on any backbone, through `peft`.

A frozen layer W x becomes W x + (alpha / r) B A x with A: [r, in] and B: [out, r]; B starts at
zero, so the adapted model starts as the base model. peft injects the low-rank pair into the
layers whose module names fully match `target_modules` (a regex) or end with one of its names
(a list); the backbone keeps its class, `forward` and `forward_with_cfg`.

The adapter's weights are the parameters whose names hold `lora_`; a checkpoint of an adapter run
holds only them (plus the optimizer's state of them), with a record naming the base checkpoint by
its sha256. `merge` folds B A into W and puts the plain layers back, so the merged model has the
backbone's own state-dict keys (for sampling and ONNX export).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from speed.errors import ConfigError, MissingFileError
from speed.models.loading import file_sha256

ADAPTER_KEY = "lora_"  # in the name of every adapter parameter peft adds


class LoRA:
    """Low-rank adapters of rank `rank` on the target layers of a model trained before (`base`).

    Args:
        rank: r, the rank of B A (>= 1).
        alpha: the update is scaled by alpha / rank (None = rank: scale 1).
        dropout: dropout probability on the adapter's input (training only).
        target_modules: a regex fully matching module names, or a list of name suffixes; None =
            the backbone's `adapter_targets` (its attention and MLP / projection layers).
        base: path of the base checkpoint (its EMA weights when it has them).
    """

    kind = "lora"

    def __init__(
        self,
        rank: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        target_modules: str | list[str] | None = None,
        base: str | None = None,
    ):
        if rank < 1:
            raise ConfigError(f"adapter.rank must be >= 1 for LoRA, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"adapter.dropout must lie in [0, 1), got {dropout}")
        if alpha is not None and alpha <= 0:
            raise ConfigError(f"adapter.alpha must be > 0 (or null = rank), got {alpha}")
        if not base:
            raise ConfigError(
                "adapter.rank > 0 needs adapter.base: the checkpoint the adapter trains on"
            )
        self.rank, self.dropout = int(rank), float(dropout)
        self.alpha = float(alpha) if alpha is not None else float(rank)
        self.target_modules = (
            list(target_modules) if isinstance(target_modules, list | tuple) else target_modules
        )
        self.base = Path(base)
        self._base_sha256: str | None = None

    @property
    def enabled(self) -> bool:
        return True

    @property
    def base_sha256(self) -> str:
        """The sha256 of the base checkpoint's bytes (computed once)."""
        if self._base_sha256 is None:
            if not self.base.is_file():
                raise MissingFileError(f"adapter.base: no checkpoint at {self.base}")
            self._base_sha256 = file_sha256(self.base)
        return self._base_sha256

    # ---- the model ----

    def apply(self, model: nn.Module) -> nn.Module:
        """Inject the adapters into `model` (in place) and freeze everything else."""
        targets = self.target_modules or getattr(model, "adapter_targets", None)
        if not targets:
            raise ConfigError(
                f"adapter.target_modules: {type(model).__name__} names no default LoRA layers; "
                "set adapter.target_modules (a regex of module names, e.g. '.*\\.qkv')"
            )
        from peft import LoraConfig, inject_adapter_in_model  # 2 s of import: only where used

        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
        )
        try:
            inject_adapter_in_model(config, model)
        except ValueError as error:  # peft: no module matched
            raise ConfigError(
                f"adapter.target_modules={targets!r} matches no layer LoRA can adapt in "
                f"{type(model).__name__} ({str(error).splitlines()[0][:120]})"
            ) from None
        for name, param in model.named_parameters():
            param.requires_grad_(ADAPTER_KEY in name)
        return model

    def trainable(self, module: nn.Module) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates: the adapters (and any other unfrozen ones)."""
        return (p for p in module.parameters() if p.requires_grad)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapter's weights only."""
        return {k: v for k, v in model.state_dict().items() if ADAPTER_KEY in k}

    def load_state_dict(self, model: nn.Module, state: Mapping, source) -> None:
        """Load adapter weights saved by `state_dict` into an adapted `model`; a file with other
        keys (another rank, other targets, a full checkpoint) is a ConfigError in one line."""
        expected = set(self.state_dict(model))
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ConfigError(
                f"{source} does not hold this adapter's weights ({len(missing)} missing, e.g. "
                f"{missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]}); use the adapter "
                "node it was trained with"
            )
        shapes = [k for k, v in state.items() if v.shape != model.state_dict()[k].shape]
        if shapes:
            raise ConfigError(
                f"{source}: adapter weight {shapes[0]} has another shape than adapter.rank="
                f"{self.rank} gives; use the rank it was trained with"
            )
        model.load_state_dict(dict(state), strict=False)

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold every adapter into its layer (W <- W + (alpha / r) B A) and put the plain layer
        back, so `model` has the backbone's own modules and state-dict keys again."""
        from peft.tuners.lora import LoraLayer

        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, module.get_base_layer())
        model.__dict__.pop("peft_config", None)
        return model

    # ---- the record in a checkpoint ----

    def record(self) -> dict:
        """What a checkpoint of this adapter records: kind, settings and the base's identity."""
        return {
            "kind": self.kind,
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": self.target_modules,
            "base": str(self.base),
            "base_sha256": self.base_sha256,
        }

    @classmethod
    def from_record(cls, record: Mapping, base: str | os.PathLike | None = None) -> LoRA:
        """The adapter a checkpoint records, over `base` (default: the base path it records)."""
        return cls(
            rank=record["rank"],
            alpha=record["alpha"],
            dropout=record["dropout"],
            target_modules=record["target_modules"],
            base=str(base or record["base"]),
        )

    def check(self, record: Mapping | None, source) -> None:
        """ConfigError, one line, unless `record` (a checkpoint's) is this adapter on this base."""
        if not record or record.get("kind") != self.kind:
            raise ConfigError(
                f"{source} holds no LoRA adapter (a full model's checkpoint, or a control "
                "branch's); resume it with "
                "adapter.rank=0, or start the adapter run in a new experiment_dir"
            )
        if record["base_sha256"] != self.base_sha256:
            raise ConfigError(
                f"{source} is an adapter of the base with sha256 {record['base_sha256'][:12]}..., "
                f"but adapter.base={self.base} has sha256 {self.base_sha256[:12]}...; set "
                f"adapter.base to the checkpoint it was trained on ({record['base']})"
            )
        mine = self.record()
        changed = [k for k in ("rank", "alpha", "target_modules") if record.get(k) != mine[k]]
        if changed:
            was = ", ".join(f"{k}={record.get(k)!r}" for k in changed)
            raise ConfigError(
                f"{source} was trained with adapter {was}; set the same in the adapter node"
            )
