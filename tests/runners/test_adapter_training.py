"""A LoRA adapter through the phases from YAML (the demo's tiny DiT): the run trains and saves
only the adapter, resumes exactly (under strategy=fsdp too, on two ranks), samples and exports
merged over its base, and is refused over another base in one line."""

import pytest
import torch
from test_fsdp import torchrun  # tests/runners

from speed.config import load_config
from speed.errors import ConfigError
from speed.models import load_checkpoint
from speed.runners.build import build_adapter, build_autoencoder, build_sampling_model
from speed.runners.export import export
from speed.runners.sample import sample
from speed.runners.train import train

ADAPTER = ["adapter.rank=2", "adapter.alpha=4", "optimizer.lr=1e-2"]


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, dit_config, tiny_overrides, tiny_dit):
    run = tmp_path_factory.mktemp("base")
    overrides = tiny_overrides(run, 2) + tiny_dit + ["sample_every=0"]
    return train(load_config(dit_config, "train", overrides))


def adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, steps, base, phase="train", *extra):
    overrides = tiny_overrides(run, steps) + tiny_dit + ["sample_every=0", *ADAPTER]
    return load_config(dit_config, phase, overrides + [f"adapter.base={base}", *extra])


def test_adapter_run_saves_only_the_adapter_and_resumes_exactly(
    tmp_path, dit_config, tiny_overrides, tiny_dit, base_ckpt
):
    def cfg(run, steps, *extra):
        return adapter_cfg(dit_config, tiny_overrides, tiny_dit, tmp_path / run, steps, base_ckpt,
                           "train", *extra)  # fmt: skip

    straight = load_checkpoint(train(cfg("a", 4)))
    train(cfg("b", 2))
    resumed = load_checkpoint(train(cfg("b", 4, "resume=true")))
    base = load_checkpoint(base_ckpt)
    for key in ("model", "ema"):
        assert straight[key] and all("lora_" in name for name in straight[key])
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"
    # trained: B moved off zero; the optimizer holds the adapters' state only
    assert any(t.abs().sum() > 0 for n, t in straight["model"].items() if "lora_B" in n)
    assert len(straight["opt"]["state"]) == len(straight["model"])
    assert straight["adapter"]["base_sha256"] == build_adapter(cfg("a", 4)).base_sha256
    size = sum(t.numel() for t in straight["model"].values())
    assert size < 0.2 * sum(t.numel() for t in base["model"].values())  # rank 2 of width 32


def test_adapter_samples_and_exports_merged_over_its_base(
    tmp_path, dit_config, tiny_overrides, tiny_dit, base_ckpt
):
    run = tmp_path / "c"
    train(adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, 2, base_ckpt))
    cfg = adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, 2, base_ckpt, "sample")
    model, path, spec = build_sampling_model(cfg, build_autoencoder(cfg), torch.device("cpu"))
    assert not any("lora_" in k for k in model.state_dict())
    ckpt = load_checkpoint(path)
    full = load_checkpoint(base_ckpt)["ema"]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, full[k])]
    assert changed and all(k.endswith(("qkv.weight", "proj.weight", "fc1.weight", "fc2.weight"))
                           for k in changed)  # fmt: skip
    # the merged layer is W + (alpha / r) B A of the saved EMA adapter
    a = ckpt["ema"]["blocks.0.mlp.fc1.lora_A.default.weight"]
    b = ckpt["ema"]["blocks.0.mlp.fc1.lora_B.default.weight"]
    torch.testing.assert_close(
        model.state_dict()["blocks.0.mlp.fc1.weight"],
        full["blocks.0.mlp.fc1.weight"] + (4 / 2) * b @ a,
        rtol=1e-5,
        atol=1e-6,
    )
    assert sample(cfg).is_file()
    assert export(adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, 2, base_ckpt,
                              "sample")).is_file()  # fmt: skip


def test_adapter_over_another_base_is_refused(
    tmp_path, dit_config, tiny_overrides, tiny_dit, base_ckpt
):
    run = tmp_path / "d"
    train(adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, 1, base_ckpt))
    other = tmp_path / "other.pt"
    state = load_checkpoint(base_ckpt)
    state["ema"] = {k: v + 1 for k, v in state["ema"].items()}
    torch.save(state, other)
    cfg = adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, 1, other, "sample")
    with pytest.raises(ConfigError, match="set adapter.base to the checkpoint it was trained on"):
        sample(cfg)
    resume = adapter_cfg(dit_config, tiny_overrides, tiny_dit, run, 2, other, "train",
                         "resume=true")  # fmt: skip
    with pytest.raises(ConfigError, match="sha256"):
        train(resume)


