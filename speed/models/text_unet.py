"""A caption-conditioned ADM UNet: the text-to-image UNet of GLIDE (Nichol et al. 2021) and
latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models", sec. 3.3), built on `speed.models.unet`'s ResBlocks, resampling, normalisation and
timestep embedding.

At each attention resolution (and in the middle block) the self-attention block of ADM becomes
LDM's `SpatialTransformer` over the H * W positions: GroupNorm, 1x1 `proj_in`, then per
transformer block self-attention, cross-attention to the caption's tokens (the padding mask as an
additive bias) and a feed-forward MLP, each pre-LayerNorm and residual, then a zero-initialised
1x1 `proj_out` and the residual around it all. GLIDE's pooled text: a projection (`pool_proj`) of
the masked mean of the caption embeddings is added to the timestep embedding, so every ResBlock
sees the caption too.

Captions are handled as PixArt's (`speed.models.captions`): y is a frozen encoder's embeddings
[N, L, caption_channels], or token ids [N, L] for the model-held text transformer
(`vocab_size > 0`, trained with the model); caption dropout replaces a caption by the learned
null caption `y_embedding` [L, caption_channels], guidance's unconditional branch; an empty
caption attends to all its tokens.

Differences from LDM: the feed-forward is a GELU MLP (LDM: GEGLU); the cross-attention's output
projection is zero-initialised too, so a fresh model's caption tokens change nothing until
training moves it; the keys and values read the caption at its own width (`caption_channels`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Mlp
from torch import nn

from speed.models import guidance
from speed.models.captions import (
    CaptionConditioned,
    attended,
    check_caption_arguments,
    padding_bias,
    text_transformer,
)
from speed.models.dit import Attention
from speed.models.pixart import MultiHeadCrossAttention, tanh_gelu
from speed.models.unet import ContextBlock, ResBlock, UNetModel, normalization, zero_module


class TransformerBlock(nn.Module):
    """LDM's BasicTransformerBlock on tokens x [N, T, C]: x += attn1(norm1(x)) (self-attention);
    x += attn2(norm2(x), caption) (cross-attention); x += ff(norm3(x))."""

    def __init__(self, dim: int, num_heads: int, context_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = MultiHeadCrossAttention(dim, num_heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = Mlp(dim, int(dim * mlp_ratio), act_layer=tanh_gelu, drop=0)
        zero_module(self.attn2.proj)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [N, T, C], caption context [N, L, context_dim], bias [N, 1, 1, L] -> [N, T, C]."""
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, bias)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(ContextBlock):
    """LDM's SpatialTransformer: x [N, C, H, W] + proj_out(blocks(proj_in(norm(x)))) over the
    H * W positions, `proj_out` zero-initialised (the block starts as the identity)."""

    def __init__(
        self, channels: int, num_heads: int, context_dim: int, depth: int = 1, norm_groups: int = 32
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.norm = normalization(channels, norm_groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, num_heads, context_dim) for _ in range(depth)]
        )
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # [N, H W, C]
        for block in self.transformer_blocks:
            h = block(h, context.to(h.dtype), bias)
        h = h.transpose(1, 2).reshape(n, c, height, width)
        return x + self.proj_out(h)


