"""Loading weights into a backbone: official DiT / guided-diffusion files and training checkpoints.

Accepted files: a raw state dict (`DiT-XL-2-256x256.pt`, guided-diffusion's `64x64_diffusion.pt`)
or a training checkpoint dict holding "ema" (preferred) and/or "model" (DiT's
`{"model", "ema", "opt", "args"}`, and ours). Every weight file of the project is read by
`load_checkpoint`, one torch.load policy:

- Safe by default: the weights-only unpickler (tensors, dicts, lists, numbers, strings, and the
  argparse Namespace of DiT's training checkpoints), which cannot run code. A file that needs the
  full unpickler is refused in one line ("this file needs code to load") unless the caller trusts
  it (`trust_checkpoint=true`), and then loaded with a one-line warning. Such a refusal is told
  apart from broken bytes by reading the pickle's opcodes without running them.
- Checked: a checkpoint written by `save_checkpoint` has a sidecar `<name>.sha256` (the sha256 of
  the file's bytes, in `sha256sum` format) that must match; the file must unpickle and hold a
  dict; every floating tensor in it must be finite. Any failure is one `DataError` line naming the
  file (what `speed.run` uses to fall back to an older checkpoint).

Loading into a model is strict; a mismatch is one line naming the keys and shapes that differ.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from speed.errors import ConfigError, DataError, MissingFileError
from speed.utils.atomic import atomic_path, atomic_write, torch_save

CHECKSUM_SUFFIX = ".sha256"
# What torch.load raises on a file that is not a whole checkpoint (truncated, garbage, empty).
_BROKEN = (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, pickle.PickleError)

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


def checksum_path(path: str | os.PathLike) -> Path:
    """The sidecar holding the sha256 of checkpoint `path`: `<name>.sha256` beside it."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(obj, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically, with its sha256 sidecar written before the rename,
    so a checkpoint never appears without the checksum of its bytes. Returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # not a path: torch's own writer hides a full disk
            torch_save(obj, f)
        atomic_write(checksum_path(path), f"{file_sha256(tmp)}  {path.name}\n")
    return path


def verify_checksum(path: str | os.PathLike) -> None:
    """Raise DataError when `path` has a sidecar checksum its bytes do not match (no sidecar:
    official weights, files from elsewhere, nothing to check)."""
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return
    expected = sidecar.read_text().split()[:1]
    if expected != [file_sha256(path)]:
        raise DataError(
            f"checkpoint {path} is corrupt: its sha256 does not match {sidecar.name} "
            "(the file changed after it was written)"
        )


def load_checkpoint(path: str | os.PathLike, trust: bool = False):
    """The dict in checkpoint `path`, loaded onto the CPU (never onto the GPU it was saved from),
    checked as the module docstring says.

    Args:
        trust: load a file that needs the full unpickler (it can run code), with a warning.

    Raises:
        MissingFileError: no file at `path`.
        DataError: a corrupt, truncated, empty or non-dict file, a checksum mismatch, non-finite
            weights, or (not `trust`) a file holding objects besides tensors.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a checkpoint file; check ckpt_path / resume")
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {path}; check ckpt_path / resume")
    if path.stat().st_size == 0:
        raise DataError(f"checkpoint {path} is empty (0 bytes)")
    verify_checksum(path)
    _check_format(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _pickle_is_whole(path):  # not a refused object: the bytes are broken
            raise DataError(
                f"checkpoint {path} is corrupt or truncated ({_first_line(error)})"
            ) from None
        if not trust:
            raise DataError(needs_code_message(path, _refusal_reason(error))) from None
        warnings.warn(
            f"trust_checkpoint=true: unpickling {path} in full (it can run code)", stacklevel=2
        )
        ckpt = _load_or_raise(path, weights_only=False)
    except _BROKEN as error:
        raise DataError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(error)})"
        ) from None
    if not isinstance(ckpt, Mapping):
        raise DataError(
            f"checkpoint {path} holds a {type(ckpt).__name__}, not a state dict or checkpoint dict"
        )
    bad = next(nonfinite_keys(ckpt), None)
    if bad is not None:
        raise DataError(f"checkpoint {path} holds non-finite weights (NaN/inf in {bad})")
    return ckpt


def needs_code_message(path: str | os.PathLike, reason: str) -> str:
    """The one line refusing file `path`, which only the full unpickler can read (`reason`: what
    the safe reader refused in it)."""
    return (
        f"checkpoint {path}: this file needs code to load: pass trust_checkpoint=true if you "
        f"trust its source (holds objects besides tensors: {reason})"
    )


def _pickle_is_whole(path: Path) -> bool:
    """Whether the pickle stream(s) of torch file `path` parse to their end without running
    anything (`pickletools.genops` reads opcodes, it builds no object): then a refusal by the
    weights-only unpickler was about what the file holds, not about broken bytes. A zip
    checkpoint keeps its pickle in `<archive>/data.pkl`; a legacy file is four pickles in a row
    (magic number, protocol, system info, the object) before its raw storages."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                streams, count = io.BytesIO(archive.read(name)), 1
        else:
            streams, count = io.BytesIO(path.read_bytes()), 4
        for _ in range(count):
            for _ in pickletools.genops(streams):
                pass
    except (StopIteration, ValueError, EOFError, zipfile.BadZipFile, OSError):
        return False
    return True


