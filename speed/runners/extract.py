"""The `extract` phase: encode a pixel dataset once into a latent cache (fast-DiT's speed-up).

Every image and its left-right mirror are encoded, so training on the cache keeps random flips
while never running the VAE encoder again. With REPA configured (`repa.lam > 0`) its frozen
encoder's features of both are stored too, so REPA trains on the cache without that encoder.
A captioned dataset's captions are stored, and with a frozen text encoder (T5, CLIP) the
embeddings of every caption, so text-to-image trains on the cache without running it.
The cache goes to `<experiment_dir>/latents/`, one part per rank (see
`speed.data.latent_cache`); training reads it with
`data._target_=speed.data.LatentCacheDataset data.path=<that folder>`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig

from speed.config import ConfigError, instantiate, save_config
from speed.data import extract_latents
from speed.run import RunDir
from speed.runners.build import build_autoencoder, build_dataset, build_text_encoder
from speed.utils.distributed import barrier, init_distributed

CACHE_TARGET = "speed.data.LatentCacheDataset"


def extract(cfg: DictConfig) -> Path:
    """Encode the configured dataset with the configured autoencoder; returns the cache folder."""
    dist = init_distributed()
    run = RunDir.of(cfg)
    folder = run.latents
    dataset_class = get_object(cfg.data._target_)
    if getattr(dataset_class, "is_latent", False):
        raise ConfigError(
            f"extract: data._target_ {cfg.data._target_} already holds latents; point data at "
            "the pixel dataset to encode (e.g. speed.data.ImageFolderDataset)"
        )

    # ---- The cache folder: fresh, or emptied with overwrite=true. ----
    previous = sorted(folder.glob("part-*")) + sorted(folder.glob(".part-*"))
    if previous and not cfg.overwrite:
        raise ConfigError(
            f"{folder} already holds a latent cache; pass overwrite=true to write it again, or "
            "choose another experiment_dir"
        )
    if dist.is_main:
        for path in previous:
            path.unlink(missing_ok=True)
    barrier()

    # ---- Objects: the dataset without random flips (the cache stores both mirrors). ----
    takes_flip = "random_flip" in inspect.signature(dataset_class).parameters
    dataset = build_dataset(cfg, **({"random_flip": False} if takes_flip else {}))
    autoencoder = build_autoencoder(cfg)
    features = instantiate(cfg.repa.encoder) if cfg.repa.lam else None
    text_encoder = build_text_encoder(cfg)
    frozen_text = text_encoder if getattr(text_encoder, "dim", 0) else None  # not ByteTokens

    # ---- Encode this rank's share; rank 0 records the config. ----
    extract_latents(
        dataset,
        autoencoder,
        folder,
        batch_size=cfg.per_proc_batch_size,
        device=dist.device,
        rank=dist.rank,
        world_size=dist.world_size,
        progress=dist.is_main,
        num_workers=cfg.data.get("num_workers", 0),
        seed=cfg.seed,
        features=features,
        text_encoder=frozen_text,
    )
    if dist.is_main:
        save_config(cfg, run.config_file("extract"))
    barrier()
    if dist.is_main:
        flip = " data.random_flip=false" if cfg.data.get("random_flip") is False else ""
        print(
            f"extract: wrote {len(dataset)} items (image and mirror"
            + (f", {features.name} features" if features is not None else "")
            + f") in {dist.world_size} part(s) "
            f"to {folder}; train on them with: "
            f"data._target_={CACHE_TARGET} data.path={folder}{flip}",
            flush=True,
        )
    return folder
