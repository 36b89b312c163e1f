"""benchmarks/models_forward.py: naming the CPU a benchmark ran on (model, cores, ISA)."""

import models_forward
import throughput
import torch


def test_cpu_info_reads_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: other\n"
    )
    assert models_forward._cpu_info("model name", cpuinfo) == "AMD EPYC 7B13"
    assert models_forward._cpu_info("flags", cpuinfo) == "fpu avx2 fma"
    assert models_forward._cpu_info("microcode", cpuinfo) == ""
    assert models_forward._cpu_info("flags", tmp_path / "missing") == ""


def test_cpu_isa_adds_amx_to_torchs_capability(monkeypatch):
    capability = torch.backends.cpu.get_cpu_capability().lower()
    monkeypatch.setattr(models_forward, "_cpu_info", lambda field: "fpu avx2 amx_bf16 amx_tile")
    assert models_forward.cpu_isa() == f"{capability}-amx"
    monkeypatch.setattr(models_forward, "_cpu_info", lambda field: "fpu avx2")
    assert models_forward.cpu_isa() == capability
    name = models_forward.device_name("cpu")
    assert name.startswith("cpu (") and name.endswith(f"cores, {capability})")


def test_cpu_results_are_named_by_isa(monkeypatch):
    monkeypatch.setattr(throughput, "cpu_isa", lambda: "avx2")
    assert throughput.parse_args([]).out.name == "throughput_cpu_avx2"
    assert throughput.parse_args(["--device", "cuda"]).out.name == "throughput_cuda"
