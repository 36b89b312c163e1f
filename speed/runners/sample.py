"""The `sample` phase: image grids to look at (one row per class, or per prompt with its caption
written beside it, one column per seed), each named by its settings beside a JSON record of them
(`speed.run.outputs.output_name`).

Side-by-side grids for several guidance scales, and a "denoising strip" of the x0 predictions
along the sampling trajectory. A super-resolution model (`speed.models.SuperResUNet`) upsamples
`low_res` (an image or a folder; else held-out data) instead: each result as a PNG, and a grid
low-res | bicubic | sample | reference. The grids themselves (shared with the train phase's periodic
grids) and the strip are drawn by `speed.generation`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from speed.config import save_config
from speed.data.degradation import bicubic_resize
from speed.data.super_res import read_low_res
from speed.generation import (
    condition_rows,
    control_grid_inputs,
    denoising_strip,
    enlarge_factor,
    generate_from_config,
    grid_inputs,
    grid_prompts,
    grid_rows,
    render_grid,
    sampler_from_config,
    scales_of,
)
from speed.run import RunDir, locked
from speed.run.outputs import grid_settings, outputs_of
from speed.runners.build import (
    build_autoencoder,
    build_dataset,
    build_degradation,
    build_diffusion,
    build_reference_dataset,
    build_sampling_model,
    build_text_encoder,
    sampling_control,
)
from speed.utils.atomic import atomic_write
from speed.utils.distributed import init_distributed
from speed.utils.images import make_grid, save_png, to_uint8, upscale


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
    prompts = grid_prompts(cfg) if text_encoder.reads_text else None
    run = RunDir.of(cfg)
    if getattr(model, "conditions", ()):
        return _upsample(cfg, run, model, diffusion, autoencoder, spec, sampler, ckpt_path)
    control = sampling_control(cfg, ckpt_path)
    if control is not None:  # a ControlNet: one row per control image, shown first
        dataset = None if control.images else build_reference_dataset(cfg)
        noise, labels, grid_control = control_grid_inputs(
            cfg, spec, control, autoencoder, dataset, device
        )
    else:
        noise, labels = grid_inputs(cfg, spec, device, text_encoder)
        grid_control = None
    settings = grid_settings(cfg, ckpt_path)
    name = run.sample_name(ckpt_path.stem, settings, cfg.overwrite)
    scales = scales_of(cfg)
    pictures = []
    for scale in scales:
        grid = render_grid(
            model, diffusion, autoencoder, cfg, sampler, scale, noise, labels, control=grid_control
        )
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
            control=None if grid_control is None else grid_control.per_image[first_column],
        )
        save_png(strip, run.sample_grid(name, "-denoising"))
    atomic_write(run.sample_record(name), json.dumps(settings, indent=1))
    save_config(cfg, run.config_file("sample"))
    print(f"sample: wrote {path}", flush=True)
    others = [n for n in outputs_of(run.sample, ckpt_path.stem, ".json") if n != name]
    if others:
        print(f"sample: other grids of {ckpt_path.name}: {', '.join(others)}", flush=True)
    return path


def _low_res_inputs(cfg: DictConfig, spec):
    """(names, low-res [N, C, l, l], references [N, C, H, W] or None, labels [N] or None): the
    images of `low_res`, else the first `num_sample_seeds` held-out images of the data."""
    if cfg.low_res is None:
        pairs = build_dataset(cfg, split="held_out")
        items = [pairs[i] for i in range(min(cfg.num_sample_seeds, len(pairs)))]
        low = torch.stack([c["low_res"] for _, c in items])
        labels = pairs.labels[: len(items)] if pairs.labels is not None else None
        names = [f"held_out_{i:06d}.png" for i in range(len(items))]
        return names, low, torch.stack([x for x, _ in items]), labels
    degradation = build_degradation(cfg)
    names, low, references = read_low_res(cfg.low_res, spec.channels, spec.side, degradation)
    rows = grid_rows(cfg, spec.num_classes)  # a class-conditional upsampler: sample_classes
    labels = torch.tensor([rows[i % len(rows)] for i in range(len(low))]) if rows else None
    return names, low, references, labels


def _upsample(cfg, run, model, diffusion, autoencoder, spec, sampler, ckpt_path) -> Path:
    """Super-resolution: upsample each input to `<sample>/<name>/<input>.png` and draw the grid
    `<name>.png`, one row per input: low-res (enlarged) | bicubic | sample | reference (when
    known). Returns the grid's path."""
    device = next(model.parameters()).device
    names, low, references, labels = _low_res_inputs(cfg, spec)
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn((len(low), spec.channels, spec.side, spec.side), generator=generator)
    samples = []
    for start in range(0, len(low), cfg.per_proc_batch_size):
        part = slice(start, start + cfg.per_proc_batch_size)
        images = generate_from_config(
            model, diffusion, autoencoder, cfg, sampler, noise[part].to(device),
            None if labels is None else labels[part].to(device), scales_of(cfg)[0],
            conditions={"low_res": low[part].to(device)},
        )  # fmt: skip
        samples.append(images.cpu())
    settings = {**grid_settings(cfg, ckpt_path), "low_res": cfg.low_res}
    name = run.sample_name(ckpt_path.stem, settings, cfg.overwrite)
    for image, input_name in zip(to_uint8(torch.cat(samples)), names):
        save_png(image, run.sample / name / Path(input_name).with_suffix(".png"))
    columns = [
        F.interpolate(low, size=spec.side, mode="nearest"),
        bicubic_resize(low, spec.side),
        torch.cat(samples),
    ] + ([references] if references is not None else [])
    tiles = to_uint8(torch.stack(columns, dim=1).flatten(0, 1))
    grid = upscale(make_grid(tiles, nrow=len(columns)), enlarge_factor(spec.side))
    path = save_png(grid, run.sample_grid(name))
    atomic_write(run.sample_record(name), json.dumps(settings, indent=1))
    save_config(cfg, run.config_file("sample"))
    heading = "low-res | bicubic | sample" + (" | reference" if references is not None else "")
    print(f"sample: wrote {path} ({heading}) and {len(low)} images in {path.with_suffix('')}")
    return path
