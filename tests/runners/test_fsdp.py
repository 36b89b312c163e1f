"""strategy=fsdp: two processes under torchrun (gloo on CPU) shard the model, compute the update
of one process with the same global batch, halve each rank's weights and optimizer state, save
sharded checkpoints that resume on one or two ranks, stop cleanly on SIGTERM, and leave a
consolidated checkpoint that inference and sampling read unchanged."""

import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speed.config import ConfigError, load_config
from speed.errors import MissingFileError
from speed.models import load_checkpoint
from speed.models.loading import save_checkpoint
from speed.run import latest_checkpoint
from speed.run.nonfinite import NonFiniteLossError
from speed.run.sharded import shards_folder, write_manifest
from speed.runners.inference import inference
from speed.runners.train import train

pytestmark = pytest.mark.slow
MAIN = str(Path(__file__).resolve().parents[2] / "main.py")
MEMORY = re.compile(r"per rank MiB: params ([\d.]+), optimizer ([\d.]+), ema ([\d.]+)")


@pytest.fixture(scope="module")
def settings(tmp_path_factory, dit_config, tiny_overrides, tiny_dit):
    """fn(run, steps, extra=()) -> overrides of a tiny FSDP DiT run with global batch 4."""

    def overrides(run, steps, extra=()):
        common = ["data.random_flip=false", "sample_every=0", "global_batch_size=4"]
        return [*tiny_overrides(run, steps=steps), *tiny_dit, *common, "strategy=fsdp", *extra]

    return overrides


def torchrun(dit_config, overrides, nproc=2):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        MAIN, "-c", dit_config, "-p", "train", *overrides,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, dit_config, settings):
    """A 4-step FSDP run on 2 ranks, a checkpoint every step: (run folder, stdout)."""
    run = tmp_path_factory.mktemp("fsdp") / "run"
    stdout = torchrun(dit_config, settings(run, steps=4))
    return run, stdout


def assert_weights(actual: dict, expected: dict, atol: float) -> None:
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        if atol == 0:
            assert torch.equal(actual[name], tensor), name
        else:
            torch.testing.assert_close(actual[name], tensor, atol=atol, rtol=0, msg=name)


def test_two_ranks_equal_one_and_hold_half_the_memory(
    two_ranks, tmp_path, dit_config, settings, capsys
):
    run, stdout = two_ranks
    assert "2 process(es) on cpu, fsdp" in stdout
    sharded = load_checkpoint(run / "train/checkpoints/0000004.pt")
    assert sharded["opt"] is None and shards_folder(run / "train/checkpoints/0000004.pt").is_dir()
    single = load_checkpoint(train(load_config(dit_config, "train", settings(tmp_path, steps=4))))
    # The same keys as a DDP checkpoint; reduction order differs (a reduce-scatter of two
    # half-batch gradients vs one full-batch sum), so equal to rounding.
    for key in ("model", "ema"):
        assert_weights(sharded[key], single[key], atol=1e-5)

    per_rank_two = [float(v) for v in MEMORY.search(stdout).groups()]
    per_rank_one = [float(v) for v in MEMORY.search(capsys.readouterr().out).groups()]
    for two, one in zip(per_rank_two, per_rank_one):
        # Shards split dim 0 evenly up to padding; tiny tensors (pos_embed [1, T, D]) stay
        # whole on rank 0, which the tiny model's ratio shows, DiT-XL/2's would not.
        assert 0.45 * one < two < 0.55 * one


def test_accumulation_on_two_ranks_equals_the_full_micro_batch(
    two_ranks, tmp_path, dit_config, settings
):
    run, _ = two_ranks
    stdout = torchrun(dit_config, settings(tmp_path, steps=4, extra=["grad_accum=2"]))
    assert "global batch 4" in stdout
    accumulated = load_checkpoint(tmp_path / "train/checkpoints/0000004.pt")
    straight = load_checkpoint(run / "train/checkpoints/0000004.pt")
    for key in ("model", "ema"):
        assert_weights(accumulated[key], straight[key], atol=1e-5)


@pytest.mark.parametrize("nproc", [2, 1])
def test_resume_on_two_or_one_ranks_is_the_uninterrupted_run(
    two_ranks, tmp_path, dit_config, settings, nproc
):
    run, _ = two_ranks
    straight = load_checkpoint(run / "train/checkpoints/0000004.pt")
    resume = settings(
        tmp_path / "resumed", steps=4, extra=[f"resume={run}/train/checkpoints/0000002.pt"]
    )
    if nproc == 2:
        torchrun(dit_config, resume)
        resumed = load_checkpoint(tmp_path / "resumed/train/checkpoints/0000004.pt")
    else:
        resumed = load_checkpoint(train(load_config(dit_config, "train", resume)))
    assert resumed["step"] == 4
    # Same ranks: the same reductions, bit for bit. One rank: its full-batch gradient sums
    # in another order than two half-batch gradients reduce-scattered, so equal to rounding.
    for key in ("model", "ema"):
        assert_weights(resumed[key], straight[key], atol=0 if nproc == 2 else 1e-5)


