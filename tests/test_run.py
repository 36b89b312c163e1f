"""speed.run: a run's folders, checkpoint naming and retention, phase states, the training state a
checkpoint holds; with speed.utils.atomic's writes and speed.models' weight loader."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from speed import run as run_files
from speed.config import ConfigError, config_to_yaml, load_config
from speed.diffusion import create_diffusion
from speed.errors import DataError, MissingFileError
from speed.models import extract_state_dict, load_checkpoint, load_pretrained
from speed.run import DONE, NEW, RESUME, RunDir, TrainState, phase_state
from speed.run.outputs import image_settings, npz_provenance, provenance_entry
from speed.utils.atomic import atomic_path, atomic_write
from speed.utils.seeding import get_rng_state

# ---- atomic writes ----


def test_atomic_save_replaces_whole_file(tmp_path):
    path = tmp_path / "0000010.pt"
    atomic_write(path, {"step": 1})
    atomic_write(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000010.pt"]


def test_atomic_write_text_bytes_and_a_path_writer(tmp_path):
    assert atomic_write(tmp_path / "a/b.json", '{"x": 1}\n').read_text() == '{"x": 1}\n'
    assert atomic_write(tmp_path / "c.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    with atomic_path(tmp_path / "d.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, arr_0=np.arange(3))
    assert np.load(tmp_path / "d.npz")["arr_0"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.bin", "d.npz"]


def test_failed_write_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "0000010.pt"
    atomic_write(path, {"w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["0000010.pt"]


def test_failed_writer_block_leaves_the_old_text_and_no_temp_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    atomic_write(path, "old: 1\n")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(path) as tmp:
            tmp.write_text("new: ")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.yaml"]


def test_process_killed_mid_write_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "0000010.pt"
    atomic_write(path, {"w": torch.ones(3)})
    script = (
        "import torch, sys\n"
        "from speed.utils.atomic import atomic_write\n"
        "atomic_write(sys.argv[1], {'w': torch.zeros(60_000_000)})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=os.getcwd())
    deadline = time.time() + 60
    while not list(tmp_path.glob(".*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(path)  # old or new, never truncated
    assert state["w"].numel() in (3, 60_000_000)
    assert run_files.latest_checkpoint(tmp_path) == path


# ---- folders and checkpoints ----


def test_run_dir_layout(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoint(5000) == tmp_path / "train/checkpoints/0005000.pt"
    assert run.config_file("train") == tmp_path / "train/config.yaml"
    assert run.config_file("extract") == tmp_path / "latents/config.yaml"
    assert run.logs == tmp_path / "train/logs"
    assert run.metrics_file == tmp_path / "train/logs/metrics.jsonl"
    assert run.training_grid(100) == tmp_path / "train/samples/0000100.png"
    assert run.inference_images("0005000") == tmp_path / "inference/0005000"
    assert run.inference_npz("0005000") == tmp_path / "inference/0005000.npz"
    assert run.sample_grid("0005000", "-denoising") == tmp_path / "sample/0005000-denoising.png"
    assert run.curve_results("domain_n4") == tmp_path / "curve/domain_n4.json"
    assert run.config_file("export") == tmp_path / "export/config.yaml"
    assert run.onnx_file("0005000") == tmp_path / "export/0005000.onnx"
    assert run.onnx_manifest("0005000") == tmp_path / "export/0005000.json"
    assert run.curve_run("domain_n4").inference_npz("0000002") == (
        tmp_path / "curve/domain_n4/inference/0000002.npz"
    )
    assert RunDir.of(OmegaConf.create({"experiment_dir": str(tmp_path)})) == run


def test_latest_and_prune(tmp_path):
    for step in (100, 200, 300, 400, 500):
        atomic_write(tmp_path / run_files.checkpoint_name(step), {"step": step})
    (tmp_path / ".0000600.pt.abc.tmp").write_bytes(b"partial")
    assert run_files.latest_checkpoint(tmp_path).name == "0000500.pt"
    assert run_files.checkpoint_step(run_files.latest_checkpoint(tmp_path)) == 500
    deleted = run_files.prune_checkpoints(tmp_path, keep=2, keep_every=200)
    assert sorted(p.name for p in deleted) == ["0000100.pt", "0000300.pt"]
    kept = [p.name for p in run_files.list_checkpoints(tmp_path)]
    assert kept == ["0000200.pt", "0000400.pt", "0000500.pt"]
    assert run_files.latest_checkpoint(tmp_path / "none") is None


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def _cfg(tmp_path, **keys):
    base = {"experiment_dir": str(tmp_path), "max_training_steps": 4, "ckpt_path": None}
    base.update(resume=False, seed=0)
    return OmegaConf.create({**base, **keys})


def test_resume_and_claim(tmp_path):
    run = RunDir(tmp_path)
    assert run_files.resume_checkpoint(_cfg(tmp_path, resume=True)) is None
    run_files.claim_train_dir(run, overwrite=False)
    atomic_write(run.checkpoint(2), {"step": 2})
    assert run_files.resume_checkpoint(_cfg(tmp_path, resume=True)) == run.checkpoint(2)
    assert run_files.resume_checkpoint(_cfg(tmp_path, resume=False)) is None
    with pytest.raises(MissingFileError, match="resume: no checkpoint at"):
        run_files.resume_checkpoint(_cfg(tmp_path, resume=str(tmp_path / "x.pt")))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run_files.claim_train_dir(run, overwrite=False)
    run_files.claim_train_dir(run, overwrite=True)
    assert run_files.list_checkpoints(run.checkpoints) == []


# ---- phase states ----


def test_train_phase_state(tmp_path):
    cfg, run = _cfg(tmp_path), RunDir(tmp_path)
    assert phase_state("train", cfg) == NEW
    atomic_write(run.checkpoint(2), {})
    assert phase_state("train", cfg) == RESUME
    atomic_write(run.checkpoint(4), {})
    assert phase_state("train", cfg) == DONE
    assert phase_state("sample", cfg) == NEW  # other phases always run


def _npz_of(path, cfg, ckpt):
    """An inference npz recording the provenance of `cfg` sampled from `ckpt`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, arr_0=np.zeros((1, 2, 2, 3), np.uint8), provenance=provenance_entry(
            npz_provenance(cfg, ckpt)
        ))  # fmt: skip


