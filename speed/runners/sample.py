"""The `sample` phase: image grids to look at (one row per class, or per prompt with its caption
written beside it, one column per seed), each named by its settings beside a JSON record of them
(`speed.run.outputs.output_name`).

Side-by-side grids for several guidance scales, and a "denoising strip" of the x0 predictions
along the sampling trajectory. The grids themselves (shared with the train phase's periodic
grids) and the strip are drawn by `speed.generation`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from speed.config import save_config
from speed.generation import (
    condition_rows,
    denoising_strip,
    grid_inputs,
    grid_prompts,
    render_grid,
    sampler_from_config,
    scales_of,
)
from speed.run import RunDir, locked
from speed.run.outputs import grid_settings, outputs_of
from speed.runners.build import (
    build_autoencoder,
    build_diffusion,
    build_sampling_model,
    build_text_encoder,
)
from speed.utils.atomic import atomic_write
from speed.utils.distributed import init_distributed
from speed.utils.images import save_png


def titled(picture: np.ndarray, title: str) -> np.ndarray:
    """Put a one-line caption above a uint8 HWC picture."""
    mode = "L" if picture.shape[2] == 1 else "RGB"
    canvas = Image.new(mode, (picture.shape[1], picture.shape[0] + 16), color=255)
    canvas.paste(Image.fromarray(picture.squeeze(2) if mode == "L" else picture), (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=0)
    out = np.asarray(canvas)
    return out[:, :, None] if out.ndim == 2 else out


def captioned_rows(picture: np.ndarray, captions: list[str]) -> np.ndarray:
    """Write each row's caption to the left of a uint8 HWC grid of len(captions) equal rows."""
    mode = "L" if picture.shape[2] == 1 else "RGB"
    width = 8 + 6 * max(len(c) for c in captions)  # Pillow's default font: about 6 px a letter
    canvas = Image.new(mode, (picture.shape[1] + width, picture.shape[0]), color=255)
    canvas.paste(Image.fromarray(picture.squeeze(2) if mode == "L" else picture), (width, 0))
    row_height = picture.shape[0] / len(captions)
    draw = ImageDraw.Draw(canvas)
    for i, caption in enumerate(captions):
        draw.text((4, int((i + 0.5) * row_height) - 6), caption, fill=0)
    out = np.asarray(canvas)
    return out[:, :, None] if out.ndim == 2 else out


def side_by_side(pictures: list[np.ndarray], gap: int = 8) -> np.ndarray:
    height = max(p.shape[0] for p in pictures)
    padded = [
        np.pad(p, ((0, height - p.shape[0]), (0, gap), (0, 0)), constant_values=255)
        for p in pictures
    ]
    return np.concatenate(padded, axis=1)


def sample(cfg: DictConfig) -> Path:
    """Write the grid `<experiment_dir>/sample/<name>.png` and its settings `<name>.json`;
    returns the grid's path. `<name>` is the checkpoint's stem for the settings first drawn from
    it, else named by what differs (`RunDir.sample_name`), so grids of other guidance scales,
    samplers or seeds sit side by side. The sample folder is locked for the run."""
    dist = init_distributed()
    with locked(RunDir.of(cfg).sample, enabled=dist.is_main):
        return _sample(cfg, dist)


def _sample(cfg: DictConfig, dist) -> Path:
    device = dist.device
    sampler = sampler_from_config(cfg)
    autoencoder = build_autoencoder(cfg).to(device)
    text_encoder = build_text_encoder(cfg).to(device)
    model, ckpt_path, spec = build_sampling_model(cfg, autoencoder, device, text_encoder)
    diffusion = build_diffusion(cfg)
    noise, labels = grid_inputs(cfg, spec, device, text_encoder)
    prompts = grid_prompts(cfg) if text_encoder.reads_text else None
    run = RunDir.of(cfg)
    settings = grid_settings(cfg, ckpt_path)
    name = run.sample_name(ckpt_path.stem, settings, cfg.overwrite)
    scales = scales_of(cfg)
    pictures = []
    for scale in scales:
        grid = render_grid(model, diffusion, autoencoder, cfg, sampler, scale, noise, labels)
        grid = captioned_rows(grid, prompts) if prompts else grid
        pictures.append(titled(grid, f"guidance {scale:g}") if len(scales) > 1 else grid)
    path = save_png(
        side_by_side(pictures) if len(pictures) > 1 else pictures[0], run.sample_grid(name)
    )
    if cfg.denoise_strip:
        first_column = slice(None, None, cfg.num_sample_seeds)
        strip = denoising_strip(
            model,
            diffusion,
            autoencoder,
            cfg,
            sampler,
            noise[first_column],
            condition_rows(labels, first_column),
            scales[0],
        )
        save_png(strip, run.sample_grid(name, "-denoising"))
    atomic_write(run.sample_record(name), json.dumps(settings, indent=1))
    save_config(cfg, run.config_file("sample"))
    print(f"sample: wrote {path}", flush=True)
    others = [n for n in outputs_of(run.sample, ckpt_path.stem, ".json") if n != name]
    if others:
        print(f"sample: other grids of {ckpt_path.name}: {', '.join(others)}", flush=True)
    return path
