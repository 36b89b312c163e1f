"""speed.run.sharded: a sharded checkpoint carries a manifest of its files' sha256, is verified
before a byte of it is unpickled, never runs code from its metadata unless trusted, and a broken
one falls back to the previous checkpoint in one line. In one process (torch.distributed.checkpoint
without a process group); tests/runners/test_fsdp.py runs two ranks."""

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from speed.diffusion import create_diffusion
from speed.models import load_checkpoint
from speed.models.loading import save_checkpoint
from speed.run import load_newest_good
from speed.run.sharded import MANIFEST, ShardedTrainState, shards_folder, write_manifest
from speed.utils.seeding import get_rng_state


def _state(seed: int) -> ShardedTrainState:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return ShardedTrainState(
        model=model,
        emas=[nn.Linear(3, 2)],
        ema_rates=[0.9999],
        optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        scaler=None,
        timestep_sampler=create_diffusion("").timestep_sampler,
        data_spec={"channels": 3},
        config={"seed": seed},
    )


def _train_one_step(state: ShardedTrainState) -> None:
    state.model(torch.randn(4, 3)).square().mean().backward()
    state.optimizer.step()
    state.optimizer.zero_grad()
    state.step += 1


@pytest.fixture
def checkpoints(tmp_path):
    """Steps 1 and 2 of a tiny sharded run: (path of step 1, path of step 2, weights at 1)."""
    state = _state(seed=0)
    paths = []
    for _ in range(2):
        _train_one_step(state)
        paths.append(state.save(tmp_path / f"ckpt/{state.step:07d}.pt", [get_rng_state()]))
        if state.step == 1:
            weights = {k: v.clone() for k, v in state.model.state_dict().items()}
    return paths[0], paths[1], weights


class _Payload:
    """Unpickling this creates `marker`: what a crafted metadata file could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _resume(paths, **kwargs):
    """A fresh state restored by `load_newest_good` from `paths`, and the skip warnings."""
    state = _state(seed=9)
    with pytest.warns(UserWarning) as caught:
        used = load_newest_good(state, list(paths), **kwargs)
    skips = [str(w.message) for w in caught if "skipping" in str(w.message)]
    return state, used, skips


def _re_sign(path: Path, manifest: str | None) -> None:
    """Rewrite checkpoint file `path` with another manifest record and a valid checksum (what
    someone controlling every file of the run could do)."""
    ckpt = load_checkpoint(path)
    ckpt["shards_manifest"] = manifest
    save_checkpoint(ckpt, path)


def test_the_manifest_lists_every_file_and_the_checkpoint_records_it(checkpoints):
    _, newest, _ = checkpoints
    folder = shards_folder(newest)
    manifest = (folder / MANIFEST).read_text()
    listed = {name: digest for digest, name in (line.split() for line in manifest.splitlines())}
    files = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert sorted(listed) == files and ".metadata" in files and len(files) >= 2
    for name, digest in listed.items():
        assert digest == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    recorded = load_checkpoint(newest)["shards_manifest"]
    assert recorded == hashlib.sha256(manifest.encode()).hexdigest()
    assert not list(newest.parent.glob(".*.tmp"))  # the temporary folder was renamed


@pytest.mark.parametrize("manifest", ["stale", "rewritten", "removed"])
def test_a_payload_in_the_metadata_never_runs(checkpoints, tmp_path, manifest):
    first, newest, weights = checkpoints
    folder, marker = shards_folder(newest), tmp_path / "ran"
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    if manifest == "rewritten":  # a valid manifest of the planted file, recorded by the .pt
        _re_sign(newest, write_manifest(folder))
    elif manifest == "removed":  # as a checkpoint written before manifests
        (folder / MANIFEST).unlink()
        _re_sign(newest, None)

    state, used, skips = _resume([newest, first])
    assert not marker.exists()  # nothing ran
    assert used == first and state.step == 1
    assert all(torch.equal(state.model.state_dict()[k], v) for k, v in weights.items())
    assert len(skips) == 1 and "\n" not in skips[0] and "0000002.pt" in skips[0]
    if manifest == "stale":
        assert ".metadata does not match its sha256" in skips[0]
    else:
        assert "this file needs code to load: pass trust_checkpoint=true" in skips[0]


def test_trust_checkpoint_unpickles_the_metadata_in_full(checkpoints, tmp_path):
    first, newest, _ = checkpoints
    folder, marker = shards_folder(newest), tmp_path / "ran"
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    _re_sign(newest, write_manifest(folder))
    _, used, skips = _resume([newest, first], trust=True)
    assert marker.exists()  # trusted: the full unpickler ran it
    assert used == first and "holds no checkpoint metadata" in skips[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[64:-64] = os.urandom(len(data) - 128)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, manifest",
    [(_truncate, True), (_garbage, True), (_truncate, False)],
    ids=["truncated", "garbage", "truncated-without-manifest"],
)
def test_a_broken_shard_falls_back_in_one_line(checkpoints, damage, manifest):
    first, newest, weights = checkpoints
    folder = shards_folder(newest)
    if not manifest:
        (folder / MANIFEST).unlink()
        _re_sign(newest, None)
    damage(next(folder.glob("*.distcp")))
    state, used, skips = _resume([newest, first])
    assert used == first and state.step == 1
    assert all(torch.equal(state.model.state_dict()[k], v) for k, v in weights.items())
    assert len(skips) == 1 and "\n" not in skips[0] and "0000002.pt" in skips[0]
    expected = "does not match its sha256" if manifest else "cannot be read"
    assert expected in skips[0]


def test_a_missing_shard_is_named(checkpoints):
    first, newest, _ = checkpoints
    shard = next(shards_folder(newest).glob("*.distcp"))
    shard.unlink()
    _, used, skips = _resume([newest, first])
    assert used == first and f"is incomplete: no {shard.name}" in skips[0]


def test_a_sharded_checkpoint_holding_nan_is_refused_like_a_corrupt_one(tmp_path):
    """A NaN in the optimizer state of the shards, with valid checksums throughout (as a silent
    bit flip before hashing would leave it): resuming falls back to the previous checkpoint."""
    state = _state(seed=0)
    _train_one_step(state)
    first = state.save(tmp_path / "0000001.pt", [get_rng_state()])
    weights = {k: v.clone() for k, v in state.model.state_dict().items()}
    _train_one_step(state)
    next(iter(state.optimizer.state.values()))["exp_avg_sq"].fill_(float("nan"))
    poisoned = state.save(tmp_path / "0000002.pt", [get_rng_state()])
    assert torch.isfinite(load_checkpoint(poisoned)["ema"]["weight"]).all()  # the .pt is clean

    restored, used, skips = _resume([poisoned, first])
    assert used == first and restored.step == 1
    assert all(torch.equal(restored.model.state_dict()[k], v) for k, v in weights.items())
    assert "holds non-finite values (NaN/inf in opt." in skips[0] and "exp_avg_sq" in skips[0]
