"""The ADM UNet of guided-diffusion ("Diffusion Models Beat GANs on Image Synthesis", Dhariwal &
Nichol 2021).

Constructor arguments, layer order and state-dict keys follow guided-diffusion's `UNetModel`, so
its checkpoints (e.g. the ImageNet 64x64 and 256x256 models) load with `strict=True`:

    time_embed.{0,2}, label_emb,
    input_blocks.{i}.{j}     (conv in, ResBlock, AttentionBlock, Downsample / down-ResBlock),
    middle_block.{0,1,2}     (ResBlock, AttentionBlock, ResBlock),
    output_blocks.{i}.{j}    (ResBlock on [h, skip], AttentionBlock, Upsample / up-ResBlock),
    out.{0,2}                (GroupNorm, SiLU, zero-initialised conv).
    ResBlock: in_layers.{0,2}, emb_layers.1, out_layers.{0,3}, skip_connection (when C changes).
    AttentionBlock: norm, qkv (conv1d), proj_out (conv1d, zero-initialised).

Differences: attention through `scaled_dot_product_attention`; gradient checkpointing per block
with torch.utils.checkpoint, switched by `grad_checkpointing` as for DiT (guided-diffusion's
`use_checkpoint` still works); `forward(x, t, y=None)`, `forward_with_cfg` and optional label
dropout (`class_dropout_prob`, an extra null-label row) from
`speed.models.conditional.ConditionalBackbone`, shared with DiT; only 2-D inputs.

`SuperResUNet` (guided-diffusion's `SuperResModel`) is the same network conditioned on a
low-resolution image concatenated to its input channels.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from speed.models.conditional import ConditionalBackbone
from speed.models.layers import attention, timestep_embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in its parameters' dtype (float32 beside a float16 torso) and cast back
    to the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype)).type(x.dtype)


def normalization(channels: int, groups: int = 32) -> nn.Module:
    """GroupNorm with `groups` groups (guided-diffusion's 32; `channels` must be a multiple)."""
    if channels % groups:
        raise ValueError(
            f"{channels} channels do not split into model.norm_groups={groups} groups: "
            "set model.norm_groups to a divisor of every level's width"
        )
    return GroupNorm32(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (output convs start at zero) and return it."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""


class ContextBlock(nn.Module):
    """A module whose forward takes the model's context (e.g. caption tokens and their attention
    bias, `speed.models.text_unet`) after x."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that passes `emb` to the children that are TimestepBlocks and `context` to the
    ContextBlocks (LDM's order)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, ContextBlock):
                x = layer(x, *context)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv (`conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling: a stride-2 3x3 conv (`op`) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        elif out_channels != channels:
            raise ValueError("Downsample without a conv cannot change the channel count")
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding, optionally resampling (up / down).

    h = in_layers(x); h += emb_layers(emb) (or, with use_scale_shift_norm, the FiLM form
    norm(h) * (1 + scale) + shift); h = out_layers(h); return skip_connection(x) + h.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels, norm_groups),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels, norm_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W], emb [N, E] -> [N, C_out, H', W']."""
        if self.updown:  # resample between the activation and the first conv
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H * W positions, residual: x + proj_out(attn(qkv(norm(x)))).

    Heads: `channels // num_head_channels` if num_head_channels != -1, else `num_heads`. The qkv
    channels are split heads-first (legacy order: per head [q, k, v]) or, with
    use_new_attention_order, qkv-first ([q of all heads, k ..., v ...]); both layouts matter for
    loading guided-diffusion checkpoints. `fused` picks SDPA or the written-out softmax.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
        norm_groups: int = 32,
    ):
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(
                    f"channels {channels} not divisible by num_head_channels {num_head_channels}"
                )
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.use_new_attention_order = use_new_attention_order
        self.fused = True
        self.norm = normalization(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)  # [N, C, T]
        qkv = self.qkv(self.norm(x))  # [N, 3C, T]
        heads, ch, length = self.num_heads, c // self.num_heads, x.shape[-1]
        if self.use_new_attention_order:
            q, k, v = (z.reshape(b, heads, ch, length) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b, heads, 3 * ch, length).split(ch, dim=2)
        # [N, heads, T, ch], contiguous: SDPA takes its fused kernels only when d is the inner axis
        q, k, v = (z.transpose(-1, -2).contiguous() for z in (q, k, v))
        h = attention(q, k, v, fused=self.fused).transpose(-1, -2).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


def _int_list(value, name: str) -> tuple:
    """A tuple from a list/tuple, or from a comma string "1,2,4" (YAML- and CLI-friendly)."""
    if isinstance(value, str):
        try:
            return tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"{name}: expected comma-separated integers, got {value!r}") from None
    return tuple(value)


