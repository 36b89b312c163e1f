"""Turn noise into images: build the configured sampler, wrap the model for classifier-free
guidance, decode; and the sample grids the `train` (periodic grids) and `sample` phases draw.

Shared by the `train`, `inference` and `sample` phases and the interactive page (`speed.app`), so
all of them draw images the same way; the denoising strip too.

A sampler's options are its keyword-only parameters (`speed.diffusion.samplers.sampler_options`),
set in config under `sampler_options:` (e.g. `sampler_options.grid=time_uniform` for
dpm_solver++). The root keys `eta` and `clip_denoised` (`ROOT_OPTION_KEYS`) also reach every
sampler that declares an option of that name; `sampler_options` wins over them.
"""

from __future__ import annotations

import difflib
import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from speed.config import ConfigError
from speed.config_schema import type_mismatch
from speed.control.images import load_control_images
from speed.diffusion import samplers as gaussian_samplers
from speed.diffusion.samplers import AtLeast, sampler_options
from speed.diffusion.samplers.common import check_num_steps
from speed.errors import DataError
from speed.flow import samplers as interpolant_samplers
from speed.models.guidance import guided_condition
from speed.text.prompts import load_prompts
from speed.utils.fsdp import is_sharded
from speed.utils.images import make_grid, to_uint8, upscale
from speed.utils.logging import interactive
from speed.utils.precision import autocast_denoiser

ROOT_OPTION_KEYS = ("eta", "clip_denoised")  # root keys that set the sampler option of that name
MIN_DISPLAY_SIDE = 96  # tiny images are enlarged (nearest neighbour) to at least this side
STRIP_COLUMNS = 8  # x0 snapshots shown in a denoising strip


# ---- samplers with their options ----

# Each objective's samplers, by the objective's `family` (`GaussianDiffusion.family`,
# `Interpolant.family`; a `diffusion._target_` factory carries it too). A new objective adds one
# line here.
SAMPLER_FAMILIES: dict[str, dict[str, Callable]] = {
    "gaussian": gaussian_samplers.SAMPLERS,
    "interpolant": interpolant_samplers.SAMPLERS,
}
DEFAULT_FAMILY = "gaussian"  # a diffusion target that names no family


def config_family(cfg: DictConfig) -> str:
    """The sampler family of the config's objective: its `diffusion._target_`'s `family`."""
    target = OmegaConf.select(cfg, "diffusion._target_", default=None, throw_on_missing=False)
    try:
        factory = get_object(target) if target else None
    except (ImportError, AttributeError, ValueError):
        factory = None
    return getattr(factory, "family", DEFAULT_FAMILY)


def family_samplers(family: str) -> dict[str, Callable]:
    """The sampler registry of objective family `family`."""
    return SAMPLER_FAMILIES[family]


def _unknown_sampler(name: str, family: str) -> ConfigError:
    """The error for a sampler `family` lacks, naming the family it belongs to if any."""
    registry = family_samplers(family)
    owners = [f for f, samplers in SAMPLER_FAMILIES.items() if name in samplers]
    if owners:
        return ConfigError(
            f"sampler '{name}' samples the {owners[0]} objective, but this run's objective is "
            f"{family} (diffusion._target_); its samplers: {', '.join(sorted(registry))}"
        )
    close = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.4)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown sampler {name!r}{hint}; choose one of {sorted(registry)}")


def _check_option(where: str, value: Any, annotation: Any) -> None:
    """Type (from the annotation, `Literal` included) and `AtLeast` bound of one option value."""
    base, *extras = (
        typing.get_args(annotation) if typing.get_origin(annotation) is Annotated else [annotation]
    )
    expected = type_mismatch(value, base)
    if expected is not None:
        raise ConfigError(f"{where} expects {expected}, got {value!r}")
    for extra in extras:
        if isinstance(extra, AtLeast) and value < extra.low:
            raise ConfigError(f"{where} must be >= {extra.low:g}, got {value!r}")


def build_sampler(
    name: str, options: Mapping[str, Any], prefix: str = "", family: str = DEFAULT_FAMILY
) -> Callable:
    """Sampler `name` of objective `family` with `options` checked and bound (a
    `functools.partial` of the sampler function, so it is called like an entry of `SAMPLERS`).

    A sampler of another family, an option the sampler does not declare, a value of the wrong
    type or out of its `AtLeast` bound is a `ConfigError` naming `prefix + option` (and the
    closest option for a misspelling), raised here, before any sampling.
    """
    registry = family_samplers(family)
    if name not in registry:  # an unknown name: the config's, so the user's to fix
        raise _unknown_sampler(name, family)
    fn = registry[name]
    declared = sampler_options(name, registry)
    for key, value in options.items():
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.0)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"sampler '{name}' has no option '{prefix}{key}'{hint} "
                f"(its options: {', '.join(sorted(declared)) or 'none'})"
            )
        _check_option(f"sampler option '{prefix}{key}' of '{name}'", value, declared[key][1])
    return functools.partial(fn, **options)


