"""Backbones: DiT (`dit.py`), MaskDiT (`maskdit.py`), MDT (`mdt.py`), the caption-conditioned
PixArt-alpha DiT (`pixart.py`), the ADM UNet (`unet.py`, with ADM's super-resolution variant
`SuperResUNet`) and its caption-conditioned form `TextUNet` (`text_unet.py`; caption handling
shared with PixArt in `captions.py`), with shared guidance and loading; the transformers share
their patch grid and DiT's initialisation pieces through `transformer_parts.py`.

Both subclass `ConditionalBackbone` (`conditional.py`): `forward(x, t, y=None)`,
`forward_with_cfg(x, t, y, cfg_scale)`, the null label (`has_null_label`, `class_dropout_prob`)
and one gradient-checkpointing switch, `grad_checkpointing`. Both expose `num_classes`,
`in_channels`, `out_channels` and `learn_sigma`, so the diffusion and the runners drive either.

The names below are imported from their module on first use (PEP 562): a run of the UNet does not
import the transformers' modules nor timm, which they use (about 3 s of import on a 2-core box).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "speed.models.conditional": ("ConditionalBackbone",),
    "speed.models.dit": (
        "DiT", "DiT_models", "DiT_XL_2", "DiT_XL_4", "DiT_XL_8", "DiT_L_2", "DiT_L_4", "DiT_L_8",
        "DiT_B_2", "DiT_B_4", "DiT_B_8", "DiT_S_2", "DiT_S_4", "DiT_S_8", "build_dit",
    ),
    "speed.models.loading": (
        "describe_state_dict_mismatch", "extract_state_dict", "load_checkpoint",
        "load_pretrained", "load_state_strict",
    ),
    "speed.models.maskdit": ("MaskDiT", "MaskDiT_models", "build_maskdit"),
    "speed.models.mdt": ("MDT", "MDT_models", "build_mdt"),
    "speed.models.pixart": ("PixArt", "PixArt_models", "build_pixart"),
    "speed.models.text_unet": ("TextUNet",),
    "speed.models.unet": ("SuperResUNet", "UNetModel"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'speed.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
