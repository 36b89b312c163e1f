"""What made a sampling output, so that an output counts as finished only for the config that
made it, and the leftovers of a killed writer.

- An inference image folder records `image_settings` in `settings.json`: the sampling settings
  (`sampling_settings`) and the sha256 of the checkpoint; its PNGs are reused only under the same
  record.
- An inference `.npz` records `npz_provenance` in its `provenance` entry (JSON text in a 0-d
  unicode array): the checkpoint's path and sha256, `num_samples`, the settings, the model and
  autoencoder nodes. Evaluators read `arr_0` / `arr_1` by name and never see it; `np.load` reads
  it without pickle. `read_provenance` gives it back (None for an npz without one).
- `output_name`: outputs of one checkpoint under other settings sit side by side. The settings
  that first use a checkpoint take its plain name (`inference/<ckpt-stem>.npz`,
  `sample/<ckpt-stem>.png`); others are named by what differs from those, e.g.
  `<ckpt-stem>-guidance_scale=4.0,precision=bf16`, and numbered on a clash. Nothing is
  overwritten unless `overwrite=true` (which takes the plain name).
- `remove_partial_files`: the temporary files of `speed.utils.atomic` that a killed run left.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from speed.models.loading import checksum_path, file_sha256
from speed.text.prompts import load_prompts

SETTINGS_FILE = "settings.json"
PROVENANCE_KEY = "provenance"
SETTINGS_KEYS = (
    "seed", "sampler", "num_steps", "eta", "guidance_scale", "clip_denoised",
    "use_ema_for_sampling", "per_proc_batch_size", "sample_classes", "diffusion",
)  # fmt: skip
CHECKPOINT_DIGEST = "checkpoint_sha256"
MAX_NAME_LENGTH = 200  # characters of a run folder's or output's name (file systems allow 255)
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
# Left out of records at their default (unset prompts: not text-to-image).
OMITTED_DEFAULTS = {"precision": "fp32", "sampler_options": {}, "prompts": None}


def grid_settings(cfg: DictConfig, ckpt_path: str | os.PathLike) -> dict:
    """What a `sample` grid depends on: the sampling settings but the inference batch, the grid's
    columns and the checkpoint's sha256."""
    settings = {k: v for k, v in sampling_settings(cfg).items() if k != "per_proc_batch_size"}
    return {
        **settings,
        "num_sample_seeds": int(cfg.num_sample_seeds),
        CHECKPOINT_DIGEST: checkpoint_digest(ckpt_path),
    }


def sampling_settings(cfg: DictConfig) -> dict:
    """What sampled images depend on besides the checkpoint (JSON-ready): the keys of
    `SETTINGS_KEYS`, plus `sampler_options` and `precision` when not at their defaults (so records
    of earlier runs still match). `compile` is left out: it gives the same images to float
    tolerance."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    settings = {key: resolved[key] for key in SETTINGS_KEYS}
    if cfg.sampler_options:
        settings["sampler_options"] = resolved["sampler_options"]
    if cfg.precision != "fp32":
        settings["precision"] = cfg.precision
    if OmegaConf.select(cfg, "control.branch", default=None):  # a ControlNet's strength, images
        settings["control"] = {k: resolved["control"][k] for k in ("scale", "images")}
    prompts = load_prompts(cfg.prompts, cfg.prompts_file)
    if prompts:  # text-to-image: the prompts drawn, not where they were read from
        settings["prompts"] = prompts
    return settings


def checkpoint_digest(path: str | os.PathLike) -> str:
    """The sha256 of checkpoint `path`: its sidecar's (the project's checkpoints, verified when
    loaded), else computed from the bytes (official weights); cached per file version."""
    stat = os.stat(path)
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sidecar = checksum_path(path)
    if sidecar.is_file():
        words = sidecar.read_text().split()
        if words:
            return words[0]
    return file_sha256(path)


def image_settings(cfg: DictConfig, ckpt_path: str | os.PathLike) -> dict:
    """The record of an inference image folder: `sampling_settings` and the checkpoint's sha256."""
    return {**sampling_settings(cfg), CHECKPOINT_DIGEST: checkpoint_digest(ckpt_path)}


