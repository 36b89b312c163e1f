"""One trained run loaded for serving: its model (once per worker, on the chosen backend), the
validation of a request into a `Job`, and the sampling of several jobs as one batch.

A batch holds jobs that share a `Job.key` (sampler, steps, guidance scale, eta). Every image has
its own generator, seeded by its request's seed: its starting noise and every noise draw of a
stochastic sampler come from it (`speed.utils.seeding.randn_rows`), so an image does not depend
on the other images of its batch, and a request batched with others gets, in float32 on the
CPU, the pixels it gets alone (tests/serve/test_engine.py checks it bit for bit). A
text-to-image model takes a prompt per image in place of a class: the run's text encoder
(`speed.text`) encodes a batch's prompts, which condition the model as labels do (with the onnx
backend too: the encoder stays in PyTorch and its output feeds the graph's y and mask).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from speed.config_schema import out_of_range
from speed.deploy.conditions import caption_inputs
from speed.diffusion.samplers.common import check_num_steps
from speed.errors import ConfigError, MissingFileError
from speed.generation import family_samplers, generate, sampler_from_config, scales_of
from speed.run import RunDir, list_checkpoints
from speed.runners.build import (
    build_autoencoder,
    build_diffusion,
    build_sampling_model,
    build_text_encoder,
    dataset_class_names,
)
from speed.serve.backends import BACKENDS, check_backend, onnx_model
from speed.serve.classes import ClassNames
from speed.serve.fixed_rows import FixedRowsDecoder, FixedRowsDenoiser, FixedRowsEncoder
from speed.text.prompts import request_prompt
from speed.utils.images import to_uint8
from speed.utils.seeding import randn_rows

# Samplers whose steps depend on the whole batch (an adaptive step size chosen from the error of
# every sample together): their requests are sampled alone, never batched.
UNBATCHED_SAMPLERS = ("dopri5",)


@dataclass(frozen=True)
class Job:
    """One validated request: image i has class labels[i] (None: unconditional or a text model)
    or, for a text-to-image model, prompts[i], and seed seeds[i]; the rest is shared by its
    images."""

    labels: tuple[int, ...] | None
    seeds: tuple[int, ...]
    sampler: str
    num_steps: int
    guidance_scale: float
    eta: float
    prompts: tuple[str, ...] | None = None

    @property
    def count(self) -> int:
        return len(self.seeds)

    @property
    def key(self) -> tuple:
        """Jobs of equal keys are sampled as one batch (an unbatched sampler's key is unique)."""
        alone = (id(self),) if self.sampler in UNBATCHED_SAMPLERS else ()
        return (self.sampler, self.num_steps, self.guidance_scale, self.eta, *alone)


class Engine:
    """The run in `run_dir` (a training run's experiment_dir) ready to sample on `device` with
    `backend` (`speed.serve.backends.BACKENDS`), from `checkpoint` (a stem in
    train/checkpoints; default the newest). `max_steps` caps a request's steps below the
    diffusion's own, `max_prompt_chars` a prompt's length. The denoiser, decoder and text
    encoder run on batches of exactly `rows` rows (`speed.serve.fixed_rows`). A folder without
    checkpoints is a MissingFileError, a bad choice a ConfigError, each one line."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        device: str = "cpu",
        backend: str = "fp32",
        checkpoint: str | None = None,
        trust: bool = False,
        max_steps: int = 1000,
        rows: int = 8,
        max_prompt_chars: int = 500,
    ):
        run = RunDir(Path(run_dir))
        checkpoints = {p.stem: p for p in list_checkpoints(run.checkpoints)}
        if not checkpoints:
            raise MissingFileError(
                f"{run.root} holds no checkpoints (looked in {run.checkpoints}); pass the "
                "experiment_dir of a trained run (python main.py -c CONFIG -p train)"
            )
        stem = checkpoint or list(checkpoints)[-1]
        if stem not in checkpoints:
            raise ConfigError(f"--checkpoint: no {stem!r} in {run.checkpoints}")
        self.device = torch.device(device)
        self.backend = check_backend(backend, self.device)
        cfg = run.saved_config("train")
        cfg.experiment_dir, cfg.ckpt_path = str(run.root), str(checkpoints[stem])
        cfg.trust_checkpoint, cfg.compile = trust, backend == "compile"
        self.cfg, self.checkpoint = cfg, stem
        self.autoencoder = build_autoencoder(cfg).to(self.device)
        self.diffusion = build_diffusion(cfg)
        text_encoder = build_text_encoder(cfg).to(self.device)
        self.reads_text = text_encoder.reads_text
        model, _, self.spec = build_sampling_model(
            cfg, self.autoencoder, self.device, text_encoder, without_conditions="the service"
        )
        if backend == "onnx":
            float_time = self.diffusion.family == "interpolant"
            extras = ()
            if self.reads_text:  # a caption's y and mask, should the graph be exported here
                node = OmegaConf.to_container(cfg.text_encoder, resolve=True)
                extras = caption_inputs(text_encoder, node)
            model = onnx_model(model, self.spec, float_time, run.onnx_file(stem), extras=extras)
        self.model, self.precision = model, BACKENDS[backend]
        self.denoiser = FixedRowsDenoiser(model, rows)
        self.decoder = FixedRowsDecoder(self.autoencoder, rows)
        self.encoder = FixedRowsEncoder(text_encoder, rows) if self.reads_text else None
        self.max_steps = min(max_steps, int(self.diffusion.original_num_steps))
        self.max_prompt_chars = max_prompt_chars
        k = self.spec.num_classes
        names = (dataset_class_names(cfg) or [str(c) for c in range(k)])[:k]
        self.classes = ClassNames(names, "GET /readyz")
        self.guided = bool(getattr(model, "has_null_label", False))

    def options(self) -> dict:
        """What the run offers: classes (or prompts, for a text-to-image model), samplers,
        bounds and the run's sampling defaults."""
        return {
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "classes": self.classes.names,
            "prompts": self.reads_text,
            "max_prompt_chars": self.max_prompt_chars,
            "samplers": sorted(family_samplers(self.diffusion.family)),
            "max_steps": self.max_steps,
            "guidance": self.guided,
            "defaults": {
                "sampler": self.cfg.sampler,
                "num_steps": int(self.cfg.num_steps),
                "guidance_scale": scales_of(self.cfg)[0],
                "eta": float(self.cfg.eta),
            },
        }

    def job(
        self,
        classes=None,
        count: int = 1,
        seeds: int | list[int] = 0,
        sampler: str | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        prompt: str | list[str] | None = None,
    ) -> Job:
        """A request's settings checked into a `Job` (ConfigError, one line naming the field).

        classes: one class (index or name) for every image, or a list of `count` of them; None
        for an unconditional or a text-to-image model. prompt: a text-to-image model's prompt
        for every image, or a list of `count` of them (None for any other model). seeds: a list
        of `count` seeds, or one, image i using seed + i. sampler, num_steps, guidance_scale,
        eta: default the run's own."""
        defaults = self.options()["defaults"]
        sampler = defaults["sampler"] if sampler is None else sampler
        num_steps = defaults["num_steps"] if num_steps is None else num_steps
        scale = defaults["guidance_scale"] if guidance_scale is None else float(guidance_scale)
        eta = defaults["eta"] if eta is None else float(eta)
        if isinstance(seeds, int):
            seeds = [seeds + i for i in range(count)]
        if len(seeds) != count:
            raise ConfigError(f"seeds: {len(seeds)} seeds for count={count} images; give one each")
        for seed in seeds:
            allowed = out_of_range("seed", seed)
            if allowed is not None:
                raise ConfigError(f"seeds: a seed {allowed}, got {seed}")
        try:
            check_num_steps(self.diffusion, num_steps)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if num_steps > self.max_steps:
            raise ConfigError(f"num_steps must lie in 1..{self.max_steps} on this server")
        self.sampler(sampler, eta)  # an unknown sampler or a bad eta fails here
        prompts = self._prompts(prompt, classes, count)
        labels = None if prompts is not None else self._labels(classes, count)
        conditioned = labels is not None or prompts is not None
        if scale != 1.0 and not (conditioned and self.guided):
            raise ConfigError(
                "guidance_scale must be 1: this model has no null label or caption (trained "
                "without class or caption dropout), so no classifier-free guidance"
            )
        return Job(labels, tuple(seeds), sampler, int(num_steps), scale, eta, prompts)

    def _prompts(self, prompt, classes, count: int) -> tuple[str, ...] | None:
        """A text-to-image model's prompts, one per image; None for any other model."""
        if not self.reads_text:
            if prompt is not None:
                kind = "class-conditional" if self.classes.names else "unconditional"
                send = "send classes" if self.classes.names else "leave it out"
                raise ConfigError(f"prompt: this run's model is {kind}, it reads no text; {send}")
            return None
        if classes is not None:
            raise ConfigError(
                "classes: this run's model is text-to-image and has no classes; send prompt"
            )
        if prompt is None:
            raise ConfigError("prompt is required: this run's model is text-to-image")
        if not isinstance(prompt, list):
            prompt = [prompt] * count
        if len(prompt) != count:
            raise ConfigError(f"prompt: {len(prompt)} prompts for count={count} images")
        return tuple(request_prompt(p, self.max_prompt_chars) for p in prompt)

    def _labels(self, classes, count: int) -> tuple[int, ...] | None:
        if not self.classes.names:
            if classes is not None:
                raise ConfigError("classes: this run's model is unconditional; leave it out")
            return None
        if classes is None:
            raise ConfigError("classes is required: this run's model is class-conditional")
        if not isinstance(classes, list):
            classes = [classes] * count
        if len(classes) != count:
            raise ConfigError(f"classes: {len(classes)} classes for count={count} images")
        return tuple(self.classes.lookup(c) for c in classes)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one engine per process, kept for its life)
    def sampler(self, name: str, eta: float):
        """The sampler `name` with the run's options (eta, clip_denoised, sampler_options)."""
        values = {"sampler": name, "eta": eta}
        if name != self.cfg.sampler:
            values["sampler_options"] = {}  # the run's options belong to its own sampler
        return sampler_from_config(OmegaConf.merge(self.cfg, values))

    def sample(self, jobs: list[Job]) -> list[np.ndarray]:
        """Sample `jobs` (of one `key`) as one batch; each job's images, uint8 [count, H, W, C]."""
        tiles = to_uint8(self.images(jobs))
        return np.split(tiles, np.cumsum([job.count for job in jobs])[:-1])

    @torch.no_grad()
    def images(self, jobs: list[Job]) -> torch.Tensor:
        """The decoded images [N, C, H, W] (floats in about [-1, 1]) of `jobs`, of one `key`,
        sampled as one batch, the jobs' images in order."""
        first = jobs[0]
        if any(job.key != first.key for job in jobs):
            raise ValueError("a batch holds jobs of one key (sampler, steps, guidance, eta)")
        seeds = [s for job in jobs for s in job.seeds]
        generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]
        shape = (len(seeds), self.spec.channels, self.spec.side, self.spec.side)
        noise = randn_rows(shape, generators, device=self.device)
        labels = None
        if first.prompts is not None:
            captions = [p for job in jobs for p in job.prompts]
            labels = self.encoder.condition(captions, self.device)
        elif first.labels is not None:
            labels = torch.tensor([c for job in jobs for c in job.labels], device=self.device)
        return generate(
            self.denoiser,
            self.diffusion,
            self.decoder,
            noise,
            labels,
            sampler=self.sampler(first.sampler, first.eta),
            num_steps=first.num_steps,
            guidance_scale=first.guidance_scale,
            generator=generators,
            precision=self.precision,
        )