def test_inference_phase_state(tmp_path, demo_config):
    words = [f"experiment_dir={tmp_path}", "num_samples=6"]
    cfg, run = load_config(demo_config, "inference", words), RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        phase_state("inference", cfg)
    atomic_write(run.checkpoint(4), {})
    assert phase_state("inference", cfg) == NEW
    png_dir = run.inference_images("0000004")
    png_dir.mkdir(parents=True)
    (png_dir / "000000.png").write_bytes(b"")
    assert phase_state("inference", cfg) == NEW  # PNGs of an unknown config are not reused
    record = image_settings(cfg, run.checkpoint(4))
    atomic_write(png_dir / "settings.json", json.dumps(record))
    assert phase_state("inference", cfg) == RESUME
    atomic_write(run.inference_npz("0000004"), b"npz")  # an npz that records nothing: not done
    assert phase_state("inference", cfg) == RESUME
    _npz_of(run.inference_npz("0000004"), cfg, run.checkpoint(4))
    assert phase_state("inference", cfg) == DONE
    assert (
        phase_state("inference", load_config(demo_config, "inference", [*words, "seed=1"])) == NEW
    )
    atomic_write(run.checkpoint(6), {})
    assert phase_state("inference", cfg) == NEW  # a newer checkpoint to sample
    pinned = load_config(demo_config, "inference", [*words, f"ckpt_path={run.checkpoint(4)}"])
    assert phase_state("inference", pinned) == DONE


def test_a_smaller_npz_does_not_finish_a_larger_inference(tmp_path, demo_config):
    """The killed sweep: a run with num_samples=8 saved its config and drew some images, then
    died; the npz of an earlier num_samples=6 run is no reason to skip it."""
    words = [f"experiment_dir={tmp_path}", "num_samples=6"]
    small, run = load_config(demo_config, "inference", words), RunDir(tmp_path)
    large = load_config(demo_config, "inference", [*words, "num_samples=8"])
    atomic_write(run.checkpoint(4), {})
    _npz_of(run.inference_npz("0000004"), small, run.checkpoint(4))
    png_dir = run.inference_images("0000004")
    atomic_write(png_dir / "settings.json", json.dumps(image_settings(large, run.checkpoint(4))))
    (png_dir / "000000.png").write_bytes(b"")
    atomic_write(run.config_file("inference"), config_to_yaml(large))
    assert phase_state("inference", small) == DONE
    assert phase_state("inference", large) == RESUME
    atomic_write(run.checkpoint(4), {"retrained": 1})  # the same name, other bytes
    assert phase_state("inference", small) == NEW


# ---- the training state ----


def _train_state(seed: int, ema_rates=(0.9999, 0.99)) -> TrainState:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    emas = [nn.Linear(3, 2) for _ in ema_rates]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return TrainState(
        model=model,
        emas=emas,
        ema_rates=list(ema_rates),
        optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (s + 1)),
        scaler=torch.amp.GradScaler("cpu", init_scale=2.0**seed),
        timestep_sampler=create_diffusion("", sampling="clts").timestep_sampler,
        data_spec={"channels": 3, "side": 8, "num_classes": 4},
        config={"seed": seed},
    )


def _trained(seed: int) -> TrainState:
    state = _train_state(seed)
    for _ in range(2):
        state.model(torch.randn(4, 3)).square().mean().backward()
        state.optimizer.step()
        state.lr_scheduler.step()
    state.timestep_sampler.set_step(7)
    state.step, state.epoch, state.batches_in_epoch = 12, 3, 5
    state.train_seconds = 41.5
    return state


def _assert_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal(x, y)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b


