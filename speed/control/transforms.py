"""Control images computed from a training image: what a ControlNet is conditioned on.

Each transform maps images x [N, C, H, W] in [-1, 1] to a control image [N, C', H, W] in
[-1, 1] of the same side (so it can be encoded like the image in latent space). A transform is
a small class registered by name in `CONTROL_TRANSFORMS` (`build_transform(name, **options)`);
its keyword arguments are its settings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


class Mask:
    """The silhouette: 1 where the image (mean over channels) exceeds `threshold`, else -1.

    Args:
        threshold: brightness in [-1, 1] separating figure from background.
    """

    def __init__(self, threshold: float = -0.5):
        self.threshold = float(threshold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        inside = x.mean(dim=1, keepdim=True) > self.threshold  # [N, 1, H, W]
        return inside.to(x.dtype) * 2 - 1


class Edges:
    """The silhouette's edges: the Sobel gradient magnitude of the `Mask` image, 1 where it is
    non-zero (the pixels on either side of the figure's outline), else -1.

    Args:
        threshold: as `Mask`'s.
    """

    def __init__(self, threshold: float = -0.5):
        self.mask = Mask(threshold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = (self.mask(x) + 1) / 2  # [N, 1, H, W] in {0, 1}
        kx = SOBEL_X.to(x.device, x.dtype).view(1, 1, 3, 3)
        padded = F.pad(m, (1, 1, 1, 1), mode="replicate")
        gx = F.conv2d(padded, kx)
        gy = F.conv2d(padded, kx.transpose(2, 3))
        edge = (gx.square() + gy.square()) > 0
        return edge.to(x.dtype) * 2 - 1


class LowRes:
    """The image at 1 / `factor` of its side (area average), upsampled back bicubically.

    Args:
        factor: down-sampling factor (>= 1; the side must be divisible by it).
    """

    def __init__(self, factor: int = 2):
        if factor < 1:
            raise ValueError(f"low_res factor must be >= 1, got {factor}")
        self.factor = int(factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        if side % self.factor:
            raise ValueError(f"image side {side} is not divisible by factor {self.factor}")
        low = F.avg_pool2d(x, self.factor)
        up = F.interpolate(low, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return up.clamp(-1, 1)


CONTROL_TRANSFORMS = {"mask": Mask, "edges": Edges, "low_res": LowRes}


def build_transform(name: str, **options):
    """The transform registered as `name` with its options; ValueError naming the known ones."""
    if name not in CONTROL_TRANSFORMS:
        raise ValueError(f"unknown control transform {name!r}; known: {sorted(CONTROL_TRANSFORMS)}")
    return CONTROL_TRANSFORMS[name](**options)
