"""Backbones: DiT (`dit.py`), MaskDiT (`maskdit.py`), MDT (`mdt.py`), the caption-conditioned
PixArt-alpha DiT (`pixart.py`), the ADM UNet (`unet.py`, with ADM's super-resolution variant
`SuperResUNet`) and its caption-conditioned form `TextUNet` (`text_unet.py`; caption handling
shared with PixArt in `captions.py`), with shared guidance and loading; the transformers share
their patch grid and DiT's initialisation pieces through `transformer_parts.py`.

Both subclass `ConditionalBackbone` (`conditional.py`): `forward(x, t, y=None)`,
`forward_with_cfg(x, t, y, cfg_scale)`, the null label (`has_null_label`, `class_dropout_prob`)
and one gradient-checkpointing switch, `grad_checkpointing`. Both expose `num_classes`,
`in_channels`, `out_channels` and `learn_sigma`, so the diffusion and the runners drive either.
"""

from speed.models.conditional import ConditionalBackbone
from speed.models.dit import (
    DiT,
    DiT_B_2,
    DiT_B_4,
    DiT_B_8,
    DiT_L_2,
    DiT_L_4,
    DiT_L_8,
    DiT_models,
    DiT_S_2,
    DiT_S_4,
    DiT_S_8,
    DiT_XL_2,
    DiT_XL_4,
    DiT_XL_8,
    build_dit,
)
from speed.models.loading import (
    describe_state_dict_mismatch,
    extract_state_dict,
    load_checkpoint,
    load_pretrained,
    load_state_strict,
)
from speed.models.maskdit import MaskDiT, MaskDiT_models, build_maskdit
from speed.models.mdt import MDT, MDT_models, build_mdt
from speed.models.pixart import PixArt, PixArt_models, build_pixart
from speed.models.text_unet import TextUNet
from speed.models.unet import SuperResUNet, UNetModel

__all__ = [
    "ConditionalBackbone",
    "DiT",
    "DiT_models",
    "DiT_XL_2",
    "DiT_XL_4",
    "DiT_XL_8",
    "DiT_L_2",
    "DiT_L_4",
    "DiT_L_8",
    "DiT_B_2",
    "DiT_B_4",
    "DiT_B_8",
    "DiT_S_2",
    "DiT_S_4",
    "DiT_S_8",
    "MaskDiT",
    "MaskDiT_models",
    "MDT",
    "MDT_models",
    "PixArt",
    "PixArt_models",
    "SuperResUNet",
    "TextUNet",
    "UNetModel",
    "build_dit",
    "build_maskdit",
    "build_mdt",
    "build_pixart",
    "describe_state_dict_mismatch",
    "extract_state_dict",
    "load_checkpoint",
    "load_pretrained",
    "load_state_strict",
]
