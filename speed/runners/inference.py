"""The `inference` phase: many samples across ranks, as PNGs and one `.npz` for the evaluator.

Image i's starting noise is seeded by (seed, i) and batch b's sampler noise by (seed, b); batches
are dealt round-robin to ranks, so the images do not depend on how many processes made them.
Batches whose PNGs are all on disk are skipped, so a killed run resumes where it stopped (PNGs
are written atomically: one on disk is whole); the partial last batch is always drawn again, as
its sampler noise depends on its size. Temporary files a killed run left are deleted. The
inference folder is locked for the run; `settings.json` beside the PNGs records what made them
(`speed.run.outputs`) and is removed again when a run fails before writing any. The `.npz`
records its provenance, and a run whose `.npz` already holds what it would make does nothing.

A super-resolution model (one with `conditions`, `speed.models.SuperResUNet`) upsamples the
held-out images of its data: image i is conditioned on held-out item i's low-res image, whose
reference, low-res input and bicubic up-sampling are written beside it (`reference/`,
`low_res/`, `bicubic/`, then `reference.npz` and `bicubic.npz`), and the PSNR / SSIM of the
samples and of bicubic up-sampling against the references are printed.

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
from speed.control.images import NPZ_CONTROL_KEY
from speed.data.degradation import bicubic_resize
from speed.diffusion.samplers.common import check_num_steps
from speed.generation import data_controls, generate, grid_prompts, sampler_from_config, scales_of
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
    build_dataset,
    build_diffusion,
    build_reference_dataset,
    build_sampling_model,
    build_text_encoder,
    sampling_control,
)
from speed.utils.atomic import atomic_path, atomic_write
from speed.utils.distributed import barrier, init_distributed
from speed.utils.images import save_png, to_uint8
from speed.utils.seeding import derived_seed

NOISE_STREAM, SAMPLER_STREAM = 0, 1
PROMPTS_FILE = "prompts.jsonl"  # text-to-image: each PNG's prompt, a captions file


class ReferenceControls:
    """A ControlNet's inference inputs from the data: image i is sampled under the control
    image of data image i mod len(data) (read without random flips), with its label."""

    def __init__(self, cfg: DictConfig, control, spec):
        self.control, self.dataset = control, build_reference_dataset(cfg)
        self.conditional = bool(spec.num_classes)

    def maps(self, indices: range) -> torch.Tensor:
        """Control maps [len(indices), C, H, W] in pixel space."""
        n = len(self.dataset)
        return data_controls(self.dataset, self.control, [i % n for i in indices])[0]

    def labels(self, num_samples: int) -> np.ndarray | None:
        """The data label of each image (None for an unconditional model)."""
        if not self.conditional:
            return None
        n = len(self.dataset)
        return np.asarray([int(self.dataset[i % n][1]) for i in range(num_samples)], np.int64)

    def all_maps(self, num_samples: int, batch: int) -> np.ndarray:
        """uint8 [num_samples, H, W, C]: every image's control map, for the `.npz`."""
        parts = range(0, num_samples, batch)
        return np.concatenate(
            [to_uint8(self.maps(range(i, min(num_samples, i + batch)))) for i in parts]
        )


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
    conditions: dict[str, torch.Tensor] | None = None,
    prompts: list[str] | None = None,
    text_encoder=None,
) -> torch.Tensor:
    """Decoded images [len(indices), C, H, W] of one inference batch: image i starts from the noise
    of (seed, i) with class labels[i] (or, with a text encoder, prompts[i]), and the sampler's own
    noise is seeded by (seed, batch_index), so any model put in `model`'s place sees exactly what
    the phase would give it. `conditions`: the batch's other model kwargs (a ControlNet's
    `control` images, a super-resolution model's `low_res`)."""
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
        conditions=conditions,
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

    control = sampling_control(cfg, ckpt_path)
    reference = ReferenceControls(cfg, control, spec) if control is not None else None
    pairs = _held_out_pairs(cfg, model, num_samples)
    labels = None if prompts is not None else sample_labels(cfg, spec.num_classes, num_samples)
    if reference is not None:
        labels = reference.labels(num_samples)
    elif pairs is not None and pairs.labels is not None:
        labels = pairs.labels[:num_samples].numpy()
    my_batches = range(dist.rank, math.ceil(num_samples / batch), dist.world_size)
    try:
        for b in tqdm(my_batches, desc="inference", disable=not dist.is_main):
            indices = range(b * batch, min(num_samples, (b + 1) * batch))
            paths = [png_dir / f"{i:06d}.png" for i in indices]
            if all(p.is_file() for p in paths):
                continue
            conditions = None
            if reference is not None:
                with torch.no_grad():
                    maps = autoencoder.encode(reference.maps(indices).to(device))
                conditions = {"control": maps}
            elif pairs is not None:
                conditions = {"low_res": _write_pairs(pairs, indices, png_dir).to(device)}
            images = draw_batch(
                cfg, model, diffusion, autoencoder, spec, indices, b, sampler=sampler,
                scale=scale, labels=labels, device=device, conditions=conditions,
                prompts=prompts, text_encoder=text_encoder,
            )  # fmt: skip
            for image, path in zip(to_uint8(images), paths):
                save_png(image, path)
    except BaseException:
        if dist.is_main and not any(png_dir.glob("*.png")):
            (png_dir / SETTINGS_FILE).unlink(missing_ok=True)  # nothing produced: no claim
        raise
    barrier()
    if dist.is_main:
        controls = None if reference is None else reference.all_maps(num_samples, batch)
        _write_npz(png_dir, npz_path, num_samples, labels, provenance, controls, prompts)
        print(f"inference: wrote {npz_path} ({num_samples} images)", flush=True)
        if pairs is not None:
            _report_pairs(png_dir, npz_path, num_samples, labels, provenance)
        others = [n for n in outputs_of(run.inference, ckpt_path.stem, ".npz") if n != name]
        if others:
            print(f"inference: other outputs of {ckpt_path.name}: {', '.join(others)}", flush=True)
    barrier()
    return npz_path


