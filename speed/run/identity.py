"""What makes a training run the experiment it is: the config keys recorded in each training
checkpoint (`experiment`) and compared when the run resumes, so that a resume under another
noise schedule, model, dataset or global batch is not taken for the same run.

The record, a flat dict of dotted keys:
- every key of the `model`, `diffusion`, `data` and `autoencoder` nodes, but the data loader's
  `data.batch_size`, `data.num_workers` and `data.pin_memory` (how batches are cut and fetched);
- `global_batch`: images per optimizer step, per-process batch x processes x `grad_accum`, what
  the batch keys and the world size mean together (the same global batch on more or fewer
  processes, or with another accumulation, computes the same update);
- `seed`, `num_classes`, `precision` and `optimizer._target_`.

Everything else may change on resume: the learning rate and every optimizer setting, the lr
schedule, `grad_clip`, the EMA rates (a new rate starts from the first EMA), the run's length, the
log, checkpoint and sample intervals, the sampler of the training grids, `compile`, `tf32`, the
loggers. A resume that changes recorded keys stops with one line listing them (old -> new) unless
`resume_changes` names each of them (a node name covers its keys: `resume_changes=[diffusion]`).
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf

from speed.errors import ConfigError

EXPERIMENT_NODES = ("model", "diffusion", "data", "autoencoder")
LOADER_KEYS = ("data.batch_size", "data.num_workers", "data.pin_memory")
EXPERIMENT_KEYS = ("seed", "num_classes", "precision", "optimizer._target_")
_UNSET = object()


def experiment_record(cfg: DictConfig, global_batch: int) -> dict[str, Any]:
    """The keys of `cfg` that define the experiment (see the module docstring), with
    `global_batch` (images per optimizer step over all processes)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record: dict[str, Any] = {}
    for node in EXPERIMENT_NODES:
        _flatten(resolved.get(node) or {}, node, record)
    for key in LOADER_KEYS:
        record.pop(key, None)
    for key in EXPERIMENT_KEYS:
        record[key] = OmegaConf.select(cfg, key)
    record["global_batch"] = int(global_batch)
    return record


def _flatten(tree: Any, prefix: str, into: dict[str, Any]) -> None:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            _flatten(value, f"{prefix}.{key}", into)
    else:
        into[prefix] = tree


def compare_experiment(
    saved: dict[str, Any] | None, now: dict[str, Any], changes, source, rank: int = 0
) -> None:
    """Check that resuming checkpoint `source`, whose record is `saved` (None: written before
    records), continues the experiment `now` describes. Keys in `changes` (or under a node named
    there) may differ, with a line; any other difference is a ConfigError listing each key
    (old -> new); a name in `changes` that is no recorded key is a ConfigError too."""
    changes = [str(name) for name in changes or ()]
    if saved is None:
        if rank == 0:
            warnings.warn(
                f"resume: {source} records no experiment (written before records were kept): the "
                "config cannot be compared with the one it was trained under",
                stacklevel=2,
            )
        return
    keys = sorted(saved.keys() | now.keys())
    for name in changes:
        if not any(_covers(name, key) for key in keys):
            closest = difflib.get_close_matches(name, keys, n=1, cutoff=0.0)
            raise ConfigError(
                f"resume_changes: '{name}' is no key that defines the experiment; did you mean "
                f"'{closest[0]}'?"
            )
    differ = [k for k in keys if saved.get(k, _UNSET) != now.get(k, _UNSET)]
    refused = [k for k in differ if not any(_covers(name, k) for name in changes)]
    if refused:
        listed = ", ".join(f"{k} ({_show(saved, k)} -> {_show(now, k)})" for k in refused)
        raise ConfigError(
            f"resume: the experiment differs from the one {source} was trained in: {listed}; "
            f"pass resume_changes=[{','.join(refused)}] if you mean to change them, or start "
            "a new experiment_dir"
        )
    if differ and rank == 0:
        listed = ", ".join(f"{k} ({_show(saved, k)} -> {_show(now, k)})" for k in differ)
        warnings.warn(f"resume: changing {listed} (resume_changes)", stacklevel=2)


def _covers(name: str, key: str) -> bool:
    return key == name or key.startswith(name + ".")


def _show(record: dict[str, Any], key: str) -> str:
    value = record.get(key, _UNSET)
    return "unset" if value is _UNSET else str(value)
