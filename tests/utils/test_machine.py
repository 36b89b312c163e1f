"""speed.utils.machine: naming the CPU a benchmark or study ran on (model, cores, ISA)."""

import torch

from speed.utils import machine


def test_cpu_info_reads_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: other\n"
    )
    assert machine.cpu_info("model name", cpuinfo) == "AMD EPYC 7B13"
    assert machine.cpu_info("flags", cpuinfo) == "fpu avx2 fma"
    assert machine.cpu_info("microcode", cpuinfo) == ""
    assert machine.cpu_info("flags", tmp_path / "missing") == ""


def test_cpu_isa_adds_amx_to_torchs_capability(monkeypatch):
    capability = torch.backends.cpu.get_cpu_capability().lower()
    monkeypatch.setattr(machine, "cpu_info", lambda field: "fpu avx2 amx_bf16 amx_tile")
    assert machine.cpu_isa() == f"{capability}-amx"
    monkeypatch.setattr(machine, "cpu_info", lambda field: "fpu avx2")
    assert machine.cpu_isa() == capability
    name = machine.device_name("cpu")
    assert name.startswith("cpu (") and name.endswith(f"cores, {capability})")


def test_a_study_record_names_the_cpu_kind(monkeypatch):
    from speed.study.plan import machine as study_machine

    monkeypatch.setattr(
        machine, "cpu_info", lambda field: {"model name": "AMD EPYC 7B13"}.get(field, "fpu avx2")
    )
    capability = torch.backends.cpu.get_cpu_capability().lower()
    if not torch.cuda.is_available():
        assert study_machine().startswith("cpu (AMD EPYC 7B13, ")
        assert f"cores, {capability}), torch " in study_machine()