def sampler_from_config(cfg: DictConfig) -> Callable:
    """The sampler of `cfg.sampler` (of the family of `cfg.diffusion`'s objective) with the root
    keys of `ROOT_OPTION_KEYS` it declares and then `cfg.sampler_options` bound (see
    `build_sampler`); an unknown sampler, or one of another family, is a ConfigError."""
    family = config_family(cfg)
    registry = family_samplers(family)
    if cfg.sampler not in registry:
        raise ConfigError(f"sampler: {_unknown_sampler(cfg.sampler, family)}") from None
    declared = sampler_options(cfg.sampler, registry)
    options = {key: cfg[key] for key in ROOT_OPTION_KEYS if key in declared}
    options.update(OmegaConf.to_container(cfg.sampler_options, resolve=True))
    return build_sampler(cfg.sampler, options, prefix="sampler_options.", family=family)


@torch.no_grad()
def generate(
    model: nn.Module,
    diffusion,
    autoencoder: nn.Module,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    sampler: str | Callable = "ddpm",
    num_steps: int = 250,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable | None = None,
    precision: str = "fp32",
    conditions: Mapping[str, torch.Tensor] | None = None,
    **options,
) -> torch.Tensor:
    """Sample from `model` starting at `noise` [N, C, h, w]; returns decoded images [N, C', H, W],
    checked finite (a DataError otherwise, so no caller writes pictures of NaNs).

    Args:
        labels: class indices [N], None for an unconditional model, or a caption-conditioned
            model's condition {"y": caption embeddings or ids [N, L, ...], "mask": [N, L]}
            (`speed.text.TextEncoder.condition`).
        sampler: a name in `SAMPLERS` (then `options` are checked by `build_sampler`), or a
            sampler built by `build_sampler` / `sampler_from_config`.
        guidance_scale: classifier-free guidance scale s (1 = no guidance); with s != 1 the batch is
            doubled ([cond; uncond] with the null label `model.num_classes`, or the null caption
            by `force_drop_ids`) and the model's
            `forward_with_cfg` mixes eps_uncond + s * (eps_cond - eps_uncond).
        callback: fn(step_index, t, x, pred_xstart) called every step (e.g. a denoising strip).
        precision: fp32, bf16 or fp16: the autocast dtype of the model's forward; the sampler's
            own arithmetic stays float32 (`speed.utils.precision.autocast_denoiser`).
        conditions: more model kwargs with N rows, e.g. {"control": [N, C', h, w]} for a
            ControlNet (`speed.control.ControlledModel`) or {"low_res": [N, C, h, w]} for a
            super-resolution model (`SuperResUNet.conditions`); under guidance both halves of
            the batch see them (the model's `forward_with_cfg` passes them on).
        options: sampler options, e.g. clip_denoised=True, eta=1.0 (ddim), grid="time_uniform".
    """
    if isinstance(sampler, str):
        sample_fn = build_sampler(sampler, options, family=diffusion.family)
    else:
        sample_fn = functools.partial(sampler, **options)
    try:  # the config's num_steps, checked before any work
        check_num_steps(diffusion, num_steps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    n = noise.shape[0]
    guided = labels is not None and guidance_scale != 1.0
    conditions = dict(conditions or {})
    if guided:
        noise = torch.cat([noise, noise])
        model_fn = model.forward_with_cfg
        model_kwargs = {**guided_condition(model, labels), "cfg_scale": guidance_scale}
        model_kwargs.update({key: torch.cat([value, value]) for key, value in conditions.items()})
    else:
        model_fn = model
        model_kwargs = dict(labels) if isinstance(labels, Mapping) else {"y": labels}
        model_kwargs.update(conditions)
    latents = sample_fn(
        diffusion,
        autocast_denoiser(model_fn, precision, noise.device.type),
        noise,
        num_steps,
        model_kwargs=model_kwargs,
        generator=generator,
        progress=progress,
        callback=callback,
    )
    images = autoencoder.decode(latents[:n])
    if not bool(torch.isfinite(images).all()):  # never let NaNs become black pictures
        raise DataError(
            f"sampling produced NaN/inf in {int((~torch.isfinite(images)).flatten(1).any(1).sum())}"
            f" of {n} images; nothing was written for them; check the checkpoint, sampler and "
            "guidance_scale"
        )
    return images


def condition_rows(condition, rows):
    """The rows `rows` (an index or slice) of labels, or of every tensor of a caption condition."""
    if condition is None:
        return None
    if isinstance(condition, Mapping):
        return {key: value[rows] for key, value in condition.items()}
    return condition[rows]


# ---- sample grids (sample phase, and periodic grids during training) ----


def grid_rows(cfg: DictConfig, num_classes: int) -> list[int] | None:
    """Class of each grid row: `sample_classes`, else every class (up to 10); None if uncond."""
    if num_classes == 0:
        return None
    if cfg.sample_classes:
        bad = [c for c in cfg.sample_classes if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"sample_classes: {bad} outside 0..{num_classes - 1}")
        return list(cfg.sample_classes)
    return list(range(min(num_classes, 10)))


def grid_noise(spec, rows: int, seeds: int, seed: int, device) -> torch.Tensor:
    """Noise [rows * seeds, C, h, w]; column j uses seed + j, so a column shares its noise."""
    columns = [
        torch.randn(
            spec.channels, spec.side, spec.side, generator=torch.Generator().manual_seed(seed + j)
        )
        for j in range(seeds)
    ]
    return torch.stack(columns * rows).to(device)


def grid_prompts(cfg: DictConfig) -> list[str]:
    """The prompts of a text-to-image grid (one row each): `prompts` or `prompts_file`."""
    prompts = load_prompts(cfg.prompts, cfg.prompts_file)
    if not prompts:
        raise ConfigError(
            "a text-to-image model draws prompts: set prompts='[\"a cat left of a zebra\"]' or "
            "prompts_file=<a text file, one prompt per line>"
        )
    return prompts


def grid_inputs(cfg: DictConfig, spec, device, text_encoder: nn.Module | None = None):
    """(noise, condition) of a grid: one row per class of `grid_rows` (labels None if uncond),
    or with a text encoder one row per prompt of `grid_prompts` (its encoded condition).

    spec: the model input (`channels`, `side`, `num_classes`), e.g. `speed.runners.build.DataSpec`.
    """
    seeds = cfg.num_sample_seeds
    if text_encoder is not None and text_encoder.reads_text:
        prompts = grid_prompts(cfg)
        captions = [p for p in prompts for _ in range(seeds)]
        noise = grid_noise(spec, len(prompts), seeds, cfg.seed, device)
        return noise, text_encoder.condition(captions, device)
    rows = grid_rows(cfg, spec.num_classes)
    labels = torch.tensor(rows, device=device).repeat_interleave(seeds) if rows else None
    noise = grid_noise(spec, len(rows) if rows else 1, seeds, cfg.seed, device)
    return noise, labels


@dataclass(frozen=True)
class ControlGrid:
    """The control images of a grid, one per row: `per_image` [rows * seeds, C, h, w] in the
    model's input space (row-major, as the grid's noise), `shown` uint8 [rows, H, W, C] the
    maps drawn first in each row."""

    per_image: torch.Tensor
    shown: np.ndarray


def data_controls(dataset, control, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(control maps [N, C, H, W] in pixel space, labels [N]) of the dataset's items `indices`:
    the control transform of each image, as training computes it."""
    items = [dataset[i] for i in indices]
    images = torch.stack([torch.as_tensor(x) for x, _ in items])
    labels = torch.as_tensor([int(y) for _, y in items])
    return control.maps(images), labels


def control_grid_inputs(cfg: DictConfig, spec, control, autoencoder, dataset, device):
    """(noise, labels, ControlGrid) of a ControlNet grid: one row per control image, one
    column per seed. The rows are the images at `control.images` (labels cycling through
    `grid_rows`), else the control maps of the first data image of each class of `grid_rows`
    (of the first four images for an unconditional model), labelled with their class."""
    rows = grid_rows(cfg, spec.num_classes)
    if control.images:
        side = spec.side * autoencoder.downsample
        channels = spec.channels if autoencoder.latent_channels is None else 3  # latents: RGB
        maps = load_control_images(control.images, side, channels)
        labels = torch.tensor([rows[i % len(rows)] for i in range(len(maps))]) if rows else None
    else:
        indices = range(min(4, len(dataset)))
        with torch.random.fork_rng():  # a dataset's random flips leave training's RNG alone
            if rows:
                first: dict[int, int] = {}
                for i in range(len(dataset)):
                    first.setdefault(int(dataset[i][1]), i)
                    if all(c in first for c in rows):
                        break
                indices = [first[c] for c in rows if c in first]
            maps, labels = data_controls(dataset, control, indices)
        labels = labels if rows else None
    seeds = cfg.num_sample_seeds
    with torch.no_grad():
        per_image = autoencoder.encode(maps.to(device)).repeat_interleave(seeds, 0)
    noise = grid_noise(spec, len(maps), seeds, cfg.seed, device)
    labels = None if labels is None else labels.to(device).repeat_interleave(seeds)
    return noise, labels, ControlGrid(per_image, to_uint8(maps))


def scales_of(cfg: DictConfig) -> list[float]:
    value = cfg.guidance_scale
    return [float(s) for s in value] if isinstance(value, (list, ListConfig)) else [float(value)]


def generate_from_config(model, diffusion, autoencoder, cfg, sampler, noise, labels, scale, **kw):
    """`generate` with a sampler built by `sampler_from_config(cfg)`, the config's steps and
    precision and a generator seeded by `cfg.seed`; kw: `generate`'s progress, callback,
    conditions."""
    return generate(
        model,
        diffusion,
        autoencoder,
        noise,
        labels,
        sampler=sampler,
        num_steps=cfg.num_steps,
        guidance_scale=scale,
        generator=torch.Generator(noise.device).manual_seed(cfg.seed),
        precision=cfg.precision,
        **kw,
    )


def enlarge_factor(side: int) -> int:
    return max(1, MIN_DISPLAY_SIDE // side)


def render_grid(
    model, diffusion, autoencoder, cfg, sampler, scale, noise, labels, callback=None, control=None
) -> np.ndarray:
    """Sample the grid's images at one guidance scale; returns a uint8 HWC picture.
    `callback`: `generate`'s, called after every sampling step (e.g. a progress bar).
    `control`: a `ControlGrid`: each row's control image is sampled under and shown first."""
    images = generate_from_config(
        model,
        diffusion,
        autoencoder,
        cfg,
        sampler,
        noise,
        labels,
        scale,
        progress=interactive(),  # a bar in a terminal; nothing in a log file
        callback=callback,
        conditions=None if control is None else {"control": control.per_image},
    )
    tiles, columns = to_uint8(images), cfg.num_sample_seeds
    if control is not None:  # the control image first in its row
        rows = tiles.reshape(-1, columns, *tiles.shape[1:])
        tiles = np.concatenate([control.shown[:, None], rows], axis=1).reshape(-1, *tiles.shape[1:])
        columns += 1
    return upscale(make_grid(tiles, nrow=columns), enlarge_factor(tiles.shape[1]))


def denoising_strip(
    model, diffusion, autoencoder, cfg, sampler, noise, labels, scale, callback=None, control=None
) -> np.ndarray:
    """x0 predictions at STRIP_COLUMNS evenly spaced steps (one row per image), then the sample;
    a uint8 HWC picture. `callback` as in `render_grid`; `control`: a ControlNet's control
    images [N, C', h, w] (`generate`'s conditions["control"])."""
    keep = set(np.linspace(0, cfg.num_steps - 1, STRIP_COLUMNS).round().astype(int).tolist())
    snapshots = []

    def collect(step_index, t, x, pred_xstart):
        if step_index in keep:
            snapshots.append(pred_xstart[: noise.shape[0]].clone())
        if callback is not None:
            callback(step_index, t, x, pred_xstart)

    final = generate_from_config(
        model,
        diffusion,
        autoencoder,
        cfg,
        sampler,
        noise,
        labels,
        scale,
        callback=collect,
        conditions=None if control is None else {"control": control},
    )
    frames = [to_uint8(autoencoder.decode(s)) for s in snapshots] + [to_uint8(final)]
    tiles = np.stack(frames, axis=1).reshape(-1, *frames[0].shape[1:])
    return upscale(make_grid(tiles, nrow=len(frames)), enlarge_factor(tiles.shape[1]))


class TrainingGridSampler:
    """Grids during training: fixed noise and classes, EMA weights, rank 0 only (every rank
    runs a sharded EMA's forward passes, which gather its weights; rank 0 keeps the grid).

    The sampler is built here, so a bad sampler option fails when training starts.
    """

    def __init__(
        self, cfg: DictConfig, spec, autoencoder, device, control=None, dataset=None,
        text_encoder=None,
    ):  # fmt: skip
        self.cfg, self.autoencoder = cfg, autoencoder
        self.sampler = sampler_from_config(cfg)
        self.control = None  # a ControlNet run: rows under the data's control images
        if control is not None:
            inputs = control_grid_inputs(cfg, spec, control, autoencoder, dataset, device)
            self.noise, self.labels, self.control = inputs
        else:
            self.noise, self.labels = grid_inputs(cfg, spec, device, text_encoder)

    def render(self, ema, diffusion) -> np.ndarray | None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank != 0 and not is_sharded(ema):
            return None
        scale = scales_of(self.cfg)[0]
        grid = render_grid(
            ema,
            diffusion,
            self.autoencoder,
            self.cfg,
            self.sampler,
            scale,
            self.noise,
            self.labels,
            control=self.control,
        )
        return grid if rank == 0 else None
