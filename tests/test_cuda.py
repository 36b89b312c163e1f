"""The CUDA paths, checked on a GPU (`make gpu-check` runs them; skipped without one): mixed
precision against float32, fused AdamW, the fused attention kernel, compile against eager, DDP over
nccl, and inference images on CPU against CUDA. Tolerances are stated in each test."""

import os

import pytest
import torch
import torch.nn.functional as F

from speed.config import load_config
from speed.diffusion import create_diffusion
from speed.models import build_dit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
LATENT = (4, 32, 32)


def dit_and_batch(seed=0, batch=8):
    """A DiT-S/2 on 32x32x4 latents (the DiT paper's ImageNet-256 input) and a random batch."""
    torch.manual_seed(seed)
    model = build_dit("DiT-S/2", input_size=32, in_channels=4, num_classes=1000).cuda()
    generator = torch.Generator("cuda").manual_seed(seed)
    x = torch.randn(batch, *LATENT, device="cuda", generator=generator)
    y = torch.randint(0, 1000, (batch,), device="cuda", generator=generator)
    t = torch.randint(0, 1000, (batch,), device="cuda", generator=generator)
    noise = torch.randn(x.shape, device="cuda", generator=generator)
    return model, (x, y, t, noise)


def loss_and_grads(model, batch, dtype):
    x, y, t, noise = batch
    diffusion = create_diffusion("")
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        loss = diffusion.training_losses(model, x, t, {"y": y}, noise)["loss"].mean()
    loss.backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return loss.item(), grads


@pytest.fixture(autouse=True)
def _no_tf32():
    """float32 references in true float32 (TF32 matmuls differ from it by about 1e-3)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize(
    "dtype, loss_rtol, min_cosine", [(torch.bfloat16, 2e-2, 0.99), (torch.float16, 5e-3, 0.999)]
)
def test_mixed_precision_step_matches_float32(dtype, loss_rtol, min_cosine):
    """One training step's loss within loss_rtol of float32 and its gradient pointing the same
    way (cosine similarity >= min_cosine): bf16 keeps 8 mantissa bits, fp16 11."""
    model, batch = dit_and_batch()
    # adaLN-Zero starts with zero gradients almost everywhere: take one fp32 step first
    loss_and_grads(model, batch, None)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    loss32, grads32 = loss_and_grads(model, batch, None)
    loss_mixed, grads_mixed = loss_and_grads(model, batch, dtype)
    assert loss_mixed == pytest.approx(loss32, rel=loss_rtol)
    assert F.cosine_similarity(grads32, grads_mixed, dim=0).item() >= min_cosine


def test_fused_adamw_matches_the_foreach_implementation():
    """The fused CUDA kernel and the multi-tensor one give the same weights after 3 steps (1e-6)."""
    weights = []
    for fused in (True, False):
        model, batch = dit_and_batch()
        options = {"fused": True} if fused else {"foreach": True}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **options)
        for _ in range(3):
            loss_and_grads(model, batch, None)
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)


def test_attention_runs_in_a_fused_kernel_not_the_math_fallback():
    """In bf16 on a GPU, DiT's attention (head dim 64) goes to SDPA's flash kernel (or cuDNN's
    fused attention, which torch may prefer on Hopper); never the math fallback."""
    model, (x, y, t, _) = dit_and_batch()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            model(x, t, y)
        torch.cuda.synchronize()
    names = {event.key for event in prof.key_averages()}
    fused = {n for n in names if "flash" in n or "cudnn_attention" in n}
    assert fused, sorted(n for n in names if "attention" in n)
    assert not any("_scaled_dot_product_attention_math" in n for n in names)
    print("fused attention kernels:", sorted(fused))


def test_compiled_model_matches_eager():
    """torch.compile of the DiT gives eager's outputs (float32, atol 1e-4)."""
    model, (x, y, t, _) = dit_and_batch()
    model.eval()
    with torch.no_grad():
        eager = model(x, t, y)
        compiled = torch.compile(model)(x, t, y)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_ddp_and_fsdp_over_nccl_with_one_process_equal_the_plain_step(strategy):
    """DDP, and FSDP2 (one unit per DiT block, `speed.utils.fsdp.shard`), on one rank over nccl:
    the same gradients as the unwrapped model (atol 1e-6: only the reduction path differs)."""
    import copy

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from speed.utils import fsdp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        model, batch = dit_and_batch()
        loss_and_grads(model, batch, None)
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        _, plain = loss_and_grads(model, batch, None)
        if strategy == "ddp":
            wrapped = DistributedDataParallel(model, device_ids=[0])
        else:
            wrapped = fsdp.shard(copy.deepcopy(model))
            assert fsdp.is_sharded(wrapped)
        wrapped.zero_grad(set_to_none=True)
        x, y, t, noise = batch
        loss = create_diffusion("").training_losses(wrapped, x, t, {"y": y}, noise)["loss"].mean()
        loss.backward()
        grads = [fsdp.full_value(p.grad).flatten().float() for p in wrapped.parameters()
                 if p.grad is not None]  # fmt: skip
        torch.testing.assert_close(torch.cat(grads), plain, rtol=0, atol=1e-6)
    finally:
        dist.destroy_process_group()


def test_inference_images_on_cpu_and_cuda_agree(tmp_path, demo_config, tiny_overrides, monkeypatch):
    """The demo model after 20 steps, deterministic DDIM-10 (eta 0: no sampler noise, whose
    generators differ between devices), no TF32: the uint8 images of CPU and CUDA differ by at
    most 2 levels in 99% of pixels and by at most 8 anywhere."""
    import dataclasses

    import numpy as np

    import speed.runners.inference as phase
    from speed.runners.train import train

    run = tmp_path / "run"
    words = [*tiny_overrides(run, steps=20), "sample_every=0", "eta=0.0", "num_steps=10",
             "tf32=false"]  # fmt: skip
    train(load_config(demo_config, "train", words))
    checkpoint = run / "train" / "checkpoints" / "0000020.pt"
    images = {}
    for device in ("cpu", "cuda"):
        info = dataclasses.replace(phase.init_distributed(), device=torch.device(device))
        monkeypatch.setattr(phase, "init_distributed", lambda info=info: info)
        out = [*words, f"experiment_dir={tmp_path / device}", f"ckpt_path={checkpoint}"]
        npz = phase.inference(load_config(demo_config, "inference", out))
        images[device] = np.load(npz)["arr_0"].astype(np.int16)
    diff = np.abs(images["cpu"] - images["cuda"])
    assert np.mean(diff <= 2) >= 0.99 and diff.max() <= 8, (np.mean(diff <= 2), diff.max())
