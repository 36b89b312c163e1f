"""Fixtures shared by every test folder: a tiny randomly initialised AutoencoderKL saved as a
local diffusers folder, tiny random T5 and CLIP text models with an offline-built tokenizer
(`tokenizer_captions` lists what it knows), the demo config (its UNet is already small), its DiT
variant and the text-to-image demo, shrunk to seconds-long runs writing into tmp_path,
`single_thread` for folders of tiny-tensor tests (their conftest makes it autouse), and for
metric tests a tiny deterministic feature extractor, its numpy twin and small random image
sets."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluations.features import FeatureExtractor, to_float_nchw
from speed.config import load_config
from speed.runners.train import train

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = str(REPO / "configs/image/animals/base.yaml")
DIT_CONFIG = str(REPO / "configs/image/animals/dit.yaml")
TINY_DIT = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2"]
TEXT_CONFIG = str(REPO / "configs/image/animals_text/base.yaml")
TINY_TEXT = [
    "model.hidden_size=32", "model.depth=2", "model.num_heads=2", "model.caption_channels=16",
    "model.text_depth=1", "model.text_heads=2", "data.num_pairs=64",
]  # fmt: skip
# What the tiny text encoders' word-level tokenizer is trained on.
TOKENIZER_CAPTIONS = ["a cat left of a zebra", "a dog", "an elephant right of a bear and a cow"]


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n auto`), each worker process takes an equal share of
    the cores for its intra-op threads, so N workers do not start N x cores threads."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """Folder of an AutoencoderKL with 2 blocks (downsample 2) and 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    folder = tmp_path_factory.mktemp("tiny_vae")
    vae.save_pretrained(folder)
    return folder


def save_tokenizer(folder, **special):
    """A word-level tokenizer trained on TOKENIZER_CAPTIONS (offline), saved as a fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokens = ["[PAD]", "[UNK]", "</s>", "<|startoftext|>", "<|endoftext|>"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=tokens)
    tokenizer.train_from_iterator(TOKENIZER_CAPTIONS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", **special)
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tokenizer_captions() -> list[str]:
    return list(TOKENIZER_CAPTIONS)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    """Folder of a tiny random T5 encoder (width 16) and its word-level tokenizer."""
    from transformers import T5Config, T5EncoderModel

    folder = tmp_path_factory.mktemp("tiny_t5")
    tokenizer = save_tokenizer(folder, pad_token="[PAD]", eos_token="</s>")
    config = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
        pad_token_id=tokenizer.pad_token_id, feed_forward_proj="gated-gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """Folder of a tiny random CLIP text model (width 16) and its word-level tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tmp_path_factory.mktemp("tiny_clip")
    tokenizer = save_tokenizer(folder, pad_token="[PAD]")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(folder)
    return folder


def _tiny_overrides(experiment_dir: Path, steps: int = 2) -> list[str]:
    return [
        f"experiment_dir={experiment_dir}",
        f"max_training_steps={steps}",
        "ckpt_every=1",
        "log_every=1",
        f"sample_every={steps}",
        "warmup_steps=0",
        "data.batch_size=4",
        "num_samples=6",
        "per_proc_batch_size=4",
        "num_steps=3",
        "train.num_steps=3",
        "num_sample_seeds=3",
        "sample_classes=[0,3]",
        "wandb=disabled",
    ]


@pytest.fixture(scope="session")
def demo_config() -> str:
    return DEMO_CONFIG


@pytest.fixture(scope="session")
def dit_config() -> str:
    """The demo's DiT variant; add `tiny_dit` to its overrides for a seconds-long run."""
    return DIT_CONFIG


@pytest.fixture(scope="session")
def tiny_dit() -> list[str]:
    """Overrides shrinking the DiT variant to 2 blocks of width 32."""
    return TINY_DIT


@pytest.fixture(scope="session")
def text_config() -> str:
    """The text-to-image demo (PixArt with byte tokens); add `tiny_text` to its overrides."""
    return TEXT_CONFIG