def _held_out_pairs(cfg: DictConfig, model, num_samples: int):
    """The held-out split of a super-resolution model's data (`SuperResolution`), whose
    low-res images image i is conditioned on; None for a model that needs no such input."""
    if not getattr(model, "conditions", ()):
        return None
    pairs = build_dataset(cfg, split="held_out")
    if num_samples > len(pairs):
        raise ConfigError(
            f"num_samples={num_samples}, but data.held_out holds {len(pairs)} images to upsample; "
            f"set num_samples={len(pairs)} or less (or hold out more: data.held_out)"
        )
    return pairs


def _write_pairs(pairs, indices: range, png_dir: Path) -> torch.Tensor:
    """Write the references, low-res inputs and bicubic up-samplings of images `indices` (in
    `reference/`, `low_res/`, `bicubic/` beside the samples); returns the low-res batch."""
    items = [pairs[i] for i in indices]
    references = torch.stack([x for x, _ in items])
    low = torch.stack([c["low_res"] for _, c in items])
    bicubic = bicubic_resize(low, references.shape[-1])
    for folder, batch in (("reference", references), ("low_res", low), ("bicubic", bicubic)):
        for image, i in zip(to_uint8(batch), indices):
            save_png(image, png_dir / folder / f"{i:06d}.png")
    return low


def _report_pairs(png_dir: Path, npz_path: Path, num_samples: int, labels, provenance) -> None:
    """Pack the references and the bicubic floor as `.npz` beside the samples and print the
    PSNR / SSIM of the samples and of bicubic up-sampling against the references."""
    from evaluations.super_res import format_table, paired_scores  # 2.5 s of import: only here

    for folder in ("reference", "bicubic"):
        _write_npz(png_dir / folder, png_dir / f"{folder}.npz", num_samples, labels, provenance)
    reference = np.load(png_dir / "reference.npz")["arr_0"]
    rows = {
        "model": paired_scores(reference, np.load(npz_path)["arr_0"]),
        "bicubic": paired_scores(reference, np.load(png_dir / "bicubic.npz")["arr_0"]),
    }
    print(f"inference: {num_samples} held-out pairs\n{format_table(rows)}", flush=True)
    print(
        f"inference: FID too: python -m evaluations.super_res {png_dir / 'reference.npz'} "
        f"{npz_path} --floor {png_dir / 'bicubic.npz'}",
        flush=True,
    )


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
    png_dir: Path,
    npz_path: Path,
    num_samples: int,
    labels,
    provenance,
    controls=None,
    prompts=None,
) -> None:
    """Pack the PNGs into the ADM evaluator's format: arr_0 uint8 [N, H, W, 3], arr_1 labels,
    and `provenance` (`speed.run.outputs`), which evaluators do not read; for a ControlNet also
    `control` (uint8 [N, H, W, C], image i's control image, `evaluations.control_fidelity`); a
    text-to-image run's prompts go in `prompts` (unicode [N])."""
    images = np.stack(
        [
            np.asarray(Image.open(png_dir / f"{i:06d}.png").convert("RGB"))
            for i in range(num_samples)
        ]
    )
    arrays = {"arr_0": images, PROVENANCE_KEY: provenance_entry(provenance)}
    if labels is not None:
        arrays["arr_1"] = labels
    if controls is not None:
        arrays[NPZ_CONTROL_KEY] = controls
    if prompts is not None:
        arrays["prompts"] = np.asarray(prompts, dtype=np.str_)
    with atomic_path(npz_path) as tmp, open(tmp, "wb") as f:  # a file: numpy adds no ".npz"
        np.savez(f, **arrays)
