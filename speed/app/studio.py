"""A trained run as the page sees it: its checkpoints, the choices it offers, and one generation
(a grid and a denoising strip, drawn by `speed.generation` exactly as the `sample` phase draws
them) for the settings of a request. A grid's rows are classes, or for a text-to-image model
prompts (written to the left of their rows, as the `sample` phase writes them)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from speed.app.limits import Limits
from speed.config_schema import out_of_range
from speed.diffusion.samplers.common import check_num_steps
from speed.errors import ConfigError, MissingFileError
from speed.generation import (
    condition_rows,
    denoising_strip,
    enlarge_factor,
    family_samplers,
    grid_inputs,
    grid_rows,
    render_grid,
    sampler_from_config,
    scales_of,
)
from speed.run import RunDir, list_checkpoints
from speed.runners.build import (
    build_autoencoder,
    build_diffusion,
    build_sampling_model,
    build_text_encoder,
    dataset_class_names,
)
from speed.runners.sample import captioned_rows
from speed.serve.classes import ClassNames
from speed.serve.client import ServeClient
from speed.text.prompts import load_prompts, request_prompt
from speed.utils.images import make_grid, png_bytes, upscale

# request field -> (config key, type)
FIELDS = {
    "checkpoint": ("ckpt_path", str),
    "classes": ("sample_classes", list),
    "prompts": ("prompts", list),
    "guidance_scale": ("guidance_scale", float),
    "sampler": ("sampler", str),
    "num_steps": ("num_steps", int),
    "eta": ("eta", float),
    "seed": ("seed", int),
    "seeds": ("num_sample_seeds", int),
}
KIND_NAMES = {str: "a string", float: "a number", int: "an integer"}


class RunStudio:
    """The run in `run_dir` (its `train/config.yaml` and checkpoints), ready to sample.

    A folder without checkpoints is a MissingFileError (one line). The newest checkpoint is
    loaded at once, so a run that cannot be sampled fails here, not on the first click.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        device: str = "cpu",
        trust: bool = False,
        limits: Limits | None = None,
        service: ServeClient | None = None,
    ):
        self.run, self.limits = RunDir(Path(run_dir)), limits or Limits()
        self.service = service  # draws the grid's images when given (`_service_grid`)
        self.checkpoints = {p.stem: p for p in list_checkpoints(self.run.checkpoints)}
        if not self.checkpoints:
            raise MissingFileError(
                f"{self.run.root} holds no checkpoints (looked in {self.run.checkpoints}); "
                "pass the experiment_dir of a trained run (python main.py -c CONFIG -p train)"
            )
        self.cfg = self.run.saved_config("train")
        self.cfg.experiment_dir = str(self.run.root)
        self.cfg.trust_checkpoint = trust
        self.device = torch.device(device)
        self.autoencoder = build_autoencoder(self.cfg).to(self.device)
        self.diffusion = build_diffusion(self.cfg)
        self.text_encoder = build_text_encoder(self.cfg).to(self.device)
        self.reads_text = self.text_encoder.reads_text
        self._loaded: tuple[str, torch.nn.Module, object] | None = None
        _, _, self.spec = self._model(list(self.checkpoints)[-1])
        k = self.spec.num_classes
        self.class_names = (dataset_class_names(self.cfg) or [str(c) for c in range(k)])[:k]
        self.classes = ClassNames(self.class_names, "GET /api/options")

    def _model(self, stem: str):
        """(stem, model, spec) of checkpoint `stem`; the last one used stays loaded."""
        if self._loaded is None or self._loaded[0] != stem:
            cfg = OmegaConf.merge(self.cfg, {"ckpt_path": str(self.checkpoints[stem])})
            model, _, spec = build_sampling_model(
                cfg, self.autoencoder, self.device, self.text_encoder, without_conditions="the page"
            )
            self._loaded = (stem, model, spec)
        return self._loaded

    def options(self) -> dict:
        """What the page offers, with the run's settings as defaults."""
        k = self.spec.num_classes
        max_steps = min(self.limits.max_steps, int(self.diffusion.original_num_steps))
        return {
            "run": str(self.run.root),
            "checkpoints": list(self.checkpoints),
            "classes": self.class_names,
            "prompts": self.reads_text,
            "max_prompt_chars": self.limits.max_prompt_chars,
            "samplers": sorted(family_samplers(self.diffusion.family)),
            "max_steps": max_steps,
            "max_seeds": self.limits.max_seeds,
            "max_images": self.limits.max_images,
            "defaults": {
                "checkpoint": list(self.checkpoints)[-1],
                "classes": list(self.cfg.sample_classes or range(min(k, 10))),
                "prompts": self._run_prompts(self.cfg),
                "guidance_scale": scales_of(self.cfg)[0],
                "sampler": self.cfg.sampler,
                "num_steps": int(self.cfg.num_steps),
                "eta": float(self.cfg.eta),
                "seed": int(self.cfg.seed),
                "seeds": int(self.cfg.num_sample_seeds),
            },
        }

    def prepare(self, request: dict) -> tuple[DictConfig, Callable]:
        """(the run's config with a request's settings, the sampler they choose); fields of
        FIELDS, others keep the run's values. A bad value, or a request over the server's
        `limits`, is a ConfigError naming the field, raised before any sampling."""
        values = {}
        lists = {"classes": self._classes, "prompts": self._prompts}
        for field, value in request.items():
            if field not in FIELDS:
                raise ConfigError(f"unknown setting {field!r}; known: {', '.join(FIELDS)}")
            key, kind = FIELDS[field]
            values[key] = lists[field](value) if kind is list else _parse(field, value, kind)
        if "prompts" in values:
            values["prompts_file"] = None  # a run's prompts_file would win over them
        stem = values.get("ckpt_path", list(self.checkpoints)[-1])  # default: the newest
        if stem not in self.checkpoints:
            raise ConfigError(f"no checkpoint {stem!r} in {self.run.checkpoints}")
        values["ckpt_path"] = str(self.checkpoints[stem])
        if "sampler" in values and values["sampler"] != self.cfg.sampler:
            values["sampler_options"] = {}  # the run's options belong to its own sampler
        cfg = OmegaConf.merge(self.cfg, values)
        self._check_limits(cfg)
        for field, value in request.items():  # the config's ranges (seed, eta, guidance_scale)
            allowed = out_of_range(FIELDS[field][0], values[FIELDS[field][0]])
            if allowed is not None:
                raise ConfigError(f"{field} {allowed}, got {value!r}")
        return cfg, sampler_from_config(cfg)

    def _check_limits(self, cfg: DictConfig) -> None:
        """The request's steps, seeds and images within the diffusion's and the server's bounds."""
        limits = self.limits
        try:
            check_num_steps(self.diffusion, cfg.num_steps)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if cfg.num_steps > limits.max_steps:
            raise ConfigError(
                f"num_steps must lie in 1..{limits.max_steps} on this server (--max-steps)"
            )
        if not 1 <= cfg.num_sample_seeds <= limits.max_seeds:
            raise ConfigError(f"seeds must lie in 1..{limits.max_seeds} (--max-seeds)")
        rows = self._rows(cfg)
        images = len(rows) * cfg.num_sample_seeds
        kind = "prompts" if self.reads_text else "classes"
        if images > limits.max_images:
            raise ConfigError(
                f"this request draws {images} images ({len(rows)} {kind} x "
                f"{cfg.num_sample_seeds} seeds); this server draws at most {limits.max_images} "
                f"per request (--max-images): ask for fewer {kind} or seeds"
            )

    def _rows(self, cfg: DictConfig) -> list:
        """The grid's rows: its prompts (a text-to-image model), else its classes (in range;
        one row of None for an unconditional model)."""
        if not self.reads_text:
            return grid_rows(cfg, self.spec.num_classes) or [None]
        prompts = self._run_prompts(cfg)
        if not prompts:
            raise ConfigError(
                "prompts is required: this run's model is text-to-image; send a list of prompts "
                "(the grid's rows)"
            )
        return prompts

    def _run_prompts(self, cfg: DictConfig) -> list[str]:
        """The prompts `cfg` draws (`prompts` or `prompts_file`); none for a model without text."""
        if not self.reads_text:
            return []
        return load_prompts(cfg.prompts, cfg.prompts_file) or []

    def _prompts(self, value) -> list[str]:
        """A request's prompts: a list of non-empty strings within `limits.max_prompt_chars`."""
        if not self.reads_text:
            kind = "class-conditional" if self.class_names else "unconditional"
            raise ConfigError(f"prompts: this run's model is {kind}, it reads no text")
        if not isinstance(value, list) or not value:
            raise ConfigError(f"prompts must be a list of prompts (grid rows), got {value!r}")
        return [request_prompt(p, self.limits.max_prompt_chars, "prompts") for p in value]

    def _classes(self, value) -> list[int]:
        """A request's classes: indices or names (any case; "3" counts as an index)."""
        if self.reads_text:
            raise ConfigError(
                "classes: this run's model is text-to-image and has no classes; send prompts"
            )
        if not isinstance(value, list):
            raise ConfigError(f"classes must be a list of class indices or names, got {value!r}")
        return [self.classes.lookup(c) for c in value]

    def generate(self, request: dict, progress: Callable[[int, int], None] | None = None) -> dict:
        """Sample the grid and the strip for `request`; returns {"grid", "strip"} as PNG bytes.
        `progress(done, total)` is called after every sampling step; an exception it raises (a
        cancel) stops the sampling there, between two steps."""
        cfg, sampler = self.prepare(request)
        _, model, spec = self._model(Path(cfg.ckpt_path).stem)
        noise, labels = grid_inputs(cfg, spec, self.device, self.text_encoder)
        total, done = 2 * cfg.num_steps, [0]

        def step(*_):
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        scale = float(cfg.guidance_scale)
        pieces = (model, self.diffusion, self.autoencoder, cfg, sampler)
        if self.service is not None:
            grid = self._service_grid(cfg, step)
        else:
            grid = render_grid(*pieces, scale, noise, labels, callback=step)
        if self.reads_text:
            grid = captioned_rows(grid, self._rows(cfg))
        first = slice(None, None, cfg.num_sample_seeds)  # the strip follows the first column
        strip_labels = condition_rows(labels, first)
        strip = denoising_strip(*pieces, noise[first], strip_labels, scale, callback=step)
        return {"grid": png_bytes(grid), "strip": png_bytes(strip)}

    def _service_grid(self, cfg: DictConfig, step: Callable) -> np.ndarray:
        """The grid's images drawn by the service: one request per row (class or prompt), its
        columns the seeds seed .. seed + seeds - 1, sent together so the service batches them.
        Column j starts from the noise of seed + j as the page's own grid does; a stochastic
        sampler then draws each image's noise from its own seed (docs/serve.md)."""
        served = self.service.options()["checkpoint"]
        if served != Path(cfg.ckpt_path).stem:
            raise ConfigError(
                f"the service at {self.service.url} serves checkpoint {served!r}; choose it"
            )
        settings = {
            "count": int(cfg.num_sample_seeds),
            "seeds": int(cfg.seed),
            "sampler": cfg.sampler,
            "num_steps": int(cfg.num_steps),
            "guidance_scale": float(cfg.guidance_scale),
            "eta": float(cfg.eta),
        }
        rows, field = self._rows(cfg), "prompt" if self.reads_text else "classes"
        with ThreadPoolExecutor(max_workers=len(rows)) as pool:
            answers = pool.map(
                lambda row: self.service.generate(**settings, **{field: row})["images"], rows
            )
            tiles = np.concatenate(list(answers))
        for _ in range(cfg.num_steps):
            step()
        grid = make_grid(tiles, nrow=cfg.num_sample_seeds)
        return upscale(grid, enlarge_factor(tiles.shape[1]))


def _parse(field: str, value, kind: type):
    """A request value as `kind`: an integer is a whole number (3, 3.0 or "3"), a number finite
    or not (ranges are checked by the caller), a string a JSON string; else a ConfigError."""
    try:
        if isinstance(value, bool) or (kind is str and not isinstance(value, str)):
            raise TypeError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{field} must be {KIND_NAMES[kind]}, got {value!r}") from None