def test_train_state_round_trip(tmp_path):
    saved = _trained(seed=1)
    rng = [get_rng_state(), get_rng_state()]  # two ranks
    path = saved.save(tmp_path / "0000012.pt", rng)
    expected_next = torch.rand(3), np.random.rand(2)  # the draws after the saved states

    restored = _train_state(seed=2)
    assert not torch.equal(restored.model.weight, saved.model.weight)
    restored.load(path, rank=1, world_size=2)
    assert torch.equal(torch.rand(3), expected_next[0])  # rank 1's RNG states restored
    assert np.array_equal(np.random.rand(2), expected_next[1])
    assert (restored.step, restored.epoch, restored.batches_in_epoch) == (12, 3, 5)
    assert restored.train_seconds == 41.5
    assert restored.timestep_sampler.state_dict() == {"step": 7}
    _assert_equal(restored.state_dict(rng), {**saved.state_dict(rng), "config": {"seed": 2}})
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {
        "model", "ema", "emas", "opt", "scaler", "lr_scheduler", "timestep_sampler", "step",
        "epoch", "batches_in_epoch", "train_seconds", "rng", "data_spec", "objective", "config",
        "experiment",
    }  # fmt: skip
    assert TrainState.stored_data_spec(ckpt) == {"channels": 3, "side": 8, "num_classes": 4}
    assert TrainState.stored_objective(ckpt) == "gaussian"
    _assert_equal(ckpt["ema"], saved.emas[0].state_dict())
    _assert_equal(ckpt["emas"]["0.99"], saved.emas[1].state_dict())


def test_train_state_new_ema_rate_starts_from_the_first_ema(tmp_path):
    path = _trained(seed=1).save(tmp_path / "a.pt", [get_rng_state()])
    restored = _train_state(seed=2, ema_rates=(0.9999, 0.5))
    restored.load(path)
    _assert_equal(restored.emas[1].state_dict(), load_checkpoint(path)["ema"])


def test_train_state_refuses_another_model(tmp_path):
    path = _trained(seed=1).save(tmp_path / "a.pt", [get_rng_state()])
    other = _train_state(seed=2)
    other.model = nn.Linear(3, 5)
    with pytest.raises(ConfigError, match=r"does not fit the configured model \(Linear\)"):
        other.load(path)


# ---- the weight loader ----


@pytest.fixture
def torch_loads(monkeypatch):
    """The weights_only flag of every torch.load call."""
    calls, real_load = [], torch.load

    def load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return calls


def filled(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def test_weight_loader_raw_state_dict(tmp_path, torch_loads):
    torch.save(filled(0.25).state_dict(), tmp_path / "raw.pt")
    model = load_pretrained(filled(0.0), tmp_path / "raw.pt")
    assert all(torch.all(p == 0.25) for p in model.parameters())
    assert torch_loads == [True]  # the safe unpickler was enough


def test_weight_loader_ema_bearing_dict(tmp_path, torch_loads):
    ckpt = {
        "model": filled(1.0).state_dict(),
        "ema": filled(2.0).state_dict(),
        "args": argparse.Namespace(model="DiT-XL/2"),  # as DiT's train.py saves
    }
    torch.save(ckpt, tmp_path / "dit.pt")
    assert all(
        torch.all(p == 2.0) for p in load_pretrained(filled(0), tmp_path / "dit.pt").parameters()
    )
    model = load_pretrained(filled(0.0), tmp_path / "dit.pt", use_ema=False)
    assert all(torch.all(p == 1.0) for p in model.parameters())
    assert torch_loads == [True, True]
    only_ema = {"ema": ckpt["ema"]}
    assert extract_state_dict(only_ema, use_ema=False) is only_ema["ema"]


def test_weight_loader_training_checkpoint(tmp_path, torch_loads):
    state = _trained(seed=1)
    path = state.save(tmp_path / "0000012.pt", [get_rng_state()])
    torch_loads.clear()
    model = load_pretrained(nn.Linear(3, 2), path)
    _assert_equal(model.state_dict(), state.emas[0].state_dict())
    assert torch_loads == [True]  # tensors and Python values only: the safe unpickler
    model = load_pretrained(nn.Linear(3, 2), path, use_ema=False)
    _assert_equal(model.state_dict(), state.model.state_dict())


def test_weight_loader_unpickles_other_objects_only_when_trusted(tmp_path, torch_loads):
    """Checkpoints of earlier versions kept numpy's RNG state as an array: refused in one line
    unless trusted, then loaded in full with a warning."""
    ckpt = {"model": filled(3.0).state_dict(), "rng": [{"numpy": np.random.get_state()}]}
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(DataError, match="trust_checkpoint=true"):
        load_pretrained(filled(0.0), tmp_path / "old.pt")
    assert torch_loads == [True]
    with pytest.warns(UserWarning, match="unpickling"):
        model = load_pretrained(filled(0.0), tmp_path / "old.pt", trust=True)
    assert all(torch.all(p == 3.0) for p in model.parameters())
    assert torch_loads == [True, True, False]


def test_weight_loader_rejects_a_file_without_weights(tmp_path):
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(DataError, match="holds a list, not a state dict"):
        load_pretrained(nn.Linear(3, 2), Path(tmp_path / "list.pt"))
