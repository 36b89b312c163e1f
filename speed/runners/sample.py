"""The `sample` phase: image grids to look at (one row per class, one column per seed).

Also renders the periodic grids of the train phase (fixed noise and classes, so grids from
different steps are comparable), side-by-side grids for several guidance scales, and a
"denoising strip" of the x0 predictions along the sampling trajectory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image, ImageDraw

from speed.config import ConfigError, save_config
from speed.generation import generate
from speed.run import RunDir
from speed.runners.build import DataSpec, build_autoencoder, build_diffusion, build_sampling_model
from speed.utils.distributed import init_distributed
from speed.utils.images import make_grid, save_png, to_uint8, upscale

STRIP_COLUMNS = 8  # x0 snapshots shown in a denoising strip
MIN_DISPLAY_SIDE = 96  # tiny images are enlarged (nearest neighbour) to at least this side


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


def grid_noise(spec: DataSpec, rows: int, seeds: int, seed: int, device) -> torch.Tensor:
    """Noise [rows * seeds, C, h, w]; column j uses seed + j, so a column shares its noise."""
    columns = [
        torch.randn(
            spec.channels, spec.side, spec.side, generator=torch.Generator().manual_seed(seed + j)
        )
        for j in range(seeds)
    ]
    return torch.stack(columns * rows).to(device)


def grid_inputs(cfg: DictConfig, spec: DataSpec, device):
    """(noise, labels) of a grid: one row per class of `grid_rows` (labels None if uncond)."""
    rows = grid_rows(cfg, spec.num_classes)
    seeds = cfg.num_sample_seeds
    labels = torch.tensor(rows, device=device).repeat_interleave(seeds) if rows else None
    noise = grid_noise(spec, len(rows) if rows else 1, seeds, cfg.seed, device)
    return noise, labels


def scales_of(cfg: DictConfig) -> list[float]:
    value = cfg.guidance_scale
    return [float(s) for s in value] if isinstance(value, (list, ListConfig)) else [float(value)]


def generate_from_config(model, diffusion, autoencoder, cfg, noise, labels, scale, **extra):
    """`generate` with the config's sampler, steps, eta, clipping and seed."""
    return generate(
        model,
        diffusion,
        autoencoder,
        noise,
        labels,
        sampler=cfg.sampler,
        num_steps=cfg.num_steps,
        guidance_scale=scale,
        generator=torch.Generator(noise.device).manual_seed(cfg.seed),
        clip_denoised=cfg.clip_denoised,
        eta=cfg.eta,
        **extra,
    )


def render_grid(model, diffusion, autoencoder, cfg, scale, noise, labels):
    """Sample the grid's images at one guidance scale; returns a uint8 HWC picture."""
    images = generate_from_config(
        model, diffusion, autoencoder, cfg, noise, labels, scale, progress=True
    )
    tiles = to_uint8(images)
    return upscale(make_grid(tiles, nrow=cfg.num_sample_seeds), _enlarge_factor(tiles.shape[1]))


def titled(picture: np.ndarray, title: str) -> np.ndarray:
    """Put a one-line caption above a uint8 HWC picture."""
    mode = "L" if picture.shape[2] == 1 else "RGB"
    canvas = Image.new(mode, (picture.shape[1], picture.shape[0] + 16), color=255)
    canvas.paste(Image.fromarray(picture.squeeze(2) if mode == "L" else picture), (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=0)
    out = np.asarray(canvas)
    return out[:, :, None] if out.ndim == 2 else out


def side_by_side(pictures: list[np.ndarray], gap: int = 8) -> np.ndarray:
    height = max(p.shape[0] for p in pictures)
    padded = [
        np.pad(p, ((0, height - p.shape[0]), (0, gap), (0, 0)), constant_values=255)
        for p in pictures
    ]
    return np.concatenate(padded, axis=1)


def denoising_strip(model, diffusion, autoencoder, cfg, noise, labels, scale):
    """x0 predictions at STRIP_COLUMNS evenly spaced steps (one row per image), then the sample."""
    keep = set(np.linspace(0, cfg.num_steps - 1, STRIP_COLUMNS).round().astype(int).tolist())
    snapshots = []

    def collect(step_index, t, x, pred_xstart):
        if step_index in keep:
            snapshots.append(pred_xstart[: noise.shape[0]].clone())

    final = generate_from_config(
        model, diffusion, autoencoder, cfg, noise, labels, scale, callback=collect
    )
    frames = [to_uint8(autoencoder.decode(s)) for s in snapshots] + [to_uint8(final)]
    tiles = np.stack(frames, axis=1).reshape(-1, *frames[0].shape[1:])
    return upscale(make_grid(tiles, nrow=len(frames)), _enlarge_factor(tiles.shape[1]))


def _enlarge_factor(side: int) -> int:
    return max(1, MIN_DISPLAY_SIDE // side)


class TrainingGridSampler:
    """Grids during training: fixed noise and classes, EMA weights, rank 0 only."""

    def __init__(self, cfg: DictConfig, spec: DataSpec, autoencoder, device):
        self.cfg, self.autoencoder = cfg, autoencoder
        self.noise, self.labels = grid_inputs(cfg, spec, device)

    def render(self, ema, diffusion) -> np.ndarray | None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return None
        scale = scales_of(self.cfg)[0]
        return render_grid(
            ema, diffusion, self.autoencoder, self.cfg, scale, self.noise, self.labels
        )


def sample(cfg: DictConfig) -> Path:
    """Write `<experiment_dir>/sample/<ckpt-stem>.png`; returns its path."""
    dist = init_distributed()
    device = dist.device
    autoencoder = build_autoencoder(cfg).to(device)
    model, ckpt_path, spec = build_sampling_model(cfg, autoencoder, device)
    diffusion = build_diffusion(cfg)
    noise, labels = grid_inputs(cfg, spec, device)
    run = RunDir.of(cfg)
    scales = scales_of(cfg)
    pictures = []
    for scale in scales:
        grid = render_grid(model, diffusion, autoencoder, cfg, scale, noise, labels)
        pictures.append(titled(grid, f"guidance {scale:g}") if len(scales) > 1 else grid)
    path = save_png(
        side_by_side(pictures) if len(pictures) > 1 else pictures[0],
        run.sample_grid(ckpt_path.stem),
    )
    if cfg.denoise_strip:
        first_column = slice(None, None, cfg.num_sample_seeds)
        strip = denoising_strip(
            model,
            diffusion,
            autoencoder,
            cfg,
            noise[first_column],
            labels[first_column] if labels is not None else None,
            scales[0],
        )
        save_png(strip, run.sample_grid(ckpt_path.stem, "-denoising"))
    save_config(cfg, run.config_file("sample"))
    print(f"sample: wrote {path}", flush=True)
    return path
