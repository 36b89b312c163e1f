"""The degradation that makes a super-resolution model's low-resolution input from a
high-resolution image: optional Gaussian blur, bicubic down-sampling, optional additive Gaussian
noise (the classical model y = (x * k) down_s + n of image restoration), and the bicubic
up-sampling every super-resolution result is compared to.

Images are float tensors [..., C, H, W] in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bicubic_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [N, C, H, W] -> [N, C, size, size], bicubic (half-pixel centres), antialiased when
    shrinking (as PIL's BICUBIC and MATLAB's imresize), clamped to [-1, 1]."""
    shrink = size < x.shape[-1]
    out = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)
    return out.clamp(-1.0, 1.0)


class Degradation:
    """High-res x [..., C, H, W] -> low-res [..., C, low_size, low_size].

    Args:
        low_size: side of the low-resolution image in pixels.
        blur_sigma: standard deviation (pixels of the high-res image) of the Gaussian blur before
            down-sampling; 0 = none. The kernel spans 2 ceil(3 sigma) + 1 pixels, reflect-padded.
        noise_std: standard deviation of the Gaussian noise added to the low-res image, in units
            of the [-1, 1] scale (0.02 = about 2.5 of 255 levels); 0 = none. The result is
            clamped to [-1, 1].
    """

    def __init__(self, low_size: int, blur_sigma: float = 0.0, noise_std: float = 0.0):
        if low_size < 1:
            raise ValueError(f"data.low_size must be a positive side in pixels, got {low_size}")
        if blur_sigma < 0 or noise_std < 0:
            raise ValueError(
                f"data.blur_sigma and data.noise_std must be >= 0, got {blur_sigma}, {noise_std}"
            )
        self.low_size = int(low_size)
        self.blur_sigma = float(blur_sigma)
        self.noise_std = float(noise_std)

    @property
    def kernel_size(self) -> int:
        return 2 * math.ceil(3 * self.blur_sigma) + 1

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The low-res image of x; `generator` draws the noise (None: torch's global RNG)."""
        if x.shape[-1] <= self.low_size:
            raise ValueError(
                f"data.low_size={self.low_size} must be smaller than the image side {x.shape[-1]}"
            )
        batch = x.reshape(-1, *x.shape[-3:])
        if self.blur_sigma:
            from torchvision.transforms.v2.functional import gaussian_blur  # 1 s of import

            batch = gaussian_blur(batch, [self.kernel_size] * 2, [self.blur_sigma] * 2)
        low = bicubic_resize(batch, self.low_size)
        if self.noise_std:
            noise = torch.randn(low.shape, generator=generator, dtype=low.dtype)
            low = (low + self.noise_std * noise.to(low.device)).clamp(-1.0, 1.0)
        return low.reshape(*x.shape[:-2], self.low_size, self.low_size)
