"""The ControlNet as an add-on of a trained checkpoint, built from the config's `control` node:
the branch it trains over a frozen base, the control images it is conditioned on, and what its
checkpoints hold (the branch only, with a record naming the base by its sha256), after the LoRA
adapter's interface (`speed.adapters`): `enabled`, `apply(model)`, `trainable(module)`,
`state_dict(model)`, `load_state_dict(model, state, source)`, `merge(model)`, `record()`,
`check(record, source)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from speed.control.dit import DiTControlBranch
from speed.control.model import ControlledModel
from speed.control.transforms import build_transform
from speed.control.unet import UNetControlBranch
from speed.errors import ConfigError, MissingFileError
from speed.models.loading import file_sha256

BRANCH_PREFIX = "branch."  # the state-dict keys of the branch inside a ControlledModel
BRANCHES = ("dit", "unet")  # DiTControlBranch (PixArt-delta), UNetControlBranch (ControlNet)


class ControlNet:
    """A control branch of kind `branch` over a model trained before (`base`).

    Args:
        branch: dit (trainable copies of the base's first `num_blocks` blocks, PixArt-delta) or
            unet (a trainable copy of the ADM UNet's encoder, ControlNet).
        base: path of the base checkpoint (its EMA weights when it has them).
        num_blocks: dit only: blocks copied (PixArt-delta: 13 of DiT-XL's 28).
        transform: the control image computed from an image: edges, mask or low_res.
        transform_options: the transform's settings (threshold; factor).
        scale: the control strength: the branch's residuals are multiplied by it (0 = the base).
        images: sample phase: a control image or a folder of them (None: the transforms of the
            first images of the data).
    """

    kind = "controlnet"
    enabled = True

    def __init__(
        self,
        branch: str,
        base: str | os.PathLike,
        num_blocks: int = 13,
        transform: str = "edges",
        transform_options: Mapping | None = None,
        scale: float = 1.0,
        images: str | None = None,
    ):
        if branch not in BRANCHES:
            raise ConfigError(f"control.branch must be one of {BRANCHES} (or null), got {branch!r}")
        if not base:
            raise ConfigError("control.branch needs control.base: the checkpoint it trains on")
        if scale < 0:
            raise ConfigError(f"control.scale must be >= 0, got {scale}")
        self.branch, self.num_blocks, self.scale = branch, int(num_blocks), float(scale)
        self.transform_name = transform
        self.transform_options = dict(transform_options or {})
        try:
            self.transform = build_transform(transform, **self.transform_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"control.transform: {error}") from None
        self.base = Path(base)
        self.images = images
        self._base_sha256: str | None = None

    @property
    def base_sha256(self) -> str:
        """The sha256 of the base checkpoint's bytes (computed once)."""
        if self._base_sha256 is None:
            if not self.base.is_file():
                raise MissingFileError(f"control.base: no checkpoint at {self.base}")
            self._base_sha256 = file_sha256(self.base)
        return self._base_sha256

    # ---- the model ----

    def apply(self, model: nn.Module) -> ControlledModel:
        """`model` (frozen) under a new branch (trainable) of this kind."""
        if self.branch == "dit":
            if not hasattr(model, "blocks"):
                raise ConfigError(f"control.branch=dit needs a DiT, got {type(model).__name__}")
            if not 1 <= self.num_blocks < len(model.blocks):
                raise ConfigError(
                    f"control.num_blocks must lie in 1..{len(model.blocks) - 1} for this "
                    f"{len(model.blocks)}-block DiT, got {self.num_blocks}"
                )
            branch = DiTControlBranch(model, self.num_blocks)
        else:
            if not hasattr(model, "input_blocks"):
                raise ConfigError(f"control.branch=unet needs a UNet, got {type(model).__name__}")
            branch = UNetControlBranch(model, control_channels=model.in_channels)
        return ControlledModel(model, branch, self.scale)

    def trainable(self, module: nn.Module) -> Iterator[nn.Parameter]:
        """The parameters the optimizer updates: the branch's (the base is frozen)."""
        return (p for p in module.parameters() if p.requires_grad)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The branch's weights only."""
        return {k: v for k, v in model.state_dict().items() if k.startswith(BRANCH_PREFIX)}

    def load_state_dict(self, model: nn.Module, state: Mapping, source) -> None:
        """Load branch weights saved by `state_dict`; other keys or shapes: one-line ConfigError."""
        own = self.state_dict(model)
        if set(state) != set(own):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ConfigError(
                f"{source} does not hold this control branch's weights ({len(missing)} missing, "
                f"e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]}); use the "
                "control node it was trained with"
            )
        shapes = [k for k, v in state.items() if v.shape != own[k].shape]
        if shapes:
            raise ConfigError(f"{source}: control weight {shapes[0]} has another shape")
        model.load_state_dict(dict(state), strict=False)

    def merge(self, model: nn.Module) -> nn.Module:
        """The branch stays a module of its own: sampling calls the controlled model."""
        return model

    # ---- control images ----

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """Control maps [N, C, H, W] in [-1, 1] of images [N, C, H, W] in [-1, 1]: the transform,
        its single channel repeated to the image's C (so a map is encoded like an image)."""
        out = self.transform(images)
        return out.expand(-1, images.shape[1], -1, -1) if out.shape[1] == 1 else out

    # ---- the record in a checkpoint ----

    def record(self) -> dict:
        """What a checkpoint of this branch records: kind, settings and the base's identity."""
        return {
            "kind": self.kind,
            "branch": self.branch,
            "num_blocks": self.num_blocks,
            "transform": self.transform_name,
            "transform_options": self.transform_options,
            "base": str(self.base),
            "base_sha256": self.base_sha256,
        }

    @classmethod
    def from_record(cls, record: Mapping, configured: ControlNet | None = None) -> ControlNet:
        """The branch a checkpoint records, over the configured base, scale and images when a
        `control` node is set (else the base path the file records, scale 1)."""
        return cls(
            branch=record["branch"],
            base=configured.base if configured is not None else record["base"],
            num_blocks=record["num_blocks"],
            transform=record["transform"],
            transform_options=record["transform_options"],
            scale=configured.scale if configured is not None else 1.0,
            images=configured.images if configured is not None else None,
        )

    def check(self, record: Mapping | None, source) -> None:
        """ConfigError, one line, unless `record` (a checkpoint's) is this branch on this base."""
        if not record or record.get("kind") != self.kind:
            raise ConfigError(
                f"{source} holds no control branch; resume it with control.branch=null, or "
                "start the control run in a new experiment_dir"
            )
        if record["base_sha256"] != self.base_sha256:
            raise ConfigError(
                f"{source} is a control branch of the base with sha256 "
                f"{record['base_sha256'][:12]}..., but control.base={self.base} has sha256 "
                f"{self.base_sha256[:12]}...; set control.base to the checkpoint it was trained "
                f"on ({record['base']})"
            )
        mine = self.record()
        changed = [k for k in ("branch", "num_blocks", "transform", "transform_options")
                   if record.get(k) != mine[k]]  # fmt: skip
        if changed:
            was = ", ".join(f"{k}={record.get(k)!r}" for k in changed)
            raise ConfigError(f"{source} was trained with control {was}; set the same")


def build_control(
    branch: str | None = None,
    base: str | None = None,
    num_blocks: int = 13,
    transform: str = "edges",
    transform_options: dict | None = None,
    scale: float = 1.0,
    images: str | None = None,
) -> ControlNet | None:
    """None when `branch` is null (no ControlNet), else `ControlNet` with these settings."""
    if branch is None:
        return None
    return ControlNet(branch, base, num_blocks, transform, transform_options, scale, images)
