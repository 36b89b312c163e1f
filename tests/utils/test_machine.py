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


def test_load_average_is_three_rounded_numbers(monkeypatch):
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.23456, 0.5, 2.0001))
    assert machine.load_average() == [1.23, 0.5, 2.0]


def test_run_header_names_the_device_threads_torch_settings_load_and_date(monkeypatch):
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (1.0, 2.0, 3.0))
    monkeypatch.setattr(machine, "cpu_info", lambda field: "")
    header = machine.run_header("cpu", 3, batch_size=8, note="x")
    assert list(header) == [
        "device", "threads", "torch", "batch_size", "note", "loadavg_before", "date"
    ]  # fmt: skip
    assert header["device"] == machine.device_name("cpu") and header["device"].startswith("cpu (")
    assert header["threads"] == 3 and header["torch"] == torch.__version__
    assert header["batch_size"] == 8 and header["note"] == "x"
    assert header["loadavg_before"] == [1.0, 2.0, 3.0]
    date, clock, zone = header["date"].split()
    assert len(date) == 10 and date[4] == date[7] == "-" and len(clock) == 5 and zone == "UTC"


def test_the_benchmarks_take_the_header_from_here():
    """One copy: the benchmarks that time things import run_header, none builds its own."""
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    for name in ("models_forward", "masked_step", "text_encoder_cost", "sampling",
                 "sampling_throughput", "throughput", "onnx_export"):  # fmt: skip
        text = (benchmarks / f"{name}.py").read_text()
        assert "run_header(" in text and "def run_header" not in text, name
        assert "os.getloadavg" not in text and "def load_average" not in text, name
