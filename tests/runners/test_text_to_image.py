"""Text-to-image from YAML on tiny models: the demo config (byte tokens, a text transformer
trained with the model) trains and resumes exactly; a tiny T5 on a captioned image folder trains
through the real loading path; the SpeeD variant composes; sample grids have a row per prompt and
inference stores each image's prompt."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from speed.config import load_config
from speed.data.captions import read_captions
from speed.errors import ConfigError
from speed.models import load_checkpoint
from speed.runners.build import build_autoencoder, build_sampling_model
from speed.runners.inference import inference
from speed.runners.sample import sample
from speed.runners.train import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs/image/animals_text"
MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


@pytest.fixture
def overrides(tiny_overrides, tiny_text):
    return lambda run, steps=2: tiny_overrides(run, steps) + tiny_text


def test_demo_trains_and_resumes_exactly(tmp_path, overrides, single_thread):
    config = str(CONFIGS / "base.yaml")
    straight = train(load_config(config, "train", overrides(tmp_path / "a", steps=4)))
    train(load_config(config, "train", overrides(tmp_path / "b", steps=2)))
    resumed = train(
        load_config(config, "train", overrides(tmp_path / "b", steps=4) + ["resume=true"])
    )
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert "text_encoder.token_embedding.weight" in a["model"]
    assert "y_embedder.y_embedding" in a["model"]
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    first = load_checkpoint(tmp_path / "a/train/checkpoints/0000001.pt")
    moved = first["model"]["text_encoder.token_embedding.weight"]
    assert not torch.equal(moved, a["model"]["text_encoder.token_embedding.weight"])


def test_faster_variant_composes():
    cfg = load_config(str(CONFIGS / "faster.yaml"), "train", [])
    assert cfg.diffusion.faster is True
    assert cfg.model._target_ == "speed.models.pixart.build_pixart"
    assert cfg.text_encoder._target_ == "speed.text.ByteTokens"


@pytest.fixture
def captioned_folder(tmp_path, tokenizer_captions):
    folder = tmp_path / "images"
    folder.mkdir()
    lines = []
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        lines.append(json.dumps({"file": f"{i}.png", "captions": tokenizer_captions[: 1 + i % 3]}))
    (tmp_path / "captions.jsonl").write_text("\n".join(lines))
    return folder, tmp_path / "captions.jsonl"


def folder_config(tmp_path, folder, captions, encoder_dir) -> str:
    """A tiny PixArt + T5 config on a captioned folder, written beside a copy of
    configs/base.yaml (so that it merges over the defaults)."""
    text = f"""
data: {{_target_: speed.data.CaptionedImageFolder, path: {folder}, captions: {captions},
       image_size: 8, batch_size: 2}}
model: {{_target_: speed.models.pixart.build_pixart, name: PixArt-S/2, hidden_size: 32, depth: 2,
        num_heads: 2}}
