"""benchmarks/throughput.py: one measured case on a tiny DiT, FLOP counting, MFU, the choice of
the optimized path, the report, and a failing case in its own process."""

import argparse

import pytest
import throughput
import torch

from speed.diffusion import create_diffusion
from speed.models import build_dit


def tiny_dit(name="DiT-S/2", checkpointing=False):
    return build_dit(
        "DiT-S/2",
        input_size=8,
        in_channels=4,
        num_classes=1000,
        depth=2,
        hidden_size=32,
        num_heads=2,
        grad_checkpointing=checkpointing,
    )


@pytest.fixture
def tiny_cases(monkeypatch):
    monkeypatch.setattr(throughput, "build_model", tiny_dit)
    monkeypatch.setattr(throughput, "LATENT_SHAPE", (4, 8, 8))


def test_measure_times_the_asked_steps_and_counts_model_flops(tiny_cases):
    cpu = torch.device("cpu")
    plain = throughput.measure(throughput.Case("tiny", 3, "fp32"), cpu, warmup=1, repeats=2)
    recomputed = throughput.measure(throughput.Case("tiny", 3, "checkpoint"), cpu, 1, 2)
    assert len(plain["seconds"]) == 2 and len(plain["warmup_s"]) == 1
    assert all(s > 0 for s in plain["seconds"]) and plain["peak_mem_gb"] > 0
    assert plain["step_mem_gb"] >= 0
    # Model FLOPs: recomputation in the checkpointed backward is not counted.
    assert recomputed["flops_per_step"] == plain["flops_per_step"] > 0
    assert plain["params"] == sum(p.numel() for p in tiny_dit().parameters())


def test_step_flops_scale_with_the_batch_and_backward_costs_about_twice_forward(tiny_cases):
    model, diffusion = tiny_dit(), create_diffusion("", learn_sigma=True)
    step = throughput.step_flops(model, diffusion, 5, torch.device("cpu"))
    counter = throughput.FlopCounterMode(display=False)
    with counter, torch.no_grad(), throughput.written_out_attention(model):
        model(torch.randn(1, 4, 8, 8), torch.tensor([3]), torch.tensor([1]))
    forward = counter.get_total_flops()
    # Backward: weight and input gradients (2x forward) less the patch embedding's input grad.
    assert 2.5 * forward * 5 < step <= 3 * forward * 5
    assert all(p.grad is None for p in model.parameters()) and model.training


def row(mode, sec, flops=1e12):
    return throughput.summarize(
        {
            "model": "M",
            "batch_size": 8,
            "mode": mode,
            "seconds": [sec, sec * 3, sec],
            "flops_per_step": flops,
            "warmup_s": [9.0],
            "peak_mem_gb": 1.0,
            "step_mem_gb": 0.5,
        },
        {"bf16": 1000e12, "fp32": 50e12},
    )


def test_summary_uses_the_median_and_the_peak_of_the_modes_precision():
    fp32, bf16 = row("fp32", 2.0), row("bf16", 0.5)
    assert fp32["sec_per_step"] == 2.0 and fp32["images_per_s"] == 4.0
    assert fp32["mfu"] == pytest.approx(1e12 / 2.0 / 50e12)
    assert bf16["mfu"] == pytest.approx(1e12 / 0.5 / 1000e12)


def test_optimized_path_is_the_fastest_candidate_and_never_checkpointing():
    rows = [row("fp32", 2.0), row("bf16", 3.0), row("compile", 1.6), row("checkpoint", 0.1)]
    (path,) = throughput.optimized_paths(rows)
    assert path["mode"] == "compile" and path["speedup"] == pytest.approx(1.25)
    assert path["beats_fp32"]
    (slower,) = throughput.optimized_paths([row("fp32", 1.0), row("bf16", 1.5)])
    assert slower["mode"] == "bf16" and not slower["beats_fp32"]
    table = throughput.markdown(
        [
            row("fp32", 1.0),
            row("bf16", 1.5),
            {
                "model": "M",
                "batch_size": 32,
                "mode": "bf16",
                "error": "OutOfMemoryError: CUDA out of memory",
            },
        ],
        [slower],
        {
            "device": "cpu",
            "device_type": "cpu",
            "threads": 1,
            "quick": True,
            "repeats": 2,
            "warmup": 1,
            "torch": "x",
            "date": "d",
            "loadavg_before": [],
            "loadavg_after": [],
            "memory_method": "Memory: rss",
            "note": "",
        },
    )
    assert "| M | 8 | bf16 | 1.500 | 0.667 | 5.33 |" in table and "| 0.67x | NO |" in table
    assert "failed: OutOfMemoryError" in table and "QUICK" in table