class TextUNet(CaptionConditioned, UNetModel):
    """The ADM UNet conditioned on a caption by cross-attention and pooled text.

    Args (the UNet's, as `speed.models.UNetModel`): image_size, in_channels, model_channels,
        out_channels, num_res_blocks, attention_resolutions (where the SpatialTransformers go),
        dropout, channel_mult, conv_resample, num_heads, num_head_channels, num_heads_upsample,
        use_scale_shift_norm, resblock_updown, learn_sigma, cfg_channels, grad_checkpointing,
        norm_groups.
    Caption (as `speed.models.PixArt`; the runner fills caption_channels, max_length and
    vocab_size from the `text_encoder` node):
        caption_channels: width of the caption embeddings (the text transformer's with ids).
        max_length: caption tokens L.
        caption_dropout_prob: probability of replacing a caption by the null caption in training.
        vocab_size: > 0 holds a `TextTransformer` over token ids; `y` is then ids [N, L].
        text_depth, text_heads: that transformer's layers and heads.
        transformer_depth: transformer blocks per SpatialTransformer (LDM: 1).
        patch_size: p > 1 runs the UNet on p x p pixel patches stacked as channels
            (`pixel_unshuffle`, Hoogeboom et al. 2023's patching) at 1/p of the side, and
            unstacks its output; attention_resolutions count from that side.
    """

    shard_unit_types = (ResBlock, SpatialTransformer)
    guidance_needs = "a TextUNet trained with caption dropout (caption_dropout_prob > 0)"
    input_name = "TextUNet"
    adapter_targets = (
        r".*\.(attn1\.(qkv|proj)|attn2\.(q_linear|kv_linear|proj)|ff\.fc[12]|emb_layers\.1)"
    )

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
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        learn_sigma: bool = False,
        cfg_channels: int | str = "all",
        grad_checkpointing: bool = False,
        norm_groups: int = 32,
        caption_channels: int = 4096,
        max_length: int = 120,
        caption_dropout_prob: float = 0.1,
        vocab_size: int = 0,
        text_depth: int = 4,
        text_heads: int = 4,
        transformer_depth: int = 1,
        patch_size: int = 1,
    ):
        check_caption_arguments(caption_channels, max_length)
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        out_channels = out_channels or in_channels * (2 if learn_sigma else 1)
        patch = patch_size * patch_size
        # read by `attention_block` while UNetModel builds the blocks (plain ints: allowed on a
        # Module before its __init__)
        self.caption_channels = caption_channels
        self.transformer_depth = transformer_depth
        super().__init__(
            image_size=image_size // patch_size,
            in_channels=in_channels * patch,
            model_channels=model_channels,
            out_channels=out_channels * patch,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            dropout=dropout,
            channel_mult=channel_mult,
            conv_resample=conv_resample,
            num_classes=0,
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample,
            use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown,
            learn_sigma=learn_sigma,
            class_dropout_prob=caption_dropout_prob,
            cfg_channels=cfg_channels,
            grad_checkpointing=grad_checkpointing,
            norm_groups=norm_groups,
        )
        # the model's input and output are the image's, not the patches'
        self.patch_size = patch_size
        self.image_size = image_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.downsample_factor *= patch_size
        self.guided_channels = guidance.guided_channel_count(cfg_channels, in_channels)
        self.has_null_label = caption_dropout_prob > 0  # the null caption
        self.max_length = max_length
        self.text_encoder = text_transformer(
            vocab_size, max_length, caption_channels, text_depth, text_heads
        )
        self.y_embedding = nn.Parameter(
            torch.randn(max_length, caption_channels) / caption_channels**0.5
        )
        self.pool_proj = nn.Linear(caption_channels, 4 * model_channels)

    def attention_block(
        self, channels: int, num_heads: int, num_head_channels: int, new_order: bool
    ) -> nn.Module:
        """A SpatialTransformer with the UNet's head count (a fixed head width if
        num_head_channels != -1)."""
        heads = channels // num_head_channels if num_head_channels != -1 else num_heads
        return SpatialTransformer(
            channels, heads, self.caption_channels, self.transformer_depth, self.norm_groups
        )

    @property
    def null_caption(self) -> torch.Tensor:
        """The null caption [L, caption_channels] (`y_embedding`)."""
        return self.y_embedding

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [N, C, H, W], timesteps t [N], caption y [N, L, caption_channels] (token ids [N, L]
        with a model-held text transformer; None = the null caption), mask [N, L] bool (None =
        all tokens) -> [N, out_channels, H, W]."""
        self._check_input(x)
        caption, mask = self.caption(y, mask, x.shape[0], force_drop_ids)
        emb = self._embed(t, None, None)  # [N, 4 * model_channels]
        emb = emb + self.pool_proj(self.pooled(caption, mask)).to(emb.dtype)
        bias = padding_bias(attended(mask), caption.dtype)  # [N, 1, 1, L]
        if self.patch_size == 1:
            return self._unet(x, emb, caption, bias)
        h = F.pixel_unshuffle(x, self.patch_size)  # [N, C p^2, H / p, W / p]
        return F.pixel_shuffle(self._unet(h, emb, caption, bias), self.patch_size)
