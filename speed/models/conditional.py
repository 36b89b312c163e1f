"""The base of every backbone: class labels with a null label, classifier-free guidance, and
per-block gradient checkpointing and the blocks that fully sharded data parallel training wraps one
by one, written once for DiT and the ADM UNet.

Classifier-free guidance (Ho & Salimans 2022): training replaces labels by the null label
`num_classes` with probability `class_dropout_prob`, so one network learns eps(x, t, y) and
eps(x, t, null); `forward_with_cfg` mixes them (see `speed.models.guidance`). The label table
itself stays in the subclass under its official state-dict name (DiT's
`y_embedder.embedding_table`, guided-diffusion's `label_emb`) with `label_rows` rows, so official
checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from speed.models import guidance


class ConditionalBackbone(nn.Module):
    """A denoiser eps(x, t, y) whose labels may be dropped for classifier-free guidance.

    Args:
        num_classes: label classes; 0 = unconditional (labels ignored).
        class_dropout_prob: label dropout in training; > 0 (with classes) adds the null label.
        in_channels: input channels (guidance never mixes more output channels than these).
        cfg_channels: leading output channels mixed by `forward_with_cfg`, an int or "all".
        grad_checkpointing: recompute each block in the backward pass (training only).

    A subclass builds its label table with `label_rows` rows, embeds `self.labels(y, t,
    force_drop_ids)` in `forward`, runs each block through `self.run_block`, and names its block
    classes in `shard_unit_types`.
    """

    # Block classes FSDP shards as separate units (one all-gather / reduce-scatter per block).
    shard_unit_types: tuple[type[nn.Module], ...] = ()
    # The model `forward_with_cfg` asks for when there is no null label ({name}: the class).
    guidance_needs = (
        "a class-conditional {name} trained with label dropout (num_classes > 0, "
        "class_dropout_prob > 0)"
    )

    def __init__(
        self,
        *,
        num_classes: int,
        class_dropout_prob: float,
        in_channels: int,
        cfg_channels: int | str,
        grad_checkpointing: bool,
    ):
        super().__init__()
        if num_classes < 0 or not 0 <= class_dropout_prob <= 1:
            raise ValueError(
                f"need num_classes >= 0 and class_dropout_prob in [0, 1]; got {num_classes}, "
                f"{class_dropout_prob}"
            )
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        self.has_null_label = num_classes > 0 and class_dropout_prob > 0
        self.guided_channels = guidance.guided_channel_count(cfg_channels, in_channels)
        self.grad_checkpointing = grad_checkpointing

    @property
    def label_rows(self) -> int:
        """Rows of the label table: the classes, plus the null label `num_classes` if any."""
        return self.num_classes + int(self.has_null_label)

    def labels(
        self, y: torch.Tensor | None, t: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The labels [N] the table embeds, or None for an unconditional model.

        y None means the null label for the whole batch. With a null label, labels are dropped
        where `force_drop_ids == 1` when it is given, else each with `class_dropout_prob` in
        training (global RNG); without one, forcing a drop is an error.
        """
        if not self.num_classes:
            return None
        if not self.has_null_label:
            if y is None:
                raise ValueError("y=None needs a null label; build with class_dropout_prob > 0")
            if force_drop_ids is not None and bool((force_drop_ids == 1).any()):
                raise ValueError(
                    "force_drop_ids needs a null label; build with class_dropout_prob > 0"
                )
            return y
        if y is None:
            return torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
        if self.training or force_drop_ids is not None:
            return guidance.drop_labels(
                y, self.num_classes, self.class_dropout_prob, force_drop_ids
            )
        return y

    def run_block(self, block: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        """block(*inputs), recomputed in the backward pass when `grad_checkpointing` is on and
        the model trains with gradients."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def shard_units(self) -> list[nn.Module]:
        """The blocks to shard one by one, in module order (`shard_unit_types` instances); the
        rest (embedders, final layer) belongs to the root unit."""
        return [m for m in self.modules() if isinstance(m, self.shard_unit_types)]

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float, **kwargs
    ) -> torch.Tensor:
        """Classifier-free guidance on a [cond; uncond] batch x [N, C, H, W], N even (see
        `speed.models.guidance.forward_with_cfg`); `kwargs`: the model's other inputs."""
        if not self.has_null_label:
            needs = self.guidance_needs.format(name=type(self).__name__)
            raise ValueError(f"classifier-free guidance needs {needs}")
        # Through __call__, so module hooks (FSDP's weight gathering) run.
        return guidance.forward_with_cfg(self, x, t, y, cfg_scale, self.guided_channels, **kwargs)