def test_peak_flops_by_gpu_name():
    assert throughput.peak_flops("NVIDIA H100 80GB HBM3", None)["bf16"] == 989e12
    assert throughput.peak_flops("NVIDIA H100 PCIe", None)["bf16"] == 756e12
    assert throughput.peak_flops("NVIDIA GeForce GTX 1080", None) is None
    assert throughput.peak_flops("anything", (100.0, 10.0)) == {"bf16": 1e14, "fp32": 1e13}


def test_default_cases_add_dit_xl_on_cuda_and_quick_is_small(monkeypatch):
    monkeypatch.setattr(throughput, "cpu_has_native_bf16", lambda: True)
    cpu = throughput.default_cases("cpu", quick=False)
    cuda = throughput.default_cases("cuda", quick=False)
    assert len(cpu) == 4 * len(throughput.MODES) and len(cuda) == 7 * len(throughput.MODES)
    assert {(c.model, c.batch_size) for c in cuda} - {(c.model, c.batch_size) for c in cpu} == {
        ("DiT-B/2", 32),
        ("ADM-UNet", 32),
        ("DiT-XL/2", 32),
    }
    quick = throughput.default_cases("cpu", quick=True)
    assert [(c.model, c.batch_size, c.mode) for c in quick] == [
        ("DiT-S/2", 8, mode) for mode in throughput.MODES
    ]


def test_full_cpu_runs_leave_out_emulated_bf16(monkeypatch):
    monkeypatch.setattr(throughput, "cpu_has_native_bf16", lambda: False)
    modes = {c.mode for c in throughput.default_cases("cpu", quick=False)}
    assert modes == {"fp32", "compile", "checkpoint"}
    assert {c.mode for c in throughput.default_cases("cpu", quick=True)} == set(throughput.MODES)
    assert {c.mode for c in throughput.default_cases("cuda", quick=False)} == set(throughput.MODES)
    args = throughput.parse_args(["--models", "DiT-B/2", "--modes", "bf16"])
    assert throughput.selected_cases(args) == [
        throughput.Case("DiT-B/2", 8, "bf16"),
        throughput.Case("DiT-B/2", 32, "bf16"),
    ]


@pytest.mark.slow  # starts a Python process that imports torch
def test_a_failing_case_is_recorded_not_raised():
    args = argparse.Namespace(device="cpu", threads=1, warmup=1, repeats=1)
    result = throughput.run_case(throughput.Case("DiT-Q/2", 2, "fp32"), args)
    assert result["model"] == "DiT-Q/2" and "unknown DiT model name" in result["error"]


def test_both_backbones_take_the_one_checkpointing_switch(monkeypatch):
    monkeypatch.setattr(throughput, "LATENT_SHAPE", (4, 8, 8))
    small = dict(model_channels=32, channel_mult=(1, 2), attention_resolutions="4")
    monkeypatch.setattr(throughput, "ADM_LATENT_UNET", {**throughput.ADM_LATENT_UNET, **small})
    for name in ("ADM-UNet", "DiT-S/8"):
        for flag in (False, True):
            assert throughput.build_model(name, flag).grad_checkpointing is flag


def test_cpu_results_are_named_by_isa(monkeypatch):
    monkeypatch.setattr(throughput, "cpu_isa", lambda: "avx2")
    assert throughput.parse_args([]).out.name == "throughput_cpu_avx2"
    assert throughput.parse_args(["--device", "cuda"]).out.name == "throughput_cuda"