def _refusal_reason(error: BaseException, limit: int = 120) -> str:
    """What the weights-only unpickler refused, from torch's long message: its own line (after
    'WeightsUnpickler error:', or the last paragraph before the documentation link)."""
    text = str(error).split("\n\nCheck the documentation")[0]
    text = text.rsplit("\n\n", 1)[-1].rsplit("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0].removeprefix("Weights only load failed.").strip() if lines else ""
    line = line.split(". ")[0].rstrip(".") or "an object the safe reader does not allow"
    return line if len(line) <= limit else line[: limit - 3] + "..."


# First bytes of files that are sometimes given where a checkpoint belongs.
_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x93NUMPY": "a numpy .npy array",
    b"\x7fELF": "a program",
}


def _check_format(path: Path) -> None:
    """A DataError unless `path` starts as torch.save writes: a zip archive holding a data.pkl
    (torch >= 1.6) or a pickle (the legacy format). A truncated zip is left to torch.load."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x80"):  # a pickle, protocol 2 or later
        return
    kind = next((name for magic, name in _SIGNATURES.items() if head.startswith(magic)), None)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return
        if any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
            return
        kind = "a zip archive without torch's data.pkl (an .npz?)"
    if kind is None and b"\0" not in head:  # binary formats hold a NUL in their first bytes
        kind = "a text file"
    raise DataError(
        f"{path} is not a torch checkpoint (it is {kind or 'neither a zip archive nor a pickle'}"
        "); ckpt_path / resume need a .pt file written by torch.save"
    )


def _load_or_raise(path: Path, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except _BROKEN as error:
        raise DataError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(error)})"
        ) from None


def nonfinite_keys(tree, prefix: str = "") -> Iterator[str]:
    """Dotted keys of the floating tensors in a nested dict/list that hold NaN or inf (of a
    sharded tensor, this rank's shard)."""
    if isinstance(tree, torch.Tensor):
        local = tree.to_local() if isinstance(tree, DTensor) else tree
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            yield prefix or "the tensor"
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from nonfinite_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from nonfinite_keys(value, f"{prefix}.{i}" if prefix else str(i))


def _first_line(error: BaseException, limit: int = 100) -> str:
    """The first sentence of an error's message, shortened to `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0].split(". ")[0] if lines else ""
    if len(line) < 8:  # e.g. a bare byte value from the legacy unpickler
        return f"{type(error).__name__} {line}; not a torch checkpoint".strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


def load_pretrained(
    model: nn.Module, path: str | os.PathLike, use_ema: bool = True, trust: bool = False
) -> nn.Module:
    """Load the weights in `path` (EMA weights where the file has them, unless not `use_ema`)
    into `model` (strict) and return the model (`trust`: see `load_checkpoint`).

    Raises:
        MissingFileError: no file at `path`.
        DataError: the file is broken or unsafe (see `load_checkpoint`).
        ConfigError: the weights do not fit the model (one line naming keys and shapes).
    """
    ckpt = load_checkpoint(path, trust)
    return load_state_strict(model, extract_state_dict(ckpt, use_ema), path)
