"""REPA through the train phase from YAML (configs/image/animals/flow/repa.yaml on a tiny DiT):
the projector is trained, saved and restored, so a resumed run is the straight one."""

import pytest
import torch
from tests_paths import REPA_CONFIG  # tests/runners

from speed.config import ConfigError, load_config
from speed.models import load_checkpoint
from speed.runners.sample import sample
from speed.runners.train import train


def test_repa_trains_and_resumes_exactly(tmp_path, tiny_overrides, tiny_dit):
    def cfg(run, steps, *extra):
        overrides = tiny_overrides(run, steps) + tiny_dit + ["sample_every=0", *extra]
        return load_config(REPA_CONFIG, "train", overrides + ["repa.projector_dim=32"])

    straight = train(cfg(tmp_path / "a", 4))
    train(cfg(tmp_path / "b", 2))
    resumed = train(cfg(tmp_path / "b", 4, "resume=true"))
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    first = load_checkpoint(tmp_path / "a/train/checkpoints/0000001.pt")
    assert not torch.equal(
        a["alignment"]["projector.0.weight"], first["alignment"]["projector.0.weight"]
    )
    for key in ("model", "ema", "alignment"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert "projector.0.weight" not in a["model"]  # sampling needs no projector
    overrides = tiny_overrides(tmp_path / "a", 4) + tiny_dit
    assert sample(load_config(REPA_CONFIG, "sample", overrides)).is_file()


def test_repa_refuses_fsdp_in_one_line(tmp_path, tiny_overrides, tiny_dit):
    overrides = tiny_overrides(tmp_path / "c", 1) + tiny_dit + ["strategy=fsdp", "precision=bf16"]
    with pytest.raises(ConfigError, match="strategy=ddp"):
        train(load_config(REPA_CONFIG, "train", overrides))
