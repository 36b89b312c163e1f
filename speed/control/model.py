"""A frozen backbone steered by a control branch: `ControlledModel`."""

from __future__ import annotations

import functools

import torch
from torch import nn

from speed.models import guidance


class ControlledModel(nn.Module):
    """A frozen `base` plus a trainable control `branch`; `forward(x, t, y, control=...)`.

    The base's label interface (`num_classes`, `class_dropout_prob`, `has_null_label`,
    `guided_channels`) is read through, so training (label dropout), guided sampling and the
    ONNX export treat it as the base.

    Args:
        base: the backbone (frozen here).
        branch: a control branch built for `base` (`attached(base, x, t, y, control, scale)`).
        scale: the control scale: residuals are multiplied by it (0 = the base model).
    """

    def __init__(self, base: nn.Module, branch: nn.Module, scale: float = 1.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.branch = branch
        self.scale = float(scale)

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def class_dropout_prob(self) -> float:
        return self.base.class_dropout_prob

    @property
    def has_null_label(self) -> bool:
        return self.base.has_null_label

    @property
    def guided_channels(self) -> int:
        return self.base.guided_channels

    def shard_units(self) -> list[nn.Module]:
        """The FSDP units (`speed.utils.fsdp.shard`): the base's blocks and the branch's copies
        of them; the rest of both (embedders, zero projections) belongs to the root unit."""
        kinds = getattr(self.base, "shard_unit_types", ())
        return [m for m in self.modules() if isinstance(m, kinds)]

    def forward(self, x, t, y=None, control: torch.Tensor | None = None, **kwargs):
        """x [N, C, H, W], t [N], y [N], control [N, C', H, W] (None: the base alone)."""
        if control is None or self.scale == 0:
            return self.base(x, t, y, **kwargs)
        with self.branch.attached(self.base, x, t, y, control, self.scale, **kwargs):
            return self.base(x, t, y, **kwargs)

    def forward_with_cfg(self, x, t, y, cfg_scale: float, control: torch.Tensor | None = None):
        """Classifier-free guidance on a [cond; uncond] batch (`guidance.forward_with_cfg`), both
        halves under their control images `control` [N, C', H, W]."""
        if not self.has_null_label:
            raise ValueError("classifier-free guidance needs a base trained with label dropout")
        forward = functools.partial(self, control=control)
        return guidance.forward_with_cfg(forward, x, t, y, cfg_scale, self.guided_channels)
