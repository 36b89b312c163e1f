"""The latent cache (fast-DiT's speed-up): encode a dataset once, then train on stored latents.

`extract_latents` encodes every image and its left-right mirror with the autoencoder, so random
flips survive; `LatentCacheDataset` reads the cache back and picks one of the two per access.

Layout of a cache folder, one part per extracting rank r of W (rank r encodes items r, r+W, ...):

    part-0000r.latents.npy   float16|float32 [n_r, 2, C, h, w]  (scaled latents; [:, 1] = mirror)
    part-0000r.items.npz     labels int64 [n_r], indices int64 [n_r] (positions in the dataset)
    part-0000r.features.npy  optional: float16|float32 [n_r, 2, L, D], a frozen encoder's patch
                             features of the clean image and its mirror (REPA's targets)
    part-0000r.captions.jsonl optional: a captioned dataset's captions, one JSON list a line per
                             item (text-to-image trains on the cache; y is then the item index)
    part-0000r.text.npy      optional: float16|float32 [c_r, L, D], a frozen text encoder's
    part-0000r.text_mask.npy embeddings and bool [c_r, L] masks of every caption, in the order of
                             the captions file (so training runs no text encoder)
    part-0000r.json          metadata; written last, so its presence marks a complete part

Every file is written to a temporary name and renamed. Posterior samples are reproducible: the
noise of item i, mirror f (0 or 1), comes from its own generator seeded by (seed, i, f), so the
cache does not depend on the batch size or the number of ranks.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from speed.utils.atomic import atomic_path, atomic_write

FORMAT = "speed-latent-cache/1"
DTYPES = {"float16": np.float16, "float32": np.float32}
PART_KEYS = ("rank", "part_items")  # metadata that differs between parts


def latent_noise_generator(seed: int, index: int, flip: int) -> torch.Generator:
    """The CPU generator of the posterior noise for dataset item `index`, mirror `flip`."""
    state = np.random.SeedSequence([seed, index, flip]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def part_paths(folder: str | os.PathLike, rank: int) -> dict[str, Path]:
    """The files of part `rank` in a cache folder: latents (.npy), items (.npz), meta (.json)."""
    stem = f"part-{rank:05d}"
    folder = Path(folder)
    return {
        "latents": folder / f"{stem}.latents.npy",
        "items": folder / f"{stem}.items.npz",
        "features": folder / f"{stem}.features.npy",
        "captions": folder / f"{stem}.captions.jsonl",
        "text": folder / f"{stem}.text.npy",
        "text_mask": folder / f"{stem}.text_mask.npy",
        "meta": folder / f"{stem}.json",
    }


def extract_latents(
    dataset: Dataset,
    autoencoder: torch.nn.Module,
    out_path: str | os.PathLike,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    num_workers: int = 0,
    dtype: str = "float16",
    seed: int = 0,
    features: torch.nn.Module | None = None,
    text_encoder: torch.nn.Module | None = None,
) -> Path:
    """Encode this rank's share of `dataset` into `out_path`; returns the part's metadata file.

    Args:
        dataset: a pixel dataset built with random_flip=False (the mirror is stored explicitly).
        autoencoder: `encode(x, generator)` returning scaled latents (moved to `device`).
        out_path: the cache folder (created); every rank of one extraction writes its own part.
        batch_size: images per encoder call (each is encoded with its mirror: 2x this).
        rank, world_size: this process among the extracting ones; rank r encodes items r::W.
        progress: show a progress bar (rank 0 only).
        num_workers: DataLoader workers decoding images.
        dtype: stored precision, float16 (half the disk; rounding ~5e-4 relative, far below the
            posterior's spread) or float32.
        seed: base seed of the per-item posterior noise.
        features: a frozen encoder (`speed.alignment.encoders`: clean images in [-1, 1] ->
            [N, L, D] with a `name`) whose features of each image and its mirror are stored
            beside the latents, so that REPA trains on the cache without running it.
        text_encoder: a frozen `speed.text` encoder (with an `identity`) whose embeddings of
            every caption of a captioned dataset are stored, so training runs no text encoder.
    """
    if getattr(dataset, "is_latent", False):
        raise ValueError("extract_latents: the dataset already holds latents")
    if getattr(dataset, "random_flip", False):
        raise ValueError(
            "extract_latents: build the dataset with random_flip=False; the cache stores each "
            "image and its mirror"
        )
    if dtype not in DTYPES:
        raise ValueError(f"extract_latents: dtype must be one of {sorted(DTYPES)}, got '{dtype}'")
    if not 0 <= rank < world_size or len(dataset) < world_size:
        raise ValueError(
            f"extract_latents: rank {rank} of {world_size} over {len(dataset)} items is invalid"
        )
    paths = part_paths(out_path, rank)
    paths["meta"].parent.mkdir(parents=True, exist_ok=True)
    paths["meta"].unlink(missing_ok=True)  # the part counts as incomplete until rewritten
    items = list(range(rank, len(dataset), world_size))
    loader = DataLoader(Subset(dataset, items), batch_size=batch_size, num_workers=num_workers)
    bar = tqdm(loader, desc="extract", disable=not progress or rank != 0)
    paths["features"].unlink(missing_ok=True)
    encoders = {"latents": _latent_encoder(autoencoder.to(device), items, seed)}
    if features is not None:
        encoders["features"] = lambda pairs, done, n: features.to(device)(pairs)
    with contextlib.ExitStack() as stack:
        files = {key: stack.enter_context(atomic_path(paths[key])) for key in encoders}
        labels, shapes = _encode(bar, encoders, files, len(items), dtype, device)
    with atomic_path(paths["items"]) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=labels, indices=np.asarray(items, np.int64))
    captioned = bool(getattr(dataset, "has_captions", False))
    for key in ("captions", "text", "text_mask"):
        paths[key].unlink(missing_ok=True)
    text = None
    if captioned:
        lines = [json.dumps(dataset.captions(i)) + "\n" for i in items]
        atomic_write(paths["captions"], "".join(lines))
        if text_encoder is not None:
            texts = [c for i in items for c in dataset.captions(i)]
            text = _encode_captions(text_encoder, texts, paths, batch_size, device, dtype)
    metadata = {
        "format": FORMAT,
        "autoencoder": getattr(autoencoder, "name", type(autoencoder).__name__),
        "scale": float(autoencoder.scale),
        "downsample": int(autoencoder.downsample),
        "sample_posterior": bool(getattr(autoencoder, "sample_posterior", False)),
        "seed": seed,
        "dtype": dtype,
        "latent_shape": shapes["latents"],
        **(
            {"features": {"encoder": features.name, "shape": shapes["features"]}}
            if features is not None
            else {}
        ),
        "captions": captioned,
        **({"text": text} if text is not None else {}),
        "source_resolution": int(dataset.resolution),
        "num_items": len(dataset),
        "num_classes": int(dataset.num_classes),
        "class_names": getattr(dataset, "class_names", None),
        "world_size": world_size,
        "rank": rank,
        "part_items": len(items),
    }
    atomic_write(paths["meta"], json.dumps(metadata, indent=1))
    return paths["meta"]


@torch.no_grad()
def _encode_captions(text_encoder, texts: list[str], paths: dict, batch_size, device, dtype):
    """Write the embeddings and masks of `texts` (`text` and `text_mask` files); returns their
    metadata (the encoder's identity, L, D)."""
    text_encoder = text_encoder.to(device)
    length, dim = text_encoder.max_length, text_encoder.dim
    with atomic_path(paths["text"]) as tmp, atomic_path(paths["text_mask"]) as tmp_mask:
        out = np.lib.format.open_memmap(tmp, "w+", DTYPES[dtype], (len(texts), length, dim))
        masks = np.lib.format.open_memmap(tmp_mask, "w+", np.bool_, (len(texts), length))
        for start in range(0, len(texts), batch_size):
            condition = text_encoder.condition(texts[start : start + batch_size], device)
            out[start : start + len(condition["y"])] = condition["y"].float().cpu().numpy()
            masks[start : start + len(condition["y"])] = condition["mask"].cpu().numpy()
        out.flush()
        masks.flush()
    return {"encoder": text_encoder.identity, "max_length": length, "dim": dim}


def _latent_encoder(autoencoder, items: list[int], seed: int):
    """(pairs [2n, C, H, W], done, n) -> scaled latents, each item's posterior noise its own."""

    def encode(pairs, done, n):
        generators = [
            latent_noise_generator(seed, i, f) for i in items[done : done + n] for f in (0, 1)
        ]
        return autoencoder.encode(pairs, generator=generators)

    return encode


@torch.no_grad()
def _encode(batches, encoders: dict, files: dict, count: int, dtype, device) -> tuple:
    """Write each encoder's outputs for every item (image, mirror) to a new .npy (`files[key]`),
    batch by batch through memory maps; returns (labels int64 [count], key -> one item's shape
    without the mirror axis)."""
    arrays, labels, done = {}, np.empty(count, np.int64), 0
    for x, y in batches:
        n = len(x)
        pairs = torch.stack([x, x.flip(-1)], dim=1).flatten(0, 1).to(device)  # [2n, C, H, W]
        for key, encode in encoders.items():
            out = encode(pairs, done, n).unflatten(0, (n, 2))  # [n, 2, ...]
            if key not in arrays:
                shape = (count, *out.shape[1:])
                arrays[key] = np.lib.format.open_memmap(files[key], "w+", DTYPES[dtype], shape)
            arrays[key][done : done + n] = out.float().cpu().numpy()
        labels[done : done + n] = y.numpy()
        done += n
    for array in arrays.values():
        array.flush()
    return labels, {key: list(array.shape[2:]) for key, array in arrays.items()}


class LatentCacheDataset(Dataset):
    """Stored latents as x float32 [C, h, w] (already scaled), y int64 label.

    Args:
        path: the cache folder written by `extract_latents` (config key `data.path`).
        random_flip: pick the image or its mirror at random per access (torch's global RNG,
            as fast-DiT does); False = always the image as stored; None (default) = flip a
            labelled cache, not a captioned one (a mirror swaps "left" and "right").
        with_features: also return the stored encoder features of the same image or mirror,
            float32 [L, D], as a third item (REPA's targets; training turns this on with
            `include_features()`).

    Besides `resolution` (the latent side), `num_channels`, `num_classes`, `class_names`, it
    exposes the cache's `metadata` (autoencoder, scale, source_resolution, ...). A cache of a
    captioned dataset is captioned too (`has_captions`, `captions(index)`; y the item index).
    """

    is_latent = True
    has_captions = False

    def __init__(self, path: str, random_flip: bool | None = None, with_features: bool = False):
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data.path: no latent cache folder at {folder}; write one with -p extract"
            )
        meta_files = sorted(folder.glob("part-*.json"))
        if not meta_files:
            raise FileNotFoundError(
                f"data.path: {folder} holds no latent cache parts (part-*.json); "
                "write them with -p extract"
            )
        parts = [json.loads(p.read_text()) for p in meta_files]
        self.metadata = _common_metadata(parts, folder)
        paths = [part_paths(folder, rank) for rank in range(self.metadata["world_size"])]
        items = [np.load(p["items"]) for p in paths]
        labels = np.concatenate([it["labels"] for it in items])
        indices = np.concatenate([it["indices"] for it in items])
        if not np.array_equal(np.sort(indices), np.arange(self.metadata["num_items"])):
            raise ValueError(f"data.path: the parts in {folder} do not cover items 0..N-1 once")
        # Item i lives in part part_of[i] at row row_of[i].
        part_ids = np.concatenate([np.full(len(it["indices"]), k) for k, it in enumerate(items)])
        rows = np.concatenate([np.arange(len(it["indices"])) for it in items])
        order = np.argsort(indices)
        self.part_of, self.row_of = part_ids[order], rows[order]
        self.labels = torch.from_numpy(labels[order].astype(np.int64))
        if self.metadata.get("captions"):
            stored = [
                [json.loads(line) for line in p["captions"].read_text().splitlines()] for p in paths
            ]
            self.texts = [stored[k][r] for k, r in zip(self.part_of, self.row_of)]
            self.has_captions = True
            first = [np.cumsum([0] + [len(t) for t in part])[:-1] for part in stored]
            self._first_caption = [first[k][r] for k, r in zip(self.part_of, self.row_of)]
        stored_text = self.metadata.get("text")
        self.caption_encoder = stored_text["encoder"] if stored_text else None  # who made them
        self._text_files = [(p["text"], p["text_mask"]) for p in paths]
        self._text = None
        self.latent_files = [p["latents"] for p in paths]
        self._latents = None  # memory maps, opened on first access in each worker
        stored = self.metadata.get("features")
        self.feature_encoder = stored["encoder"] if stored else None  # who made the features
        self._feature_files = [p["features"] for p in paths]
        self._features = None
        self.returns_features = False
        if with_features:
            self.include_features()
        self.random_flip = not self.has_captions if random_flip is None else random_flip
        self.num_channels, _, self.resolution = self.metadata["latent_shape"]
        self.num_classes = self.metadata["num_classes"]
        self.class_names = self.metadata["class_names"]
        self.scale = self.metadata["scale"]
        self.source_resolution = self.metadata["source_resolution"]

    def include_features(self) -> None:
        """Return the stored encoder features as a third item from now on."""
        if self.feature_encoder is None:
            raise ValueError(
                "data: this latent cache holds no encoder features; write it again with "
                "-p extract and the repa node set (repa.lam > 0)"
            )
        self.returns_features = True

    def __len__(self) -> int:
        return len(self.labels)

    def captions(self, index: int) -> list[str]:
        return self.texts[index]

    def caption_embeddings(self, indices: list[int], picks: list[int]):
        """The stored embeddings float32 [n, L, D] and masks bool [n, L] of caption picks[j] of
        item indices[j] (a cache written with a text encoder: `caption_encoder` names it)."""
        if self._text is None:
            self._text = [tuple(np.load(f, mmap_mode="r") for f in fs) for fs in self._text_files]
        rows = [
            (self.part_of[i], self._first_caption[i] + k) for i, k in zip(indices, picks)
        ]  # fmt: skip
        y = np.stack([np.asarray(self._text[part][0][row], np.float32) for part, row in rows])
        mask = np.stack([np.asarray(self._text[part][1][row]) for part, row in rows])
        return torch.from_numpy(y), torch.from_numpy(mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self._latents is None:
            self._latents = [np.load(f, mmap_mode="r") for f in self.latent_files]
        flip = int(torch.randint(2, ())) if self.random_flip else 0
        part, row = self.part_of[index], self.row_of[index]
        z = torch.from_numpy(np.array(self._latents[part][row, flip], dtype=np.float32))
        if not self.returns_features:
            return z, self.labels[index]
        if self._features is None:
            self._features = [np.load(f, mmap_mode="r") for f in self._feature_files]
        f = torch.from_numpy(np.array(self._features[part][row, flip], dtype=np.float32))
        return z, self.labels[index], f


def _common_metadata(parts: list[dict], folder: Path) -> dict:
    """The metadata shared by all parts; a one-line error if they come from different runs."""
    common = [{k: v for k, v in p.items() if k not in PART_KEYS} for p in parts]
    world_size = common[0].get("world_size")
    if common[0].get("format") != FORMAT:
        raise ValueError(f"data.path: {folder} is not a {FORMAT} cache")
    ranks = sorted(p["rank"] for p in parts)
    if any(c != common[0] for c in common) or ranks != list(range(world_size)):
        raise ValueError(
            f"data.path: {folder} mixes parts of different extractions or misses some (found "
            f"ranks {ranks} of {world_size}); delete it and run -p extract again"
        )
    return common[0]
