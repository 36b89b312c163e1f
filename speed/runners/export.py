"""The `export` phase: a run's denoiser (EMA weights unless `use_ema_for_sampling=false`) as an
ONNX graph for ONNX Runtime and other serving stacks.

    python main.py -c CONFIG -p export [ckpt_path=<file.pt>]

writes `<experiment_dir>/export/<ckpt-stem>.onnx` (inputs x, t, y, guidance_scale with a dynamic
batch; guidance folded in: see `speed.deploy.onnx_graph`) and `<ckpt-stem>.json` (schedule,
parameterisation, shapes, classes, guidance, the run's sampling settings: see
`speed.deploy.manifest`), after checking that ONNX Runtime's output equals PyTorch's on a random
batch. A model that takes more (`speed.deploy.conditions`) has more graph inputs, each described
in the manifest: a caption model's y and mask (embeddings of the `text_encoder` node's frozen
encoder, or byte ids its own text transformer reads), a ControlNet branch's control image (with
its base; `control.scale` folded in), a super-resolution model's low_res. One process on the CPU;
the export folder is locked for the run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from speed.config import save_config
from speed.deploy.conditions import caption_inputs, control_input, low_res_input
from speed.deploy.manifest import describe, save_manifest
from speed.deploy.onnx_graph import OPSET, OUTPUT_NAME, DenoiserGraph, export_onnx, max_difference
from speed.deploy.onnx_sampling import OnnxDenoiser
from speed.errors import ConfigError
from speed.generation import scales_of
from speed.run import RunDir, checkpoint_step, locked
from speed.runners.build import (
    build_autoencoder,
    build_degradation,
    build_diffusion,
    build_sampling_model,
    build_text_encoder,
    dataset_class_names,
    sampling_control,
)

CHECK_BATCH = 3  # images in the ONNX Runtime vs PyTorch check (not the export's batch of 2)


def export(cfg: DictConfig) -> Path:
    """Write the ONNX graph and its manifest for the checkpoint sampling would use (`ckpt_path`
    or the run's newest); returns the `.onnx` path."""
    run = RunDir.of(cfg)
    with locked(run.export):
        return _export(cfg, run)


def _export(cfg: DictConfig, run: RunDir) -> Path:
    autoencoder = build_autoencoder(cfg)
    text_encoder = build_text_encoder(cfg)
    cpu = torch.device("cpu")
    model, ckpt_path, spec = build_sampling_model(cfg, autoencoder, cpu, text_encoder)
    diffusion = build_diffusion(cfg)
    extras = graph_conditions(cfg, model, ckpt_path, spec, autoencoder, text_encoder)
    stem = ckpt_path.stem

    # ---- the manifest, then the graph (its time input as the manifest says) ----
    image = {
        "channels": spec.channels,
        "side": spec.side,
        "pixel_side": spec.side * autoencoder.downsample,
        "autoencoder": autoencoder.name,
        "latent_scale": autoencoder.scale,
    }
    names = DenoiserGraph(model, extras=extras).input_names
    manifest = describe(
        diffusion, model, names, OUTPUT_NAME, image, dataset_class_names(cfg), extras
    )
    float_time = manifest["time_input"] == "float32"
    path = export_onnx(model, run.onnx_file(stem), spec.channels, spec.side, float_time, extras)
    manifest.update(
        onnx=path.name,
        checkpoint={
            "file": str(ckpt_path),
            "step": checkpoint_step(ckpt_path) if stem.isdigit() else None,
            "weights": "ema" if cfg.use_ema_for_sampling else "model",
        },
        settings={
            "sampler": cfg.sampler,
            "num_steps": cfg.num_steps,
            "eta": cfg.eta,
            "guidance_scale": scales_of(cfg)[0],
            "clip_denoised": cfg.clip_denoised,
        },
    )

    # ---- check: ONNX Runtime against PyTorch ----
    session = OnnxDenoiser(path, manifest)
    graph = DenoiserGraph(model, float_time, extras)
    error = max_difference(graph, session.run, spec.channels, spec.side, CHECK_BATCH)
    manifest["export"] = {
        "opset": OPSET,
        "torch": torch.__version__,
        "check_batch": CHECK_BATCH,
        "max_abs_diff": error,
    }
    json_path = save_manifest(manifest, run.onnx_manifest(stem))
    save_config(cfg, run.config_file("export"))
    print(
        f"export: wrote {path} (inputs {', '.join(names)}) and {json_path.name} (ONNX Runtime "
        f"vs PyTorch, {CHECK_BATCH} images: max |difference| {error:.1e})",
        flush=True,
    )
    return path


def graph_conditions(cfg: DictConfig, model, ckpt_path, spec, autoencoder, text_encoder) -> list:
    """The graph inputs `model` takes beyond x, t, y (`speed.deploy.conditions`): a caption's y
    and mask, a ControlNet's control image, an upsampler's low_res."""
    extras = []
    if text_encoder.reads_text:
        node = OmegaConf.to_container(cfg.text_encoder, resolve=True)
        extras += caption_inputs(text_encoder, node)
    control = sampling_control(cfg, ckpt_path)
    if control is not None:
        latent = autoencoder.latent_channels is not None
        extras.append(control_input(control, spec.channels, spec.side, latent))
    conditions = tuple(getattr(model, "conditions", ()))
    if "low_res" in conditions:
        degradation = build_degradation(cfg)
        extras.append(low_res_input(model, degradation.low_size, vars(degradation)))
    unknown = [name for name in conditions if name != "low_res"]
    if unknown:
        raise ConfigError(
            f"export: {ckpt_path} is a {type(model).__name__}, which also needs "
            f"{', '.join(unknown)}, an input the export cannot describe; sample it with -p sample"
        )
    return extras
