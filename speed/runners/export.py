"""The `export` phase: a run's denoiser (EMA weights unless `use_ema_for_sampling=false`) as an
ONNX graph for ONNX Runtime and other serving stacks.

    python main.py -c CONFIG -p export [ckpt_path=<file.pt>]

writes `<experiment_dir>/export/<ckpt-stem>.onnx` (inputs x, t, y, guidance_scale with a dynamic
batch; guidance folded in: see `speed.deploy.onnx_graph`) and `<ckpt-stem>.json` (schedule,
parameterisation, shapes, classes, guidance, the run's sampling settings: see
`speed.deploy.manifest`), after checking that ONNX Runtime's output equals PyTorch's on a random
batch. One process on the CPU; the export folder is locked for the run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from speed.config import save_config
from speed.deploy.manifest import describe, save_manifest
from speed.deploy.onnx_graph import OPSET, OUTPUT_NAME, DenoiserGraph, export_onnx, max_difference
from speed.deploy.onnx_sampling import OnnxDenoiser
from speed.generation import scales_of
from speed.run import RunDir, checkpoint_step, locked
from speed.runners.build import (
    build_autoencoder,
    build_diffusion,
    build_sampling_model,
    dataset_class_names,
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
    cpu = torch.device("cpu")
    model, ckpt_path, spec = build_sampling_model(
        cfg, autoencoder, cpu, without_conditions="export"
    )
    diffusion = build_diffusion(cfg)
    stem = ckpt_path.stem

    # ---- the manifest, then the graph (its time input as the manifest says) ----
    image = {
        "channels": spec.channels,
        "side": spec.side,
        "pixel_side": spec.side * autoencoder.downsample,
        "autoencoder": autoencoder.name,
        "latent_scale": autoencoder.scale,
    }
    manifest = describe(
        diffusion,
        model,
        DenoiserGraph(model).input_names,
        OUTPUT_NAME,
        image,
        dataset_class_names(cfg),
    )
    float_time = manifest["time_input"] == "float32"
    path = export_onnx(model, run.onnx_file(stem), spec.channels, spec.side, float_time)
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
    error = max_difference(model, session, spec.channels, spec.side, CHECK_BATCH, float_time)
    manifest["export"] = {
        "opset": OPSET,
        "torch": torch.__version__,
        "check_batch": CHECK_BATCH,
        "max_abs_diff": error,
    }
    json_path = save_manifest(manifest, run.onnx_manifest(stem))
    save_config(cfg, run.config_file("export"))
    print(
        f"export: wrote {path} and {json_path.name} (ONNX Runtime vs PyTorch, {CHECK_BATCH} "
        f"images: max |difference| {error:.1e})",
        flush=True,
    )
    return path
