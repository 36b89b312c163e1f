"""The `inference` phase: many samples across ranks, as PNGs and one `.npz` for the evaluator.

Image i's starting noise is seeded by (seed, i) and batch b's sampler noise by (seed, b); batches
are dealt round-robin to ranks, so the images do not depend on how many processes made them.
Batches whose PNGs are all on disk are skipped, so a killed run resumes where it stopped (PNGs
are written atomically: one on disk is whole); the partial last batch is always drawn again, as
its sampler noise depends on its size. Temporary files a killed run left are deleted. The
inference folder is locked for the run; `settings.json` beside the PNGs records what made them
(`speed.run.outputs`) and is removed again when a run fails before writing any. The `.npz`
records its provenance, and a run whose `.npz` already holds what it would make does nothing.
A text-to-image run gives image i prompt i mod P (`prompts` / `prompts_file`) and stores them
beside the PNGs (`prompts.jsonl`, the captions-file format of `speed.data.captions`) and in the
`.npz` (`prompts`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from speed.config import ConfigError, save_config
from speed.diffusion.samplers.common import check_num_steps
from speed.generation import generate, grid_prompts, sampler_from_config, scales_of
from speed.run import RunDir, locked, sampling_checkpoint
from speed.run.outputs import (
    PROVENANCE_KEY,
    SETTINGS_FILE,
    differences,
    image_settings,
    npz_provenance,
    outputs_of,
    provenance_entry,
    read_provenance,
    read_settings,
    remove_partial_files,
    same_output,
    settings_in_npz,
)
from speed.runners.build import (
    build_autoencoder,
    build_diffusion,
    build_sampling_model,
    build_text_encoder,
)
from speed.utils.atomic import atomic_path, atomic_write
from speed.utils.distributed import barrier, init_distributed
from speed.utils.images import save_png, to_uint8
from speed.utils.seeding import derived_seed

NOISE_STREAM, SAMPLER_STREAM = 0, 1
PROMPTS_FILE = "prompts.jsonl"  # text-to-image: each PNG's prompt, a captions file


def image_noise(channels: int, side: int, seed: int, indices: range) -> torch.Tensor:
    """Starting noise [len(indices), C, side, side]; image i's noise depends on (seed, i) only."""
    return torch.stack(
        [
            torch.randn(
                channels,
                side,
                side,
                generator=torch.Generator().manual_seed(derived_seed(seed, NOISE_STREAM, i)),
            )
            for i in indices
        ]
    )


def sample_labels(cfg: DictConfig, num_classes: int, num_samples: int) -> np.ndarray | None:
    """Balanced labels: image i gets class i mod K over `sample_classes` (default: all K)."""
    if num_classes == 0:
        return None
    classes = np.asarray(cfg.sample_classes or range(num_classes), dtype=np.int64)
    return classes[np.arange(num_samples) % len(classes)]


def sample_prompts(cfg: DictConfig, num_samples: int) -> list[str]:
    """Image i's prompt: prompt i mod P of `prompts` / `prompts_file`."""
    prompts = grid_prompts(cfg)
    return [prompts[i % len(prompts)] for i in range(num_samples)]


def draw_batch(
    cfg: DictConfig,
    model,
    diffusion,
    autoencoder,
    spec,
    indices: range,
    batch_index: int,
    *,
    sampler,
    scale: float,
    labels: np.ndarray | None,
    device: torch.device,
    prompts: list[str] | None = None,
    text_encoder=None,
) -> torch.Tensor:
    """Decoded images [len(indices), C, H, W] of one inference batch: image i starts from the noise
    of (seed, i) with class labels[i] (or, with a text encoder, prompts[i]), and the sampler's own
    noise is seeded by (seed, batch_index), so any model put in `model`'s place sees exactly what
    the phase would give it."""
    noise = image_noise(spec.channels, spec.side, cfg.seed, indices).to(device)
    if prompts is not None:
        condition = text_encoder.condition(prompts[indices.start : indices.stop], device)
    elif labels is not None:
        condition = torch.from_numpy(labels[indices.start : indices.stop]).to(device)
    else:
        condition = None
    return generate(
        model,
        diffusion,
        autoencoder,
        noise,
        condition,
        sampler=sampler,
        num_steps=cfg.num_steps,
        guidance_scale=scale,
        precision=cfg.precision,
        generator=torch.Generator(device).manual_seed(
            derived_seed(cfg.seed, SAMPLER_STREAM, batch_index)
        ),
    )