def test_adapter_refuses_ckpt_path(tmp_path, dit_config, tiny_overrides, tiny_dit):
    cfg = adapter_cfg(dit_config, tiny_overrides, tiny_dit, tmp_path / "e", 1, "b.pt", "train",
                      "ckpt_path=x.pt")  # fmt: skip
    with pytest.raises(ConfigError, match="unset ckpt_path"):
        train(cfg)


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_and_resume_exactly(
    tmp_path, dit_config, tiny_overrides, tiny_dit, base_ckpt
):
    """The LoRA pairs share their blocks' FSDP units with the frozen base layers: two ranks with
    half the batch each compute one process's update (to reduction-order rounding), the
    consolidated file holds the adapter only and samples merged over its base, and the shards
    resume exactly."""

    def overrides(run, steps, *extra):
        common = ["sample_every=0", "data.random_flip=false", "global_batch_size=4", *ADAPTER]
        extra = [f"adapter.base={base_ckpt}", *extra]
        return tiny_overrides(run, steps) + tiny_dit + common + extra

    torchrun(dit_config, overrides(tmp_path / "two", 4, "strategy=fsdp"))
    two = load_checkpoint(tmp_path / "two/train/checkpoints/0000004.pt")
    one = load_checkpoint(train(load_config(dit_config, "train", overrides(tmp_path / "one", 4))))
    assert two["adapter"] == one["adapter"] and two["opt"] is None
    assert any(t.abs().sum() > 0 for n, t in two["model"].items() if "lora_B" in n)
    for key in ("model", "ema"):
        assert set(two[key]) == set(one[key])  # the adapter's keys only
        for name, tensor in one[key].items():
            torch.testing.assert_close(two[key][name], tensor, atol=1e-5, rtol=0, msg=name)
    resume = f"resume={tmp_path}/two/train/checkpoints/0000002.pt"
    torchrun(dit_config, overrides(tmp_path / "resumed", 4, "strategy=fsdp", resume))
    resumed = load_checkpoint(tmp_path / "resumed/train/checkpoints/0000004.pt")
    for key in ("model", "ema"):
        for name, tensor in two[key].items():
            assert torch.equal(resumed[key][name], tensor), f"{key}.{name} differs after resume"
    cfg = adapter_cfg(dit_config, tiny_overrides, tiny_dit, tmp_path / "two", 4, base_ckpt,
                      "sample")  # fmt: skip
    assert sample(cfg).is_file()


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_with_a_unet_adapter(
    tmp_path, demo_config, tiny_overrides
):
    """LoRA on the UNet's attention and projection layers, inside its sharded blocks: two ranks
    compute one process's update and the file holds the adapter only."""
    base = train(load_config(demo_config, "train", tiny_overrides(tmp_path / "ub", 1)))

    def overrides(run, *extra):
        common = ["sample_every=0", "data.random_flip=false", "global_batch_size=4", *ADAPTER]
        return tiny_overrides(tmp_path / run, 2) + common + [f"adapter.base={base}", *extra]

    torchrun(demo_config, overrides("two", "strategy=fsdp"))
    two = load_checkpoint(tmp_path / "two/train/checkpoints/0000002.pt")
    one = load_checkpoint(train(load_config(demo_config, "train", overrides("one"))))
    assert two["adapter"] == one["adapter"] and two["opt"] is None
    assert set(two["model"]) == set(one["model"])
    assert two["model"] and all("lora_" in name for name in two["model"])
    assert any(t.abs().sum() > 0 for n, t in two["model"].items() if "lora_B" in n)
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


def test_adapter_trains_under_bf16_with_float32_weights(
    tmp_path, dit_config, tiny_overrides, tiny_dit, base_ckpt
):
    cfg = adapter_cfg(dit_config, tiny_overrides, tiny_dit, tmp_path / "bf16", 2, base_ckpt,
                      "train", "precision=bf16")  # fmt: skip
    state = load_checkpoint(train(cfg))
    assert state["model"] and all("lora_" in name for name in state["model"])
    assert {t.dtype for t in state["model"].values()} == {torch.float32}
    assert any(t.abs().sum() > 0 for n, t in state["model"].items() if "lora_B" in n)  # trained
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_speed_draws_the_adapters_timesteps_and_weights(
    tmp_path, dit_config, tiny_overrides, tiny_dit, base_ckpt, capsys
):
    """diffusion.faster=true on an adapter run: SpeeD's sampler and weights (named in the
    run's summary) and so another update of the adapter than uniform t."""

    def adapter(run, faster):
        cfg = adapter_cfg(dit_config, tiny_overrides, tiny_dit, tmp_path / run, 2, base_ckpt,
                          "train", f"diffusion.faster={faster}")  # fmt: skip
        return load_checkpoint(train(cfg))["model"]

    uniform = adapter("u", "false")
    assert "sampling=uniform" in capsys.readouterr().out
    faster = adapter("f", "true")
    summary = capsys.readouterr().out
    assert "sampling=speed (k=5" in summary and "weighting=speed (lam=0.6" in summary
    assert set(faster) == set(uniform)
    assert any(not torch.equal(faster[name], uniform[name]) for name in uniform)
