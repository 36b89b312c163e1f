"""A trained run as the page sees it: its checkpoints, the choices it offers, and one generation
(a grid and a denoising strip, drawn by `speed.generation` exactly as the `sample` phase draws
them) for the settings of a request."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from speed.diffusion.samplers.common import check_num_steps
from speed.errors import ConfigError, MissingFileError
from speed.generation import (
    denoising_strip,
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
    dataset_class_names,
)
from speed.utils.images import png_bytes

MAX_SEEDS = 16  # grid columns a request may ask for
# request field -> (config key, type)
FIELDS = {
    "checkpoint": ("ckpt_path", str),
    "classes": ("sample_classes", list),
    "guidance_scale": ("guidance_scale", float),
    "sampler": ("sampler", str),
    "num_steps": ("num_steps", int),
    "eta": ("eta", float),
    "seed": ("seed", int),
    "seeds": ("num_sample_seeds", int),
}
KIND_NAMES = {str: "a string", list: "a list of classes", float: "a number", int: "an integer"}


class RunStudio:
    """The run in `run_dir` (its `train/config.yaml` and checkpoints), ready to sample.

    A folder without checkpoints is a MissingFileError (one line). The newest checkpoint is
    loaded at once, so a run that cannot be sampled fails here, not on the first click.
    """

    def __init__(self, run_dir: str | os.PathLike, device: str = "cpu", trust: bool = False):
        self.run = RunDir(Path(run_dir))
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
        self._loaded: tuple[str, torch.nn.Module, object] | None = None
        self.spec = None  # the model input (DataSpec) of the newest checkpoint
        _, _, self.spec = self._model(list(self.checkpoints)[-1])

    def _model(self, stem: str):
        """(stem, model, spec) of checkpoint `stem`; the last one used stays loaded."""
        if self._loaded is None or self._loaded[0] != stem:
            cfg, _ = self.prepare({"checkpoint": stem})
            model, _, spec = build_sampling_model(cfg, self.autoencoder, self.device)
            self._loaded = (stem, model, spec)
        return self._loaded

    def options(self) -> dict:
        """What the page offers, with the run's settings as defaults."""
        k = self.spec.num_classes
        names = dataset_class_names(self.cfg) or [str(c) for c in range(k)]
        return {
            "run": str(self.run.root),
            "checkpoints": list(self.checkpoints),
            "classes": names[:k],
            "samplers": sorted(family_samplers(self.diffusion.family)),
            "max_steps": int(self.diffusion.original_num_steps),
            "max_seeds": MAX_SEEDS,
            "defaults": {
                "checkpoint": list(self.checkpoints)[-1],
                "classes": list(self.cfg.sample_classes or range(min(k, 10))),
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
        FIELDS, others keep the run's values. A bad value is a ConfigError naming the field,
        raised before any sampling."""
        values = {}
        for field, value in request.items():
            if field not in FIELDS:
                raise ConfigError(f"unknown setting {field!r}; known: {', '.join(FIELDS)}")
            key, kind = FIELDS[field]
            try:
                values[key] = [int(c) for c in value] if kind is list else kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{field} must be {KIND_NAMES[kind]}, got {value!r}") from None
        stem = values.get("ckpt_path", list(self.checkpoints)[-1])  # default: the newest
        if stem not in self.checkpoints:
            raise ConfigError(f"no checkpoint {stem!r} in {self.run.checkpoints}")
        values["ckpt_path"] = str(self.checkpoints[stem])
        if "sampler" in values and values["sampler"] != self.cfg.sampler:
            values["sampler_options"] = {}  # the run's options belong to its own sampler
        if not 1 <= values.get("num_sample_seeds", 1) <= MAX_SEEDS:
            raise ConfigError(f"seeds must lie in 1..{MAX_SEEDS}")
        cfg = OmegaConf.merge(self.cfg, values)
        try:
            check_num_steps(self.diffusion, cfg.num_steps)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.spec is not None:
            grid_rows(cfg, self.spec.num_classes)  # classes in range
        return cfg, sampler_from_config(cfg)

    def generate(self, request: dict, progress: Callable[[int, int], None] | None = None) -> dict:
        """Sample the grid and the strip for `request`; returns {"grid", "strip"} as PNG bytes.
        `progress(done, total)` is called after every sampling step."""
        cfg, sampler = self.prepare(request)
        _, model, spec = self._model(Path(cfg.ckpt_path).stem)
        noise, labels = grid_inputs(cfg, spec, self.device)
        total, done = 2 * cfg.num_steps, [0]

        def step(*_):
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        scale = float(cfg.guidance_scale)
        pieces = (model, self.diffusion, self.autoencoder, cfg, sampler)
        grid = render_grid(*pieces, scale, noise, labels, callback=step)
        first = slice(None, None, cfg.num_sample_seeds)  # the strip follows the first column
        strip_labels = labels[first] if labels is not None else None
        strip = denoising_strip(*pieces, noise[first], strip_labels, scale, callback=step)
        return {"grid": png_bytes(grid), "strip": png_bytes(strip)}