def attention_downsample_rates(
    attention_resolutions, image_size: int, levels: int | None = None
) -> tuple[int, ...]:
    """Downsample rates ds at which attention is used.

    A list/tuple is taken as guided-diffusion's UNetModel takes it: downsample rates (4 = at 1/4
    resolution), the same at any image size. A comma string is taken as guided-diffusion's scripts
    take it: resolutions in pixels ("32,16,8" at image_size 64 -> (2, 4, 8)). With `levels` (the
    UNet's number of resolutions, len(channel_mult)), a rate that is not one of its levels
    1, 2, ..., 2^(levels - 1) is an error naming the levels, since no block would get attention.
    """
    rates = (1, 2, 4, 8, 16, 32, 64, 128)[:levels] if levels else None
    if isinstance(attention_resolutions, str):
        resolutions = _int_list(attention_resolutions, "attention_resolutions")
        bad = [r for r in resolutions if r <= 0 or image_size % r]
        bad += [r for r in resolutions if r not in bad and rates and image_size // r not in rates]
        if bad:
            sides = ",".join(str(image_size // ds) for ds in rates) if rates else "its levels"
            raise ValueError(
                f"model.attention_resolutions: {bad} px are not levels of this UNet at image_size "
                f"{image_size} ({sides} px); set model.attention_resolutions to some of "
                f"'{sides}', or to downsample rates, which hold at any size ([4] = 1/4 of the side)"
            )
        return tuple(image_size // r for r in resolutions)
    found = tuple(int(ds) for ds in attention_resolutions)
    bad = [ds for ds in found if rates and ds not in rates]
    if bad:
        raise ValueError(
            f"model.attention_resolutions: downsample rates {bad} are not levels of this UNet "
            f"(rates {list(rates)}, one per entry of model.channel_mult); set some of those"
        )
    return found


class UNetModel(ConditionalBackbone):
    """The ADM UNet with attention and timestep (and class) embedding.

    Args (guided-diffusion's, in its order):
        image_size: input side (also converts string attention_resolutions).
        in_channels: input channels.
        model_channels: base width; level l has channel_mult[l] * model_channels channels.
        out_channels: output channels; None = in_channels * (2 if learn_sigma else 1).
        num_res_blocks: ResBlocks per level (the decoder has one more).
        attention_resolutions: downsample rates with attention, or a comma string of resolutions.
        dropout: dropout in the ResBlocks.
        channel_mult: width multiplier per level (or a comma string); 2^(levels-1) must divide the
            input side.
        conv_resample: learned convs (else average pooling / plain upsampling) to resample.
        dims: 2 only (images).
        num_classes: classes for class conditioning; None or 0 = unconditional (y ignored).
        use_checkpoint: guided-diffusion's name of `grad_checkpointing`; either turns it on.
        use_fp16: run the torso (convs) in float16, as guided-diffusion samples; for training
            prefer the runner's `precision` (autocast with float32 weights).
        num_heads, num_head_channels, num_heads_upsample: attention heads (a fixed head width if
            num_head_channels != -1; num_heads_upsample -1 = num_heads).
        use_scale_shift_norm: FiLM-like conditioning in the ResBlocks.
        resblock_updown: resample with ResBlocks instead of Downsample / Upsample.
        use_new_attention_order: split qkv before heads (QKVAttention) instead of after (legacy).
    Extras:
        learn_sigma: doubles the output channels when out_channels is None.
        class_dropout_prob: label dropout for classifier-free guidance; > 0 adds the null label
            row `num_classes` to `label_emb` (0 keeps guided-diffusion's keys and shapes).
        cfg_channels: leading channels mixed by `forward_with_cfg` ("all" or an int).
        grad_checkpointing: recompute each block in the backward pass (training only); DiT's
            name of the switch, so a config sets `model.grad_checkpointing` for either backbone.
        norm_groups: GroupNorm groups in every block (guided-diffusion's 32, diffusers'
            `norm_num_groups`); fewer let a level be narrower than 32 channels.
    """

    shard_unit_types = (ResBlock, AttentionBlock)
    # Layers LoRA adapts by default (speed.adapters): the attention blocks' qkv and output
    # projections and the ResBlocks' timestep-embedding projections.
    adapter_targets = r".*\.(qkv|proj_out|emb_layers\.1)"

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        model_channels: int = 128,
        out_channels: int | None = None,
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] | str = (4, 8),
        dropout: float = 0.0,
        channel_mult: tuple[float, ...] | str = (1, 2, 4, 8),
        conv_resample: bool = True,
        dims: int = 2,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        learn_sigma: bool = False,
        class_dropout_prob: float = 0.0,
        cfg_channels: int | str = "all",
        grad_checkpointing: bool = False,
        norm_groups: int = 32,
    ):
        super().__init__(
            num_classes=num_classes or 0,
            class_dropout_prob=class_dropout_prob,
            in_channels=in_channels,
            cfg_channels=cfg_channels,
            grad_checkpointing=grad_checkpointing or use_checkpoint,
        )
        if dims != 2:
            raise ValueError(f"dims={dims}: only 2-D inputs (dims=2) are supported")
        channel_mult = _int_list(channel_mult, "channel_mult")
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        if image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {image_size} must be divisible by 2^(len(channel_mult) - 1) = "
                f"{self.downsample_factor}; set data.image_size to a multiple of "
                f"{self.downsample_factor}, or shorten model.channel_mult"
            )
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.norm_groups = norm_groups
        self.learn_sigma = learn_sigma
        self.out_channels = out_channels or in_channels * (2 if learn_sigma else 1)
        self.attention_resolutions = attention_downsample_rates(
            attention_resolutions, image_size, len(channel_mult)
        )

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim),
            nn.SiLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
        if self.num_classes:
            self.label_emb = nn.Embedding(self.label_rows, time_embed_dim)

        def res_block(ch_in, ch_out, **updown):
            return ResBlock(
                ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm, **updown,
                norm_groups=norm_groups,
            )  # fmt: skip

        def attn_block(ch, heads):
            return self.attention_block(ch, heads, num_head_channels, use_new_attention_order)

        # Encoder: num_res_blocks (ResBlock [+ attention]) per level, then a 2x downsampling.
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in self.attention_resolutions:
                    layers.append(attn_block(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                if resblock_updown:
                    down = res_block(ch, ch, down=True)
                else:
                    down = Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch), attn_block(ch, num_heads), res_block(ch, ch)
        )

        # Decoder: num_res_blocks + 1 (ResBlock on [h, skip] [+ attention]) per level, then 2x up.
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in self.attention_resolutions:
                    layers.append(attn_block(ch, heads_up))
                if level and i == num_res_blocks:
                    if resblock_updown:
                        layers.append(res_block(ch, ch, up=True))
                    else:
                        layers.append(Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch, norm_groups),
            nn.SiLU(),
            zero_module(nn.Conv2d(input_ch, self.out_channels, 3, padding=1)),
        )
        if use_fp16:
            self.convert_to_fp16()

    def attention_block(
        self, channels: int, num_heads: int, num_head_channels: int, new_order: bool
    ) -> nn.Module:
        """The attention block at an attention resolution (a subclass may give another)."""
        return AttentionBlock(channels, num_heads, num_head_channels, new_order, self.norm_groups)

    def _convert_torso(self, dtype: torch.dtype) -> None:
        """Cast the conv weights of the encoder, middle and decoder (guided-diffusion's fp16)."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for module in part.modules():
                if isinstance(module, nn.Conv1d | nn.Conv2d):
                    module.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        """The torso's dtype (float16 after `convert_to_fp16`): the input is cast to it."""
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self) -> None:
        self._convert_torso(torch.float16)

    def convert_to_fp32(self) -> None:
        self._convert_torso(torch.float32)

    @property
    def use_checkpoint(self) -> bool:
        """guided-diffusion's name of `grad_checkpointing`."""
        return self.grad_checkpointing

    def _embed(
        self, t: torch.Tensor, y: torch.Tensor | None, force_drop_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Timestep (+ label) embedding [N, 4 * model_channels]; y None means the null label."""
        t_freq = timestep_embedding(t, self.model_channels)
        emb = self.time_embed(t_freq.to(self.time_embed[0].weight.dtype))
        labels = self.labels(y, t, force_drop_ids)
        return emb if labels is None else emb + self.label_emb(labels)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ):
        """x [N, C, H, W], timesteps t [N], labels y [N] (ignored if unconditional)
        -> [N, out_channels, H, W]. `force_drop_ids` [N] (1 = use the null label) replaces the
        random label dropout of training, so the caller controls it."""
        self._check_input(x)
        emb = self._embed(t, y, force_drop_ids)  # [N, 4 * model_channels]
        return self._unet(x, emb)

    def _check_input(self, x: torch.Tensor) -> None:
        f = self.downsample_factor
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"UNet expects input [N, {self.in_channels}, H, W] with H and W divisible by {f} "
                f"(2^(len(channel_mult) - 1)), got {list(x.shape)}"
            )

    def _unet(self, x: torch.Tensor, emb: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        """Encoder, middle and decoder on x [N, C, H, W] with the embedding emb [N, E] (and the
        ContextBlocks' `context`) -> [N, out_channels, H, W]."""
        skips = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = self.run_block(block, h, emb, *context)
            skips.append(h)
        h = self.run_block(self.middle_block, h, emb, *context)
        for block in self.output_blocks:
            h = self.run_block(block, torch.cat([h, skips.pop()], dim=1), emb, *context)
        return self.out(h.type(x.dtype))  # [N, out_channels, H, W]


class SuperResUNet(UNetModel):
    """ADM's super-resolution UNet (guided-diffusion's `SuperResModel`, Dhariwal & Nichol 2021,
    appendix): the low-resolution image is upsampled (bilinear, as ADM) to the side of the noisy
    input and concatenated to its channels, so the UNet sees 2 x `in_channels` channels and
    predicts as many as the plain model of `in_channels` would.

    Args: `UNetModel`'s, with `in_channels` the image's channels (the first conv takes twice
    that); the state-dict keys are guided-diffusion's, so its upsamplers (e.g.
    `64_256_upsampler.pt`) load unchanged.
        upsample_mode: F.interpolate mode bringing `low_res` to the input's side ("bilinear" in
            ADM; "bicubic" is the other choice).
    """

    # Model kwargs the data gives besides the labels: sampling needs them too.
    conditions = ("low_res",)

    @staticmethod
    def extra_config_keys() -> list[str]:
        """The `UNetModel` arguments `**kwargs` passes on (checked in config like named ones)."""
        return list(inspect.signature(UNetModel).parameters)

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        num_classes: int | None = None,
        out_channels: int | None = None,
        learn_sigma: bool = False,
        upsample_mode: str = "bilinear",
        **kwargs,
    ):
        if upsample_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"upsample_mode must be bilinear or bicubic, got {upsample_mode!r}")
        super().__init__(
            image_size=image_size,
            in_channels=2 * in_channels,
            num_classes=num_classes,
            out_channels=out_channels or in_channels * (2 if learn_sigma else 1),
            learn_sigma=learn_sigma,
            **kwargs,
        )
        self.image_channels = in_channels
        self.upsample_mode = upsample_mode

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
        low_res: torch.Tensor | None = None,
    ):
        """x [N, C, H, W] noisy high-res image, t [N], y [N] labels (if class-conditional),
        low_res [N, C, h, w] the low-resolution image in [-1, 1] -> [N, out_channels, H, W]."""
        if low_res is None or low_res.ndim != 4 or low_res.shape[:2] != x.shape[:2]:
            got = None if low_res is None else list(low_res.shape)
            raise ValueError(
                f"{type(self).__name__} needs low_res [N, {self.image_channels}, h, w] beside x "
                f"{list(x.shape)}, got {got}"
            )
        up = F.interpolate(
            low_res.to(x.dtype), size=x.shape[-2:], mode=self.upsample_mode, align_corners=False
        )  # [N, C, H, W]
        return super().forward(torch.cat([x, up], dim=1), t, y, force_drop_ids)
