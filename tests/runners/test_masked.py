"""The masked backbones from YAML through every phase on tiny models: train (across MaskDiT's switch
to unmasked training), exact resume, inference, sample, export; and two processes under torchrun
computing the update of one under DDP and FSDP (the masks are drawn per sample, whatever the
number of ranks)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speed.config import load_config
from speed.models import load_checkpoint
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
