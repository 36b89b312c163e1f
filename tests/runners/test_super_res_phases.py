"""Super-resolution from YAML on a tiny SuperResUNet: train (with SpeeD's timesteps and weights),
exact resume, `-p sample` from held-out data and from a folder, `-p inference` writing references
and the bicubic floor beside the samples."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_fsdp import torchrun  # tests/runners
from tests_paths import REPO  # tests/runners

from speed.app.studio import RunStudio
from speed.config import ConfigError, load_config
from speed.data.degradation import bicubic_resize
from speed.models import SuperResUNet, load_checkpoint
from speed.runners.build import build_dataset
from speed.runners.inference import inference
from speed.runners.sample import sample
from speed.runners.train import train
from speed.serve.engine import Engine
from speed.utils.images import to_uint8

CONFIG = str(REPO / "configs/image/animals/super_res.yaml")


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


def overrides(run, steps=2):
    return [
        f"experiment_dir={run}", f"max_training_steps={steps}", "ckpt_every=1", "log_every=1",
        "warmup_steps=0", "data.batch_size=4", "data.held_out=6", "num_samples=4",
        "per_proc_batch_size=3", "num_steps=2", "num_sample_seeds=2", "diffusion.faster=true",
        "model.channel_mult=[1,2]", "model.attention_resolutions=[]", "wandb=disabled",
    ]  # fmt: skip


def test_train_sample_and_inference(tmp_path, capsys):
    run = tmp_path / "run"
    last = train(load_config(CONFIG, "train", overrides(run)))
    summary = capsys.readouterr().out
    assert "sampling=speed (k=5" in summary and "weighting=speed (lam=0.6" in summary  # SpeeD
    state = load_checkpoint(last)
    assert state["model"]["input_blocks.0.0.weight"].shape == (32, 2, 3, 3)  # [x, low_res]
    assert state["model"]["out.2.weight"].shape == (1, 32, 3, 3)

    grid = np.asarray(Image.open(sample(load_config(CONFIG, "sample", overrides(run)))))
    # 2 held-out rows x (low-res | bicubic | sample | reference), 28 px tiles, enlarged 3x
    assert grid.shape == (3 * (2 * 30 + 2), 3 * (4 * 30 + 2))
    assert sorted(p.name for p in (run / "sample/0000002").iterdir()) == [
        "held_out_000000.png",
        "held_out_000001.png",
    ]

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(np.full((14, 14), 200, np.uint8)).save(inputs / "dog.png")
    path = sample(load_config(CONFIG, "sample", overrides(run) + [f"low_res={inputs}"]))
    assert np.asarray(Image.open(path)).shape == (3 * (30 + 2), 3 * (3 * 30 + 2))  # no reference
    assert np.asarray(Image.open(path.with_suffix("") / "dog.png")).shape == (28, 28)

    npz = inference(load_config(CONFIG, "inference", overrides(run)))
    folder = npz.with_suffix("")
    pairs = build_dataset(load_config(CONFIG, "inference", overrides(run)), split="held_out")
    items = [pairs[i] for i in range(4)]
    reference = np.load(folder / "reference.npz")["arr_0"]
    bicubic = np.load(folder / "bicubic.npz")["arr_0"]
    assert np.load(npz)["arr_0"].shape == reference.shape == (4, 28, 28, 3)
    expected = to_uint8(torch.stack([x for x, _ in items]))
    assert np.array_equal(reference, np.repeat(expected, 3, axis=3))
    low = torch.stack([c["low_res"] for _, c in items])
    assert np.array_equal(bicubic[..., :1], to_uint8(bicubic_resize(low, 28)))
    printed = capsys.readouterr().out
    assert "4 held-out pairs" in printed and "bicubic" in printed

    # The service and the page give a model no low-res input: one line each (the export
    # takes one: tests/runners/test_export_conditions.py).
    for consumer, build in (
        ("the service", lambda: Engine(run)),
        ("the page", lambda: RunStudio(run)),
    ):
        with pytest.raises(
            ConfigError, match=f"{consumer}: .* is a SuperResUNet, which also needs low_res"
        ):
            build()


def test_resume_is_the_same_run(tmp_path):
    straight = train(load_config(CONFIG, "train", overrides(tmp_path / "a", steps=4)))
    train(load_config(CONFIG, "train", overrides(tmp_path / "b", steps=2)))
    resumed = train(
        load_config(CONFIG, "train", overrides(tmp_path / "b", steps=4) + ["resume=true"])
    )
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def test_training_grids_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="sample_every: training grids draw class rows"):
        train(load_config(CONFIG, "train", overrides(tmp_path) + ["sample_every=1"]))


def test_guidance_gives_both_halves_the_low_res_image():
    """A class-conditional upsampler under classifier-free guidance: eps_uncond + s (eps_cond -
    eps_uncond), each half computed on the same low-res image."""
    torch.manual_seed(0)
    model = SuperResUNet(
        image_size=8, in_channels=1, model_channels=32, channel_mult=(1,),
        attention_resolutions=(), num_classes=2, class_dropout_prob=0.1,
    ).eval()  # fmt: skip
    x, low, t = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4), torch.tensor([3, 3])
    with torch.no_grad():
        guided = model.forward_with_cfg(
            torch.cat([x, x]), t, torch.tensor([0, 2]), 3.0, low_res=torch.cat([low, low])
        )
        cond = model(x, t[:1], torch.tensor([0]), low_res=low)
        uncond = model(x, t[:1], torch.tensor([2]), low_res=low)
    channels = model.guided_channels
    expected = uncond[:, :channels] + 3.0 * (cond[:, :channels] - uncond[:, :channels])
    torch.testing.assert_close(guided[:1, :channels], expected)
    torch.testing.assert_close(guided[1:, :channels], expected)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_equal_one_process(tmp_path, strategy):
    """The pairs' low-res images travel with their items: two ranks with half the batch each
    compute one process's update (to reduction-order rounding) under DDP and FSDP. Behind the
    UNet's zero-initialised output convs the first gradients are ~1e-9, where AdamW's
    m / (sqrt(v) + eps) would blow rounding up to the learning rate; eps=1 makes the update
    linear in the gradient, so rounding stays rounding."""
    common = ["data.dataset.random_flip=false", "global_batch_size=4", "data.batch_size=2"]
    common += ["optimizer.eps=1.0"]
    torchrun(CONFIG, overrides(tmp_path / "two", steps=2) + common + [f"strategy={strategy}"])
    two = load_checkpoint(tmp_path / "two/train/checkpoints/0000002.pt")
    one = load_checkpoint(train(load_config(CONFIG, "train", overrides(tmp_path / "one") + common)))
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


def test_bf16_trains_with_float32_master_weights(tmp_path):
    state = load_checkpoint(
        train(load_config(CONFIG, "train", overrides(tmp_path / "bf16") + ["precision=bf16"]))
    )
    floats = [t for t in state["model"].values() if t.is_floating_point()]
    assert {t.dtype for t in floats} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in floats)