text_encoder: {{_target_: speed.text.T5TextEncoder, path: {encoder_dir}, max_length: 6}}
diffusion: {{learn_sigma: false}}
"""
    (tmp_path / "configs").mkdir()
    shutil.copy(CONFIGS.parents[1] / "base.yaml", tmp_path / "configs/base.yaml")
    path = tmp_path / "configs/t5.yaml"
    path.write_text(text)
    return str(path)


def test_t5_conditioned_training_on_a_caption_folder(
    tmp_path, captioned_folder, tiny_t5_dir, tiny_overrides, single_thread
):
    config = folder_config(tmp_path, *captioned_folder, tiny_t5_dir)
    args = tiny_overrides(tmp_path / "run", 2) + ["sample_every=0", "data.batch_size=2"]
    state = load_checkpoint(train(load_config(config, "train", args)))
    assert state["model"]["y_embedder.y_proj.fc1.weight"].shape == (32, 16)  # T5 width 16
    assert state["model"]["y_embedder.y_embedding"].shape == (6, 16)  # max_length tokens
    assert not any(k.startswith("text_encoder.") for k in state["model"])  # frozen: not saved


def test_text_encoder_and_captions_must_go_together(tmp_path, tiny_overrides, demo_config):
    args = tiny_overrides(tmp_path / "run", 1) + ["text_encoder._target_=speed.text.ByteTokens"]
    with pytest.raises(ConfigError, match="has no captions"):
        train(load_config(demo_config, "train", args))


def test_sample_and_inference_draw_the_prompts(tmp_path, overrides, single_thread):
    config = str(CONFIGS / "base.yaml")
    run = tmp_path / "run"
    train(load_config(config, "train", overrides(run, steps=1)))
    prompts = ["a cat left of a zebra", "a dog left of a horse"]
    args = overrides(run, steps=1) + [f"prompts={json.dumps(prompts)}", "num_sample_seeds=2"]
    grid = sample(load_config(config, "sample", args))
    picture = np.asarray(Image.open(grid))
    rows_only = sample(load_config(config, "sample", args + ["guidance_scale=1.0"]))
    assert picture.shape[0] == np.asarray(Image.open(rows_only)).shape[0]
    tiles = 2 * 56 + 3 * 2  # two 56 px tiles and make_grid's 2 px padding
    assert picture.shape[0] == tiles  # one row per prompt
    assert picture.shape[1] > tiles + 6 * len(prompts[0])  # the prompts written to the left
    assert (picture[:, : picture.shape[1] - tiles] < 128).any()  # some ink in the caption column
    record = json.loads(grid.with_suffix(".json").read_text())
    assert record["prompts"] == prompts

    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(prompts + ["an elephant left of a bear"]) + "\n")
    args = overrides(run, steps=1) + [f"prompts_file={prompt_file}", "num_samples=4"]
    npz = inference(load_config(config, "inference", args))
    data = np.load(npz)
    assert data["arr_0"].shape == (4, 56, 56, 3) and "arr_1" not in data
    assert data["prompts"].tolist() == [*prompts, "an elephant left of a bear", prompts[0]]
    folder = npz.with_suffix("")
    assert read_captions(folder / "prompts.jsonl") == {
        f"{i:06d}.png": [text] for i, text in enumerate(data["prompts"].tolist())
    }


def test_a_text_model_without_prompts_says_how_to_give_them(tmp_path, overrides, single_thread):
    config = str(CONFIGS / "base.yaml")
    run = tmp_path / "run"
    train(load_config(config, "train", overrides(run, steps=1)))
    with pytest.raises(ConfigError, match="prompts_file="):
        sample(load_config(config, "sample", overrides(run, steps=1) + ["prompts=null"]))


def test_extract_then_train_on_the_captioned_cache(
    tmp_path, overrides, tiny_overrides, tiny_text, main, single_thread
):
    config = str(CONFIGS / "base.yaml")
    run = tmp_path / "run"
    extract = [*overrides(run), "data.image_size=8", "model.patch_size=4"]
    assert main(["-c", config, "-p", "extract", *extract]) == 0
    cache = ["data._target_=speed.data.LatentCacheDataset", f"data.path={run / 'latents'}"]
    model = [k for k in tiny_text if k.startswith("model.")] + ["model.patch_size=4"]
    args = tiny_overrides(run, 2) + model + cache
    state = load_checkpoint(train(load_config(config, "train", args)))
    assert state["model"]["x_embedder.proj.weight"].shape[-1] == 4  # 8 px images, patch 4
    assert "text_encoder.token_embedding.weight" in state["model"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one(tmp_path, overrides, strategy):
    """The captions each sample gets, its caption dropout and its noise do not depend on how the
    global batch is split, so two ranks of 2 compute the update of one process of 4."""
    config = str(CONFIGS / "base.yaml")
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", config, "-p", "train", *overrides(run, steps=3), "sample_every=0",
        "data.batch_size=2", f"strategy={strategy}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(run / "train/checkpoints/0000003.pt")
    single = overrides(tmp_path / "single", steps=3) + ["sample_every=0"]
    reference = load_checkpoint(train(load_config(config, "train", single)))
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(state["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


def test_bf16_training_step_is_finite(tmp_path, overrides, single_thread):
    config = str(CONFIGS / "base.yaml")
    args = overrides(tmp_path / "run", steps=2) + ["precision=bf16", "sample_every=0"]
    state = load_checkpoint(train(load_config(config, "train", args)))
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_label_only_callers_refuse_a_text_model_in_one_line(tmp_path, overrides):
    """A caller that builds the model without its text encoder (a benchmark drawing labels) is
    refused (the export phase takes captions: tests/runners/test_export_conditions.py)."""
    config = str(CONFIGS / "base.yaml")
    run = tmp_path / "run"
    train(load_config(config, "train", overrides(run, steps=1) + ["sample_every=0"]))
    cfg = load_config(config, "sample", overrides(run, steps=1))
    with pytest.raises(ConfigError, match="draws class labels only"):
        build_sampling_model(cfg, build_autoencoder(cfg), torch.device("cpu"))


def test_the_cache_stores_t5_embeddings_and_training_reads_them(
    tmp_path, captioned_folder, tiny_t5_dir, tiny_overrides, main, monkeypatch, single_thread
):
    from speed.data import LatentCacheDataset
    from speed.text import T5TextEncoder

    config = folder_config(tmp_path, *captioned_folder, tiny_t5_dir)
    run = tmp_path / "run"
    assert main(["-c", config, "-p", "extract", *tiny_overrides(run, 2)]) == 0
    cache = LatentCacheDataset(str(run / "latents"))
    encoder = T5TextEncoder(str(tiny_t5_dir), max_length=6)
    assert cache.caption_encoder == encoder.identity
    items, picks = [0, 1, 2, 3, 2], [0, 1, 2, 0, 1]
    y, mask = cache.caption_embeddings(items, picks)
    expected = encoder.condition([cache.captions(i)[k] for i, k in zip(items, picks)], "cpu")
    torch.testing.assert_close(y, expected["y"], atol=2e-3, rtol=2e-3)  # stored as float16
    assert torch.equal(mask, expected["mask"])

    def no_encoder(*args, **kwargs):
        raise AssertionError("training ran the text encoder despite the cached embeddings")

    monkeypatch.setattr(T5TextEncoder, "condition", no_encoder)
    latents = ["data._target_=speed.data.LatentCacheDataset", f"data.path={run / 'latents'}"]
    args = tiny_overrides(run, 2) + ["sample_every=0", "data.batch_size=2"] + latents
    state = load_checkpoint(train(load_config(config, "train", args)))
    assert state["model"]["y_embedder.y_embedding"].shape == (6, 16)