def npz_provenance(cfg: DictConfig, ckpt_path: str | os.PathLike) -> dict:
    """What an inference `.npz` of `cfg` sampled from `ckpt_path` holds (JSON-ready)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {
        "checkpoint": str(Path(ckpt_path).resolve()),
        **image_settings(cfg, ckpt_path),
        "num_samples": int(cfg.num_samples),
        "num_classes": resolved["num_classes"],
        "model": resolved["model"],
        "autoencoder": resolved["autoencoder"],
    }


def same_output(record: dict | None, expected: dict) -> bool:
    """Whether a stored provenance `record` describes the output `expected` describes: all keys
    equal but the checkpoint's path (a moved run folder holds the same bytes)."""
    if record is None:
        return False
    return _without_path(record) == _without_path(json.loads(json.dumps(expected)))


def _without_path(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "checkpoint"}


def provenance_entry(record: dict) -> np.ndarray:
    """The `provenance` array to store in an npz beside arr_0 / arr_1."""
    return np.array(json.dumps(record, sort_keys=True))


def read_provenance(npz_path: str | os.PathLike) -> dict | None:
    """The provenance an npz records; None when it has none or cannot be read."""
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            if PROVENANCE_KEY not in data:
                return None
            return json.loads(str(data[PROVENANCE_KEY]))
    except (OSError, ValueError, EOFError):
        return None


def settings_in_npz(npz_path: str | os.PathLike) -> dict | None:
    """The `image_settings` part of an npz's provenance; None without one."""
    record = read_provenance(npz_path)
    if record is None:
        return None
    outside = ("checkpoint", "num_samples", "num_classes", "model", "autoencoder")
    return {key: value for key, value in record.items() if key not in outside}


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in `path`; None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_settings(folder: str | os.PathLike) -> dict | None:
    """The `settings.json` record of an image folder; None when absent or unreadable."""
    return read_json(Path(folder) / SETTINGS_FILE)


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for each (dotted) key whose value differs, in `new`'s key order."""
    if not prefix:
        old, new = {**OMITTED_DEFAULTS, **old}, {**OMITTED_DEFAULTS, **new}
    found = []
    for key in dict.fromkeys([*new, *old]):
        a, b = old.get(key, "unset"), new.get(key, "unset")
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return found


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 20 else text[:12] + "..."


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (`.<name>.<random>.tmp`) a killed writer left in `folder`;
    call only while holding the folder's RunLock (then no live writer owns them)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# ---- names of outputs ----


def folder_name(words: Sequence[str]) -> str:
    """A file-system-safe name for `key=value` words: joined by commas, characters other than
    letters, digits and `._,=+-` replaced by `_`, and names longer than MAX_NAME_LENGTH cut and
    suffixed with a hash of the full name."""
    name = _UNSAFE.sub("_", ",".join(words)) or "default"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME_LENGTH - 11]}-{digest}"


def output_name(
    stem: str, settings: dict, stored: Callable[[str], dict | None], overwrite: bool = False
) -> str:
    """The name of the output of checkpoint `stem` under `settings`: `stem` when free, holding
    the same settings, or `overwrite`; else `<stem>-<key=value,...>` for the settings that differ
    from the ones `stem` holds (`-2`, `-3`, ... appended while that name holds yet others).
    `stored(name)` is the settings record of output `name`, None when there is none."""
    plain = stored(stem)
    if overwrite or plain is None or plain == settings:
        return stem
    base = f"{stem}-{folder_name(_changed_words(plain, settings))}"
    name, number = base, 1
    while stored(name) not in (None, settings):
        number += 1
        name = f"{base}-{number}"
    return name


def _changed_words(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`key=value` (new values) for the keys whose values differ; the checkpoint as `ckpt=`."""
    if not prefix:
        old, new = {**OMITTED_DEFAULTS, **old}, {**OMITTED_DEFAULTS, **new}
    words = []
    for key in dict.fromkeys([*new, *old]):
        a, b = old.get(key), new.get(key, "unset")
        if a == b:
            continue
        if key == CHECKPOINT_DIGEST:
            words.append(f"ckpt={str(b)[:8]}")
        elif isinstance(a, dict) and isinstance(b, dict):
            words += _changed_words(a, b, f"{prefix}{key}.")
        else:
            words.append(f"{prefix}{key}={_compact(b)}")
    return words


def _compact(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def outputs_of(folder: str | os.PathLike, stem: str, suffix: str) -> list[str]:
    """The names of the outputs of checkpoint `stem` in `folder` (files `<name><suffix>`)."""
    folder = Path(folder)
    names = [p.name[: -len(suffix)] for p in folder.glob(f"{stem}*{suffix}")]
    return sorted(n for n in names if n == stem or n.startswith(f"{stem}-"))