@pytest.fixture(scope="session")
def tiny_text() -> list[str]:
    """Overrides shrinking the text-to-image demo's PixArt and text transformer to width 32."""
    return TINY_TEXT


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory, text_config, tiny_text):
    """(run folder, its overrides): the tiny text-to-image demo trained for 2 steps
    (checkpoints 0000001 and 0000002), for the servers' prompt tests. It samples its raw
    weights, trained at a large learning rate: PixArt's cross-attention output starts at zero,
    so this is what makes the prompt change the pictures by far more than rounding."""
    run = tmp_path_factory.mktemp("text") / "run"
    overrides = _tiny_overrides(run) + tiny_text
    overrides += ["sample_every=0", "use_ema_for_sampling=false", "optimizer.lr=0.05"]
    train(load_config(text_config, "train", overrides))
    return run, overrides


@pytest.fixture(scope="session")
def tiny_overrides():
    """fn(experiment_dir, steps=2) -> overrides for a seconds-long run of the demo config."""
    return _tiny_overrides


@pytest.fixture
def single_thread():
    """One intra-op thread for the test: tiny tensors gain nothing from threads, and on a busy
    shared CPU they make each small op wait (observed: 100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyExtractor(FeatureExtractor):
    """Gray-level features of uint8 images: 4 quadrant means, global std, and (as logits) the
    quadrant means again. Cheap, deterministic, and easy to recompute with numpy."""

    name = "tiny test extractor"
    num_features = 5

    def __init__(self, with_logits: bool = False):
        super().__init__()
        self.has_logits = with_logits

    def activations(self, images):
        x = to_float_nchw(images).mean(dim=1)  # [N, H, W] in 0..255
        h, w = x.shape[1] // 2, x.shape[2] // 2
        quads = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
        means = torch.stack([q.mean(dim=(1, 2)) for q in quads], dim=1)
        features = torch.cat([means, x.flatten(1).std(dim=1, keepdim=True)], dim=1)
        out = {"features": features}
        if self.has_logits:
            out["logits"] = means / 64.0
        return out


def _tiny_features_numpy(images: np.ndarray) -> np.ndarray:
    """TinyExtractor's features computed independently with numpy in float64 (NHWC uint8)."""
    gray = images.astype(np.float64).mean(axis=3)
    h, w = gray.shape[1] // 2, gray.shape[2] // 2
    quads = [gray[:, :h, :w], gray[:, :h, w:], gray[:, h:, :w], gray[:, h:, w:]]
    means = np.stack([q.mean(axis=(1, 2)) for q in quads], axis=1)
    std = gray.reshape(len(gray), -1).std(axis=1, ddof=1)
    return np.concatenate([means, std[:, None]], axis=1)


def _random_images(seed: int, n: int = 24, size: int = 8, channels: int = 1) -> np.ndarray:
    """uint8 [n, size, size, channels] with per-image brightness so features vary."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(n, 1, 1, 1))
    return (base + rng.integers(0, 56, size=(n, size, size, channels))).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_extractor_cls():
    return TinyExtractor


@pytest.fixture(scope="session")
def tiny_features():
    return _tiny_features_numpy


@pytest.fixture(scope="session")
def random_images():
    return _random_images


@pytest.fixture(scope="session")
def main():
    """main.py's `main(argv)`, loaded from the file (it is a script, not a module)."""
    spec = importlib.util.spec_from_file_location("speed_main", REPO / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(autouse=True)
def _no_speed_debug(monkeypatch):
    """Tests see one-line user errors whatever the developer's SPEED_DEBUG says."""
    monkeypatch.delenv("SPEED_DEBUG", raising=False)


@pytest.fixture
def nan_losses(monkeypatch):
    """Every training loss of the test becomes NaN (the diffusion's own terms, times NaN)."""
    from speed.diffusion.respace import SpacedDiffusion

    real = SpacedDiffusion.training_losses

    def nan_training_losses(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(SpacedDiffusion, "training_losses", nan_training_losses)