def inference(cfg: DictConfig) -> Path:
    """Generate `num_samples` images; returns the path of the written `.npz`."""
    dist = init_distributed()
    with locked(RunDir.of(cfg).inference, enabled=dist.is_main):
        return _inference(cfg, dist)


def _inference(cfg: DictConfig, dist) -> Path:
    device = dist.device
    scale = _one_guidance_scale(cfg)
    sampler = sampler_from_config(cfg)
    run, ckpt_path = RunDir.of(cfg), sampling_checkpoint(cfg)
    name = run.inference_name(ckpt_path.stem, image_settings(cfg, ckpt_path), cfg.overwrite)
    png_dir, npz_path = run.inference_images(name), run.inference_npz(name)
    provenance = npz_provenance(cfg, ckpt_path)
    if same_output(read_provenance(npz_path), provenance):
        if dist.is_main:
            print(
                f"inference: {npz_path} already holds these {cfg.num_samples} images (same "
                "checkpoint and settings); nothing to do",
                flush=True,
            )
        return npz_path
    autoencoder = build_autoencoder(cfg).to(device)
    text_encoder = build_text_encoder(cfg).to(device)
    model, ckpt_path, spec = build_sampling_model(cfg, autoencoder, device, text_encoder)
    diffusion = build_diffusion(cfg)
    num_samples, batch = cfg.num_samples, cfg.per_proc_batch_size
    prompts = sample_prompts(cfg, num_samples) if text_encoder.reads_text else None
    try:  # every setting is checked before earlier images may be deleted (overwrite=true)
        check_num_steps(diffusion, cfg.num_steps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if dist.is_main:
        if name != ckpt_path.stem:
            _say_keyed(run, ckpt_path, name, cfg)
        _claim_png_dir(png_dir, cfg, ckpt_path)
        _clear_partial_batch(png_dir, num_samples, batch)
        save_config(cfg, run.config_file("inference"))  # after the claim: a refusal keeps it
        if prompts is not None:  # a captions file (JSON Lines) of the images
            lines = [
                json.dumps({"file": f"{i:06d}.png", "caption": text})
                for i, text in enumerate(prompts)
            ]
            atomic_write(png_dir / PROMPTS_FILE, "\n".join(lines) + "\n")
    barrier()

    labels = None if prompts is not None else sample_labels(cfg, spec.num_classes, num_samples)
    my_batches = range(dist.rank, math.ceil(num_samples / batch), dist.world_size)
    try:
        for b in tqdm(my_batches, desc="inference", disable=not dist.is_main):
            indices = range(b * batch, min(num_samples, (b + 1) * batch))
            paths = [png_dir / f"{i:06d}.png" for i in indices]
            if all(p.is_file() for p in paths):
                continue
            images = draw_batch(
                cfg, model, diffusion, autoencoder, spec, indices, b, sampler=sampler,
                scale=scale, labels=labels, device=device, prompts=prompts,
                text_encoder=text_encoder,
            )  # fmt: skip
            for image, path in zip(to_uint8(images), paths):
                save_png(image, path)
    except BaseException:
        if dist.is_main and not any(png_dir.glob("*.png")):
            (png_dir / SETTINGS_FILE).unlink(missing_ok=True)  # nothing produced: no claim
        raise
    barrier()
    if dist.is_main:
        _write_npz(png_dir, npz_path, num_samples, labels, provenance, prompts)
        print(f"inference: wrote {npz_path} ({num_samples} images)", flush=True)
        others = [n for n in outputs_of(run.inference, ckpt_path.stem, ".npz") if n != name]
        if others:
            print(f"inference: other outputs of {ckpt_path.name}: {', '.join(others)}", flush=True)
    barrier()
    return npz_path


def _one_guidance_scale(cfg: DictConfig) -> float:
    """The guidance scale of an inference run; a list (the sample phase's side-by-side grids) is
    refused here, before anything is written, with the commands that run one inference per
    value (each writes its own output beside the others, `RunDir.inference_name`)."""
    scales = scales_of(cfg)
    if len(scales) != 1:
        each = " and ".join(f"guidance_scale={s:g}" for s in scales)
        raise ConfigError(
            f"guidance_scale: inference takes one value, got {list(scales)}; run this command "
            f"once with {each} in its place (each writes its own output in "
            f"{RunDir.of(cfg).inference}), or use -p sample for side-by-side grids"
        )
    return scales[0]


def _say_keyed(run: RunDir, ckpt_path: Path, name: str, cfg: DictConfig) -> None:
    """One line: the checkpoint's plain output holds other settings, so this one has its name."""
    plain = run.inference_images(ckpt_path.stem)
    held = read_settings(plain) or settings_in_npz(run.inference_npz(ckpt_path.stem))
    changed = "; ".join(differences(held, image_settings(cfg, ckpt_path)))
    print(
        f"inference: {plain.name} holds other settings of {ckpt_path.name}, so these go to "
        f"{name} ({changed}); overwrite=true would replace {plain.name} instead",
        flush=True,
    )


def _claim_png_dir(png_dir: Path, cfg: DictConfig, ckpt_path: Path) -> None:
    """Record `image_settings` beside the PNGs, after deleting the temporary files a killed run
    left there and in the inference folder. PNGs made with other settings or from another
    checkpoint are never reused: with overwrite=true they are deleted (`inference_name` gives
    other settings a folder of their own otherwise)."""
    for folder in (png_dir.parent, png_dir):
        stale = remove_partial_files(folder)
        if stale:
            print(f"inference: removed {len(stale)} partial file(s) in {folder}", flush=True)
    settings = image_settings(cfg, ckpt_path)
    record = read_settings(png_dir)
    if record is not None and record != settings:
        if not cfg.overwrite:
            raise ConfigError(
                f"{png_dir} holds images sampled with other settings "
                f"({'; '.join(differences(record, settings))}); pass overwrite=true to replace "
                "them"
            )
        print(f"inference: overwrite=true: deleting the images in {png_dir}", flush=True)
        for old in png_dir.glob("*.png"):
            old.unlink()
    atomic_write(png_dir / SETTINGS_FILE, json.dumps(settings, indent=1))


def _clear_partial_batch(png_dir: Path, num_samples: int, batch: int) -> None:
    """Delete the PNGs of the batch holding image `num_samples - 1` when that batch is partial.
    The sampler's noise is drawn per batch, so an image depends on the size of the batch that
    made it: the partial last batch is drawn again at its size (its PNGs from a run with another
    `num_samples` are not reused), every full batch's PNGs are reused as they are."""
    if num_samples % batch == 0:
        return
    last = num_samples // batch
    for i in range(last * batch, (last + 1) * batch):
        (png_dir / f"{i:06d}.png").unlink(missing_ok=True)


def _write_npz(
    png_dir: Path, npz_path: Path, num_samples: int, labels, provenance, prompts=None
) -> None:
    """Pack the PNGs into the ADM evaluator's format: arr_0 uint8 [N, H, W, 3], arr_1 labels,
    and `provenance` (`speed.run.outputs`), which evaluators do not read; a text-to-image run's
    prompts go in `prompts` (unicode [N])."""
    images = np.stack(
        [
            np.asarray(Image.open(png_dir / f"{i:06d}.png").convert("RGB"))
            for i in range(num_samples)
        ]
    )
    arrays = {"arr_0": images, PROVENANCE_KEY: provenance_entry(provenance)}
    if labels is not None:
        arrays["arr_1"] = labels
    if prompts is not None:
        arrays["prompts"] = np.asarray(prompts, dtype=np.str_)
    with atomic_path(npz_path) as tmp, open(tmp, "wb") as f:  # a file: numpy adds no ".npz"
        np.savez(f, **arrays)