def test_inference_reads_the_consolidated_checkpoint(two_ranks, dit_config, settings):
    run, _ = two_ranks
    ckpt = load_checkpoint(run / "train/checkpoints/0000004.pt")
    assert {"model", "ema", "emas", "step", "rng", "config", "data_spec"} <= set(ckpt)
    assert "blocks.1.attn.qkv.weight" in ckpt["ema"]  # official DiT names, full shapes
    assert ckpt["ema"]["pos_embed"].shape == (1, 49, 32)  # 7 x 7 patches of 4 px, width 32
    data = np.load(inference(load_config(dit_config, "inference", settings(run, steps=4))))
    assert data["arr_0"].shape == (6, 28, 28, 3)


def test_sigterm_on_two_ranks_checkpoints_and_resumes(tmp_path, dit_config, settings):
    run = tmp_path / "run"
    overrides = settings(run, steps=100000, extra=["ckpt_every=100000"])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", dit_config, "-p", "train", *overrides,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("[step 0000003]"):
            # a scheduler's preemption signals every worker process
            workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            for pid in workers:
                subprocess.run(["kill", "-TERM", pid], check=True)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) != 0  # the workers exit with 143; torchrun reports a failure
    ckpt = latest_checkpoint(run / "train/checkpoints")
    stopped_at = load_checkpoint(ckpt)["step"]
    assert stopped_at >= 3 and shards_folder(ckpt).is_dir()
    said = [line for line in proc.stderr.read().splitlines() if line.startswith("interrupted")]
    assert (
        len(said) == 1 and f"saved {ckpt}; resume with: torchrun <same options> main.py" in said[0]
    )
    resumed = train(
        load_config(dit_config, "train", settings(run, stopped_at + 1, ["resume=true"]))
    )
    assert load_checkpoint(resumed)["step"] == stopped_at + 1


def test_fsdp_refuses_fp16(tmp_path, dit_config, settings):
    cfg = load_config(dit_config, "train", settings(tmp_path, steps=1, extra=["precision=fp16"]))
    with pytest.raises(ConfigError, match="strategy=fsdp trains in fp32 or bf16"):
        train(cfg)


def test_nonfinite_losses_are_skipped(tmp_path, dit_config, settings, nan_losses):
    cfg = load_config(dit_config, "train", settings(tmp_path, steps=10, extra=["max_nonfinite=3"]))
    with pytest.raises(NonFiniteLossError, match="NaN/inf for 3 steps in a row"):
        train(cfg)
    first, second = (
        load_checkpoint(p) for p in sorted((tmp_path / "train/checkpoints").glob("*.pt"))
    )
    assert_weights(second["model"], first["model"], atol=0)


def test_bf16_unet_on_two_ranks_keeps_float32_master_weights(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    extra = ["strategy=fsdp", "precision=bf16", "data.batch_size=2", "sample_every=2"]
    stdout = torchrun(demo_config, [*tiny_overrides(run, steps=2), *extra])
    assert "2 process(es) on cpu, fsdp" in stdout
    ckpt = load_checkpoint(run / "train/checkpoints/0000002.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in ckpt["ema"].values())
    assert (run / "train/samples/0000002.png").is_file()  # the sharded EMA drew the grid


def test_a_checkpoint_resumes_only_under_its_own_strategy(
    two_ranks, tmp_path, dit_config, settings
):
    run, _ = two_ranks
    sharded = f"resume={run}/train/checkpoints/0000002.pt"
    with pytest.raises(ConfigError, match="written by strategy=fsdp"):
        train(
            load_config(dit_config, "train", settings(tmp_path / "a", 3, [sharded, "strategy=ddp"]))
        )
    replicated = train(
        load_config(dit_config, "train", settings(tmp_path / "b", 1, ["strategy=ddp"]))
    )
    with pytest.raises(MissingFileError, match="resume it with strategy=ddp"):
        train(
            load_config(dit_config, "train", settings(tmp_path / "c", 2, [f"resume={replicated}"]))
        )


class _Payload:
    """Unpickling this creates `marker`: what a crafted metadata file could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _plant_payload(folder: Path, marker: Path) -> None:
    """A payload as `.metadata`, with a valid manifest recorded by a re-signed checkpoint file."""
    (folder / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    ckpt_file = folder.with_suffix(".pt")
    ckpt = load_checkpoint(ckpt_file)
    save_checkpoint({**ckpt, "shards_manifest": write_manifest(folder)}, ckpt_file)


def _truncate_a_shard(folder: Path, marker: Path) -> None:
    shard = folder / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])


@pytest.mark.parametrize("damage", [_plant_payload, _truncate_a_shard])
def test_two_ranks_fall_back_from_a_bad_sharded_checkpoint_in_one_line(
    two_ranks, tmp_path, dit_config, settings, damage
):
    trained, _ = two_ranks
    run, marker = tmp_path / "run", tmp_path / "ran"
    shutil.copytree(trained, run)
    damage(run / "train/checkpoints/0000004.dcp", marker)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", dit_config, "-p", "train", *settings(run, 5, ["resume=true"]),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()  # nothing ran
    skips = [line for line in result.stderr.splitlines() if "resume: skipping" in line]
    assert len(skips) == 1 and "0000004.pt" in skips[0] and "Traceback" not in result.stderr
    assert load_checkpoint(run / "train/checkpoints/0000005.pt")["step"] == 5
