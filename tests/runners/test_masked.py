"""The masked backbones from YAML through every phase on tiny models: train (across MaskDiT's switch
to unmasked training), exact resume, inference, sample, export; and two processes under torchrun
computing the update of one under DDP and FSDP (the masks are drawn per sample, whatever the
number of ranks)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.models import load_checkpoint
from speed.runners.extract import extract
from speed.runners.inference import inference
from speed.runners.sample import sample
from speed.runners.train import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs/image/animals"
MAIN = str(Path(__file__).resolve().parents[2] / "main.py")
TINY = {
    "maskdit.yaml": [
        "model.hidden_size=32",
        "model.depth=2",
        "model.num_heads=2",
        "model.decoder_hidden_size=16",
        "model.decoder_depth=1",
        "model.decoder_num_heads=2",
        "model.unmask_at_step=3",  # steps 0-2 masked, step 3 unmasked
    ],
    "mdt.yaml": ["model.hidden_size=32", "model.depth=4", "model.num_heads=2"],
}


@pytest.fixture(params=sorted(TINY))
def masked(request, tiny_overrides):
    """(config path, fn(run, steps) -> overrides) of a tiny masked backbone."""
    name = request.param
    return str(CONFIGS / name), lambda run, steps=2: tiny_overrides(run, steps) + TINY[name]


def test_every_phase_and_exact_resume(tmp_path, masked, main, single_thread):
    config, overrides = masked
    straight = train(load_config(config, "train", overrides(tmp_path / "a", steps=4)))
    train(load_config(config, "train", overrides(tmp_path / "b", steps=2)))
    resumed = train(
        load_config(config, "train", overrides(tmp_path / "b", steps=4) + ["resume=true"])
    )
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert "mask_token" in a["model"]
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"

    run = tmp_path / "a"
    npz = inference(load_config(config, "inference", overrides(run, steps=4)))
    assert npz.is_file()
    assert sample(load_config(config, "sample", overrides(run, steps=4))).is_file()
    assert main(["-c", config, "-p", "export", *overrides(run, steps=4)]) == 0
    assert (run / "export/0000004.onnx").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one(tmp_path, masked, strategy):
    config, overrides = masked
    common = ["data.random_flip=false", "sample_every=0"]
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", config, "-p", "train", *overrides(run, steps=4), *common, "data.batch_size=2",
        f"strategy={strategy}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(run / "train/checkpoints/0000004.pt")
    single = overrides(tmp_path / "single", steps=4) + common  # batch 4 in one process
    reference = load_checkpoint(train(load_config(config, "train", single)))
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(state["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


@pytest.mark.slow
def test_bf16_keeps_float32_weights_and_compile_matches_eager(tmp_path, masked, single_thread):
    """Mixed precision and torch.compile are settings of the run, not of the backbone: a masked
    model trains under bf16 autocast with float32 master weights, and compiled (the token mask
    an input of the graph) computes eager's update to rounding."""
    config, overrides = masked
    common = ["sample_every=0", "data.random_flip=false"]
    bf16 = load_checkpoint(
        train(
            load_config(config, "train", overrides(tmp_path / "bf16") + common + ["precision=bf16"])
        )
    )
    floats = {k: t for k, t in bf16["model"].items() if t.is_floating_point()}
    assert {t.dtype for t in floats.values()} == {torch.float32}  # MDT's int position index aside
    assert all(torch.isfinite(t).all() for t in floats.values())
    eager = load_checkpoint(train(load_config(config, "train", overrides(tmp_path / "e") + common)))
    compiled = overrides(tmp_path / "c") + common + ["compile=true"]
    weights = load_checkpoint(train(load_config(config, "train", compiled)))["model"]
    assert set(weights) == set(eager["model"])
    for name, tensor in eager["model"].items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-4, rtol=0, msg=name)


def test_training_on_a_latent_cache(tmp_path, masked, tiny_vae_dir, single_thread):
    """`-p extract` writes the VAE latents once; a masked backbone then trains on the cache
    (4 latent channels, 8 x 8 latents: 4 tokens of patch 4) like a DiT does."""
    from PIL import Image

    config, overrides = masked
    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / f"images/class{c}").mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / f"images/class{c}/{i}.png")
    run = tmp_path / "run"
    images = (
        f"{{_target_: speed.data.ImageFolderDataset, path: {tmp_path / 'images'}, image_size: 16}}"
    )
    vae = f"{{_target_: speed.autoencoders.SDVAE, path: {tiny_vae_dir}}}"
    latent = [f"autoencoder={vae}", "data.batch_size=3"]
    folder = extract(load_config(config, "extract", overrides(run) + [f"data={images}", *latent]))
    cache = ["data._target_=speed.data.LatentCacheDataset", f"data.path={folder}"]
    steps = ["sample_every=0", "max_training_steps=2", "ckpt_every=2"]
    state = load_checkpoint(
        train(load_config(config, "train", overrides(run) + cache + latent + steps))
    )
    assert state["step"] == 2
    assert state["data_spec"] == {"channels": 4, "side": 8, "num_classes": 2}
    assert "mask_token" in state["model"]
