"""A tiny real experiment: the demo config shrunk to seconds, writing into tmp_path."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = str(REPO / "configs/image/animals/base.yaml")


def _tiny_overrides(experiment_dir: Path, steps: int = 2) -> list[str]:
    return [
        f"experiment_dir={experiment_dir}",
        f"max_training_steps={steps}",
        "ckpt_every=1",
        "log_every=1",
        f"sample_every={steps}",
        "warmup_steps=0",
        "model.hidden_size=32",
        "model.depth=2",
        "model.num_heads=2",
        "data.batch_size=4",
        "num_samples=6",
        "per_proc_batch_size=4",
        "num_steps=3",
        "train.num_steps=3",
        "num_sample_seeds=3",
        "sample_classes=[0,3]",
        "wandb=disabled",
    ]


@pytest.fixture
def demo_config() -> str:
    return DEMO_CONFIG


@pytest.fixture
def tiny_overrides():
    """fn(experiment_dir, steps=2) -> overrides for a seconds-long run of the demo config."""
    return _tiny_overrides
