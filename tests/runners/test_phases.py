"""Smoke runs of every phase on a tiny config: each writes the files of a run's layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from speed.config import ConfigError, load_config
from speed.models import load_checkpoint
from speed.runners.inference import inference
from speed.runners.sample import sample
from speed.runners.train import train


def test_train_inference_sample_write_every_file(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    last = train(load_config(demo_config, "train", tiny_overrides(run)))
    ckpts = sorted(p.name for p in (run / "train/checkpoints").iterdir())
    assert ckpts == ["0000001.pt", "0000001.pt.sha256", "0000002.pt", "0000002.pt.sha256"]
    assert last.name == "0000002.pt"
    assert (run / "train/config.yaml").is_file()
    assert (run / "train/samples/0000002.png").is_file()
    assert any((run / "train/logs/tensorboard").iterdir())
    state = torch.load(last, map_location="cpu", weights_only=True)  # safe to unpickle
    assert {"model", "ema", "opt", "step", "rng", "config"} <= set(state)
    assert state["step"] == 2

    npz_path = inference(load_config(demo_config, "inference", tiny_overrides(run)))
    assert npz_path == run / "inference/0000002.npz"
    data = np.load(npz_path)
    assert data["arr_0"].shape == (6, 28, 28, 3) and data["arr_0"].dtype == np.uint8
    assert data["arr_1"].tolist() == [0, 3, 0, 3, 0, 3]
    pngs = sorted((run / "inference/0000002").glob("*.png"))
    assert len(pngs) == 6
    assert np.array_equal(np.asarray(Image.open(pngs[1]).convert("RGB")), data["arr_0"][1])
    assert (run / "inference/config.yaml").is_file()

    grid_path = sample(load_config(demo_config, "sample", tiny_overrides(run)))
    assert grid_path == run / "sample/0000002.png"
    grid = np.asarray(Image.open(grid_path))
    # 2 rows (classes) x 3 seeds of 28 px tiles with 2 px padding, enlarged 3x for viewing
    assert grid.shape == (3 * (2 * 30 + 2), 3 * (3 * 30 + 2))
    assert (run / "sample/config.yaml").is_file()

    extras = ["guidance_scale=[1,4]", "denoise_strip=true"]
    pair_path = sample(load_config(demo_config, "sample", tiny_overrides(run) + extras))
    assert pair_path == run / "sample/0000002-guidance_scale=_1,4_.png"  # beside the first
    pair = np.asarray(Image.open(pair_path))
    assert pair.shape[1] == 2 * (grid.shape[1] + 8)  # two captioned grids side by side
    strip = np.asarray(Image.open(run / "sample/0000002-guidance_scale=_1,4_-denoising.png"))
    assert strip.shape[0] == grid.shape[0]  # one row per class, snapshots across


def test_resume_is_the_same_run(tmp_path, demo_config, tiny_overrides):
    straight = train(load_config(demo_config, "train", tiny_overrides(tmp_path / "a", steps=4)))
    half = tiny_overrides(tmp_path / "b", steps=2)
    train(load_config(demo_config, "train", half))
    resumed = train(
        load_config(demo_config, "train", tiny_overrides(tmp_path / "b", steps=4) + ["resume=true"])
    )
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def test_fresh_run_refuses_a_used_experiment_dir(tmp_path, demo_config, tiny_overrides):
    overrides = tiny_overrides(tmp_path / "run", steps=1)
    train(load_config(demo_config, "train", overrides))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(load_config(demo_config, "train", overrides))
    train(load_config(demo_config, "train", overrides + ["overwrite=true"]))


def test_dit_variant_trains_and_samples(tmp_path, dit_config, tiny_overrides, tiny_dit):
    run = tmp_path / "dit"
    overrides = tiny_overrides(run, steps=1) + tiny_dit + ["sample_classes=[1]"]
    last = train(load_config(dit_config, "train", overrides))
    assert set(load_checkpoint(last)["model"]) >= {"x_embedder.proj.weight", "pos_embed"}
    grid = sample(load_config(dit_config, "sample", overrides))
    assert grid.is_file()


def _final_weights(cfg):
    return load_checkpoint(train(cfg))["model"]


def test_grad_accumulation_equals_the_full_batch(tmp_path, dit_config, tiny_overrides, tiny_dit):
    # The tiny DiT, for the reason given in tests/runners/test_distributed.py.
    common = [*tiny_dit, "data.random_flip=false", "log_every=2", "sample_every=0"]
    full = tiny_overrides(tmp_path / "full", steps=2) + common + ["data.batch_size=8"]
    accum = tiny_overrides(tmp_path / "acc", steps=2) + common + ["grad_accum=2"]
    a = _final_weights(load_config(dit_config, "train", full))
    b = _final_weights(load_config(dit_config, "train", accum))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)


def test_bf16_autocast_trains_on_cpu(tmp_path, demo_config, tiny_overrides):
    overrides = tiny_overrides(tmp_path / "bf16", steps=1) + ["precision=bf16", "sample_every=0"]
    weights = _final_weights(load_config(demo_config, "train", overrides))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())


def test_inference_never_reuses_images_of_other_settings(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    train(load_config(demo_config, "train", tiny_overrides(run, steps=1) + ["sample_every=0"]))
    inference(load_config(demo_config, "inference", tiny_overrides(run, steps=1)))
    changed = tiny_overrides(run, steps=1) + ["num_steps=2"]
    beside = inference(load_config(demo_config, "inference", changed))  # its own output
    assert beside == run / "inference/0000001-num_steps=2.npz"
    assert sorted(p.name for p in (run / "inference/0000001-num_steps=2").glob("*.png")) == [
        f"{i:06d}.png" for i in range(6)
    ]  # drawn, not reused from 0000001/
    npz = inference(load_config(demo_config, "inference", changed + ["overwrite=true"]))
    assert npz == run / "inference/0000001.npz" and np.load(npz)["arr_0"].shape[0] == 6


def test_resuming_with_another_architecture_names_the_keys(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    train(load_config(demo_config, "train", tiny_overrides(run, steps=1) + ["sample_every=0"]))
    wider = tiny_overrides(run, steps=2) + ["resume=true", "model.model_channels=64"]
    with pytest.raises(ConfigError, match=r"differs .*: model.model_channels \(32 -> 64\)"):
        train(load_config(demo_config, "train", wider))
    # named as a change, the weights still have to fit the model
    fits = r"does not fit the configured model \(UNetModel\): .*shape"
    with pytest.warns(UserWarning, match="resume: changing model.model_channels"):
        with pytest.raises(ConfigError, match=fits):
            train(load_config(demo_config, "train", wider + ["resume_changes=[model]"]))


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, dit_config, tiny_overrides, tiny_dit):
    common = [*tiny_dit, "sample_every=0", "data.random_flip=false"]
    eager = _final_weights(
        load_config(dit_config, "train", tiny_overrides(tmp_path / "e") + common)
    )
    compiled = tiny_overrides(tmp_path / "c") + common + ["compile=true"]
    weights = _final_weights(load_config(dit_config, "train", compiled))
    assert set(weights) == set(eager)  # plain state-dict keys, no torch.compile prefix
    for name in eager:
        torch.testing.assert_close(weights[name], eager[name], atol=1e-4, rtol=0, msg=name)
