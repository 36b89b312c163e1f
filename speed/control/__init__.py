"""ControlNet: spatial control of a frozen, trained backbone through a trainable branch whose
outputs enter the backbone through zero-initialised layers, so at the start the controlled model
is the base model exactly (Zhang et al. 2023, arXiv 2302.05543; PixArt-delta, arXiv 2401.05252,
for the DiT).

`ControlledModel(base, branch, scale)` wraps any backbone with a branch built for it
(`DiTControlBranch`, `UNetControlBranch`); the branch adds its residuals with forward hooks on the
base's blocks while a control image is given, so the backbone's own code and state-dict keys are
untouched. Control images come from `transforms` (edges, mask, low resolution).
"""

from __future__ import annotations

import torch
from torch import nn

from speed.control.dit import DiTControlBranch
from speed.control.transforms import CONTROL_TRANSFORMS, build_transform
from speed.control.unet import UNetControlBranch


class ControlledModel(nn.Module):
    """A frozen `base` plus a trainable control `branch`; `forward(x, t, y, control=...)`.

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

    def forward(self, x, t, y=None, control: torch.Tensor | None = None, **kwargs):
        """x [N, C, H, W], t [N], y [N], control [N, C', H, W] (None: the base alone)."""
        if control is None or self.scale == 0:
            return self.base(x, t, y, **kwargs)
        with self.branch.attached(self.base, x, t, y, control, self.scale, **kwargs):
            return self.base(x, t, y, **kwargs)


__all__ = [
    "CONTROL_TRANSFORMS",
    "ControlledModel",
    "DiTControlBranch",
    "UNetControlBranch",
    "build_transform",
]
