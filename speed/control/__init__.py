"""ControlNet: spatial control of a frozen, trained backbone through a trainable branch whose
outputs enter the backbone through zero-initialised layers, so at the start the controlled model
is the base model exactly (Zhang et al. 2023, arXiv 2302.05543; PixArt-delta, arXiv 2401.05252,
for the DiT).

`ControlledModel(base, branch, scale)` wraps any backbone with a branch built for it
(`DiTControlBranch`, `UNetControlBranch`); the branch adds its residuals with forward hooks on the
base's blocks while a control image is given, so the backbone's own code and state-dict keys are
untouched. Control images come from `transforms` (edges, mask, low resolution) or from files
(`images`). `build_control` makes the `ControlNet` add-on of the config's `control` node (the
branch over a base checkpoint, trained and saved alone).
"""

from speed.control.controlnet import ControlNet, build_control
from speed.control.dit import DiTControlBranch
from speed.control.model import ControlledModel
from speed.control.transforms import CONTROL_TRANSFORMS, build_transform
from speed.control.unet import UNetControlBranch

__all__ = [
    "CONTROL_TRANSFORMS",
    "ControlNet",
    "ControlledModel",
    "DiTControlBranch",
    "UNetControlBranch",
    "build_control",
    "build_transform",
]
