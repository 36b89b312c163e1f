"""Reference statistics computed once per (file, extractor) and cached on disk.

A reference set is usually scored many times (every checkpoint of a run, every run of a sweep);
its statistics are kept in a cache folder, keyed by the resolved path, size and modification
time of the reference and the extractor's name, so a changed file or another network computes
them anew.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from evaluations.evaluate import source_stats
from evaluations.features import FeatureExtractor
from evaluations.image_io import load_npz, load_source
from evaluations.reference import FeatureStats
from speed.errors import MissingFileError


def reference_stats(
    ref: str | os.PathLike,
    extractor: FeatureExtractor,
    cache_dir: str | os.PathLike,
    batch_size: int = 50,
    device=None,
    progress: bool = True,
    with_features: bool = False,
) -> FeatureStats:
    """Statistics of the reference images `ref` (.npz, folder, or a statistics .npz) under
    `extractor`, computed once and cached in `cache_dir` (keyed by the path, its size and mtime,
    and the extractor's name); `with_features` keeps the per-image features in the cache too
    (KID and precision/recall need them)."""
    ref = Path(ref).resolve()
    if not ref.exists():
        raise MissingFileError(f"--ref {ref}: no such file or folder")
    info = ref.stat()
    key = f"{ref}|{info.st_size}|{info.st_mtime_ns}|{extractor.name}"
    key += "|features" if with_features else ""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"reference_{ref.stem}_{digest}.npz"
    if cache.is_file():
        return source_stats(load_npz(cache), extractor)
    stats = source_stats(load_source(ref), extractor, batch_size, device, progress)
    stats.save(cache, with_features=with_features)
    return stats
