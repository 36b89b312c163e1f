"""The config schema: every key a config may hold, its type, and how a value is checked.

This is the one place that lists keys. A new root key is a new `RootConfig` field (with its
default and a comment; also add it to configs/base.yaml, which tests/config/test_config_schema.py
keeps equal to `RootConfig`, and to configs/README.md). A node's keys are
the parameters of its `_target_` callable plus the runner keys listed in `NODES`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

# Hydra's own keys, allowed in every node, with their types.
HYDRA_KEYS: dict[str, Any] = {
    "_target_": str,
    "_convert_": str,
    "_recursive_": bool,
    "_partial_": bool,
    "_args_": list,
}

# Phase subtrees: `train:`, `inference:`, `sample:` hold overrides of root keys and nodes for
# that phase only; they are lifted to the root for their phase and dropped otherwise.
PHASES = ("train", "inference", "sample")

# Nodes built with `instantiate`, each with the keys the runners read from it (with their types)
# that are not arguments of its `_target_`.
NODES: dict[str, dict[str, Any]] = {
    "model": {},
    "diffusion": {},
    "optimizer": {},
    "data": {"batch_size": int, "num_workers": int, "pin_memory": bool},
    "autoencoder": {},
    "text_encoder": {},  # speed.text: Labels (no text), T5TextEncoder, CLIPTextEncoder, ByteTokens
    "repa": {},  # speed.alignment.build_alignment: REPA during training (lam 0 = off)
    "adapter": {},  # speed.adapters.build_adapter: LoRA over a trained base (rank 0 = off)
    "control": {},  # speed.control.build_control: ControlNet over a trained base (null = off)
    "slurm": {},  # launcher=slurm: speed.sweep.slurm.SlurmSettings, each sweep run's job
}


@dataclasses.dataclass
class RootConfig:
    """Root keys with their types and defaults (configs/base.yaml repeats them with comments)."""

    seed: int = 0  # base seed; training rank r of W uses seed * W + r
    experiment_dir: str = "runs/default"  # run folder holding train/, inference/, sample/
    num_classes: int | None = None  # label classes; null = from the dataset, 0 = unconditional
    image_size: int = 0  # pixel side when sampling without a dataset; 0 = from the data
    ckpt_path: str | None = None  # train: initial weights; inference/sample: checkpoint to use
    resume: bool | str = False  # true = newest checkpoint of experiment_dir, or a checkpoint path
    overwrite: bool = False  # allow a fresh run into an experiment_dir holding checkpoints
    trust_checkpoint: bool = False  # unpickle checkpoints holding more than tensors (runs code)
    resume_changes: list[str] = dataclasses.field(default_factory=list)  # keys a resume may change
    # training length, checkpoints and logs (in optimizer steps)
    max_training_steps: int = 400000  # stop after this many optimizer steps
    max_training_seconds: float = 0  # ... or this much training time, summed over resumes (0: none)
    epoch: int = 1400  # ... or after this many passes over the data
    global_batch_size: int | None = None  # images per step over all ranks; null = data.batch_size
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    ckpt_every: int = 50000  # steps between checkpoints
    ckpt_keep: int = 0  # keep only the newest N checkpoints (0 = all)
    ckpt_keep_every: int = 0  # never delete steps divisible by this (0 = none spared)
    log_every: int = 100  # steps between log lines
    sample_every: int = 0  # steps between sample grids during training (0 = never)
    max_nonfinite: int = 10  # act (on_nonfinite) after this many non-finite losses in a row
    on_nonfinite: Literal["stop", "rollback"] = "stop"  # on NaN/inf: stop, or roll back
    # optimisation
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype (training and sampling)
    strategy: Literal["ddp", "fsdp"] = "ddp"  # replicate the model per rank, or shard it
    tf32: bool = True  # allow TF32 matmuls on Ampere+ GPUs
    grad_clip: float | None = None  # max global gradient norm (null = no clipping)
    compile: bool = False  # torch.compile the model (training and sampling)
    ema_rates: list[float] = dataclasses.field(default_factory=lambda: [0.9999])  # EMA decays
    lr_schedule: Literal["constant", "warmup", "cosine", "linear_anneal"] = "constant"
    warmup_steps: int = 0  # linear learning-rate warm-up steps
    lr_anneal_steps: int = 0  # steps to anneal to zero; 0 = max_training_steps
    # logging
    wandb: Literal["offline", "online", "disabled"] = "disabled"  # wandb mode; off unless asked
    tensorboard: bool = True  # write TensorBoard event files
    project: str = "speed"  # wandb project name
    # sampling
    sampler: str = "ddpm"  # a name in speed.diffusion.samplers.SAMPLERS
    num_steps: int = 250  # sampling steps
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic)
    sampler_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {grid: ...}
    guidance_scale: float | list[float] = 1.0  # classifier-free guidance (1 = off)
    clip_denoised: bool = False  # clip x0 predictions to [-1, 1]
    use_ema_for_sampling: bool = True  # sample with EMA weights
    num_samples: int = 50000  # inference: images over all ranks
    per_proc_batch_size: int = 32  # inference: images per forward pass per rank
    sample_classes: list[int] | None = None  # classes to draw (null = all, up to 10)
    num_sample_seeds: int = 8  # sample: grid columns
    denoise_strip: bool = False  # sample: also write x0 predictions along the trajectory
    low_res: str | None = None  # sample, super-resolution: image or folder (null = held out)
    prompts: list[str] | None = None  # text-to-image: captions to draw (grid rows / cycled)
    prompts_file: str | None = None  # ... or a text file of them, one per line (wins when set)
    # sweeps (main.py -m)
    launcher: Literal["local", "slurm"] = "local"  # runs here one by one, or a SLURM job each


ROOT_TYPES: dict[str, Any] = typing.get_type_hints(RootConfig)

# Root keys that must be >= 1: a run with 0 of them cannot take a step, log or write an image.
POSITIVE_KEYS = (
    "max_training_steps", "epoch", "grad_accum", "ckpt_every", "log_every", "max_nonfinite",
    "num_steps", "num_samples", "per_proc_batch_size", "num_sample_seeds", "global_batch_size",
)  # fmt: skip

# Every integer in a config reaches torch or numpy as a 64-bit integer at most.
INT64 = (-(2**63), 2**63 - 1)

# Allowed (low, high) of numeric keys by dotted path (None: unbounded on that side; a float must
# also be finite); a list's items are checked one by one.
RANGES: dict[str, tuple[float | None, float | None]] = {
    # numpy's seed range (np.random.seed); per-rank seeds seed * W + r stay within torch's 64 bits
    "seed": (0, 2**32 - 1),
    **{key: (1, None) for key in POSITIVE_KEYS},
    **dict.fromkeys(
        (
            "image_size",
            "num_classes",
            "ckpt_keep",
            "max_training_seconds",
            "ckpt_keep_every",
            "sample_every",
            "warmup_steps",
            "lr_anneal_steps",
            "data.num_workers",
        ),
        (0, None),
    ),  # fmt: skip
    "data.batch_size": (1, None),
    "ema_rates": (0.0, 1.0),  # EMA decay per step
    "eta": (None, None),  # finite (its sign is the sampler's check)
    "guidance_scale": (None, None),  # any finite scale
}


def out_of_range(path: str, value: Any) -> str | None:
    """None when a number at `path` is allowed (see `RANGES` and `INT64`), else what is allowed,
    e.g. 'must lie in 0..4294967295'. Non-numbers are left to the type checks."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value) and path in RANGES:
        return "must be a finite number"
    low, high = RANGES.get(path, (None, None))
    if low is not None and high is not None and not low <= value <= high:
        return f"must lie in {low}..{high}"
    if low is not None and value < low:
        return f"must be >= {low}"
    if high is not None and value > high:
        return f"must be <= {high}"
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return "must fit in 64 bits (-2**63..2**63-1: torch's and numpy's int64)"
    return None


def root_defaults() -> dict[str, Any]:
    """The root keys with their default values, as a plain dict."""
    return dataclasses.asdict(RootConfig())


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a YAML value (None, bool, int, float, str, list, dict) fits an annotation.

    Only bool, int, float, str, None, Literal, lists/tuples and dicts of them (and unions of these)
    are judged; int is accepted for float. Anything else (Any, classes, callables, unresolved
    string annotations) is accepted: it cannot be checked from a YAML value.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_fits, value, args))
        return not args or all(_fits(item, args[0]) for item in value)
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is None or annotation is type(None):
        return value is None
    return True


def describe(annotation: Any) -> str:
    """A short reading of an annotation for error messages, e.g. 'float or list of float'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + "|".join(str(arg) for arg in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return f"list of {describe(args[0])}" if args else "list"
    if annotation is None or annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def type_mismatch(value: Any, annotation: Any) -> str | None:
    """None when `value` fits `annotation`, else what was expected (see `describe`)."""
    return None if _fits(value, annotation) else describe(annotation)
