"""The ControlNet of Zhang et al. 2023 (arXiv 2302.05543, Sec. 3.2) for the ADM UNet: a trainable
copy of the encoder (input blocks and middle block) reads the noisy input plus the control image
(through a small convolutional hint encoder ending in a zero convolution, added after the first
input block), and each copied block's output enters the base's decoder skip connection (and the
middle block's output) through a zero-initialised 1x1 convolution. The copy shares the base's
frozen timestep and label embedding."""

from __future__ import annotations

import copy

import torch
from torch import nn

from speed.control.hooks import hooked

HINT_WIDTHS = (16, 32)  # the hint encoder's hidden widths (ControlNet: 16..256 from 512 px)


def zero_conv(channels_in: int, channels_out: int, kernel: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class UNetControlBranch(nn.Module):
    """The copied encoder of `base`, a hint encoder for `control_channels`-channel control
    images at the input's side, and one zero convolution per skip and for the middle."""

    def __init__(self, base: nn.Module, control_channels: int):
        super().__init__()
        self.input_blocks = copy.deepcopy(base.input_blocks).requires_grad_(True)
        self.middle_block = copy.deepcopy(base.middle_block).requires_grad_(True)
        skips, middle = self._widths(base)
        a, b = HINT_WIDTHS
        self.hint = nn.Sequential(
            nn.Conv2d(control_channels, a, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(a, b, 3, padding=1),
            nn.SiLU(),
            zero_conv(b, skips[0], kernel=3),
        )
        self.skip_convs = nn.ModuleList(zero_conv(c, c) for c in skips)
        self.middle_conv = zero_conv(middle, middle)

    @staticmethod
    @torch.no_grad()
    def _widths(base) -> tuple[list[int], int]:
        """Channels of each input block's output and of the middle block's, by a dry run."""
        side = 4 * base.downsample_factor  # GroupNorm needs more than one value per group
        h = torch.zeros(1, base.in_channels, side, side, device=next(base.parameters()).device)
        emb = torch.zeros(1, base.time_embed[-1].out_features, device=h.device)
        widths = []
        for block in base.input_blocks:
            h = block(h, emb)
            widths.append(h.shape[1])
        return widths, base.middle_block(h, emb).shape[1]

    def residuals(self, base, x, t, y, control, force_drop_ids=None):
        """(skip residuals, one per input block, and the middle residual)."""
        emb = base._embed(t, y, force_drop_ids)
        h, skips = x.type(base.dtype), []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb)
            if i == 0:
                h = h + self.hint(control.type(h.dtype))
            skips.append(self.skip_convs[i](h))
        return skips, self.middle_conv(self.middle_block(h, emb))

    def attached(self, base, x, t, y, control, scale: float, force_drop_ids=None):
        """Hooks adding scale x the residuals to the decoder's skips and the middle output."""
        skips, middle = self.residuals(base, x, t, y, control, force_drop_ids)
        n = len(skips)

        def add_to_skip(j: int):
            r = skips[n - 1 - j]  # the decoder pops the skips last first

            def hook(module, args):
                h = args[0]
                width = r.shape[1]
                return (torch.cat([h[:, :-width], h[:, -width:] + scale * r], 1), *args[1:])

            return hook

        handles = [
            block.register_forward_pre_hook(add_to_skip(j))
            for j, block in enumerate(base.output_blocks)
        ]
        handles.append(
            base.middle_block.register_forward_hook(lambda m, args, out: out + scale * middle)
        )
        return hooked(*handles)
