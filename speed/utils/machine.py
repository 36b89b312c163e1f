"""Naming the machine a measurement ran on: the GPU's name, or the CPU's model, core count and
vector ISA (2-core CPU boxes of different kinds differ 2.6x in speed, so every timing the
project records carries this name), how loaded it was, and the header a timing table starts
with (`run_header`, used by the benchmarks and the study's timing pass)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch


def cpu_info(field: str, path: Path = Path("/proc/cpuinfo")) -> str:
    """One field of the first processor in /proc/cpuinfo ('' where there is none, e.g. macOS)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    return ""


def cpu_isa() -> str:
    """The vector ISA torch dispatches to on this CPU, plus '-amx' where the CPU has AMX-BF16
    tiles (which oneDNN uses for bfloat16 matmuls), e.g. 'avx2' or 'avx512-amx'."""
    isa = torch.backends.cpu.get_cpu_capability().lower()
    return f"{isa}-amx" if "amx_bf16" in cpu_info("flags").split() else isa


def device_name(device: str | torch.device = "cpu") -> str:
    """The GPU's name, or 'cpu (<model>, <n> cores, <isa>)'."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    model = cpu_info("model name") or platform.processor() or platform.machine()
    return f"cpu ({model}, {os.cpu_count()} cores, {cpu_isa()})"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded: how shared the machine was."""
    return [round(v, 2) for v in os.getloadavg()]


def utc_now() -> str:
    """The date and time in UTC, to the minute: '2026-12-06 17:40 UTC'."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_header(device: str | torch.device, threads: int, **settings) -> dict:
    """What a timing table says about its run: the device in words, threads, torch, the
    measurement's `settings`, the load average before (add `loadavg_after` at the end) and the
    date."""
    return {
        "device": device_name(device),
        "threads": threads,
        "torch": torch.__version__,
        **settings,
        "loadavg_before": load_average(),
        "date": utc_now(),
    }
