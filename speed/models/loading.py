"""Loading weights into a backbone: official DiT / guided-diffusion files and training checkpoints.

Accepted files: a raw state dict (`DiT-XL-2-256x256.pt`, guided-diffusion's `64x64_diffusion.pt`)
or a training checkpoint dict holding "ema" (preferred) and/or "model" (DiT's
`{"model", "ema", "opt", "args"}`, and ours). Every weight file of the project is read by
`load_checkpoint`, one torch.load policy. Loading is strict; a mismatch is one line naming the
keys and shapes that differ.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from speed.errors import ConfigError, MissingFileError

# Entries of each kind shown before "... (+N more)".
_SHOWN = 5


def _shorten(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = f", ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"[{shown}{more}]"


def describe_state_dict_mismatch(
    model_state: Mapping[str, torch.Tensor], ckpt_state: Mapping[str, torch.Tensor]
) -> str:
    """'' when `ckpt_state` loads strictly into a model with `model_state`, else one line:
    "missing keys [...]; unexpected keys [...]; shape mismatches [key: ckpt (a, b) vs model (c, d)]"
    (only the kinds that occur; long lists shortened to a few entries and a count)."""
    missing = [k for k in model_state if k not in ckpt_state]
    unexpected = [k for k in ckpt_state if k not in model_state]
    shapes = [
        f"{k}: ckpt {tuple(ckpt_state[k].shape)} vs model {tuple(model_state[k].shape)}"
        for k in model_state
        if k in ckpt_state and tuple(ckpt_state[k].shape) != tuple(model_state[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {_shorten(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_shorten(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches {_shorten(shapes)}")
    return "; ".join(parts)


def load_checkpoint(path: str | os.PathLike):
    """torch.load onto the CPU (never onto the GPU it was saved from) with one policy: the safe
    weights-only unpickler where the file allows it (raw state dicts; DiT's training checkpoints,
    whose argparse Namespace is allowed), the full one for files holding other objects (this
    project's training checkpoints carry numpy RNG states).

    Raises:
        MissingFileError: no file at `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {path}; check ckpt_path / resume")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False)


def extract_state_dict(ckpt, use_ema: bool = True) -> Mapping[str, torch.Tensor]:
    """The weights in a loaded file: ckpt["ema"] (if `use_ema`), else ckpt["model"], else
    ckpt["ema"], else the dict itself (a raw state dict)."""
    if not isinstance(ckpt, Mapping):
        raise ConfigError(f"expected a state dict or a checkpoint dict, got {type(ckpt).__name__}")
    for key in ("ema", "model") if use_ema else ("model", "ema"):
        if key in ckpt and isinstance(ckpt[key], Mapping):
            return ckpt[key]
    return ckpt


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source) -> nn.Module:
    """model.load_state_dict(state, strict=True), a mismatch being one line (ConfigError) that
    names the differing keys and shapes; returns the model."""
    problem = describe_state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise ConfigError(
            f"checkpoint {source} does not fit the configured model "
            f"({type(model).__name__}): {problem}"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_pretrained(model: nn.Module, path: str | os.PathLike, use_ema: bool = True) -> nn.Module:
    """Load the weights in `path` (EMA weights where the file has them, unless not `use_ema`)
    into `model` (strict) and return the model.

    Raises:
        MissingFileError: no file at `path`.
        ConfigError: the weights do not fit the model (one line naming keys and shapes).
    """
    return load_state_strict(model, extract_state_dict(load_checkpoint(path), use_ema), path)
