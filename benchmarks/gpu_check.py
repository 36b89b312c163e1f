"""One command that proves the CUDA path on a GPU: `make gpu-check` (about 5-8 minutes).

    python benchmarks/gpu_check.py            # on a machine with a CUDA device
    python benchmarks/gpu_check.py --skip-benchmarks   # the CUDA tests only

Runs, each in its own process with a time limit:
  1. the `cuda`-marked tests (tests/test_cuda.py and the CUDA feature test): bf16 / fp16 training
     steps against float32, fused AdamW, the fused attention kernel, compile against eager, DDP
     and FSDP over nccl, inference images CPU against CUDA;
  2. the training throughput of DiT-XL/2 at batch 32 (fp32 and bf16+compile, MFU against the
     GPU's peak: benchmarks/throughput.py);
  3. the sampling benchmark's rows on the demo model (benchmarks/sampling.py --quick --device
     cuda) after training the demo for `--demo-steps` steps on the GPU.
Prints a pass/fail table and writes benchmarks/results/gpu_check.{json,md}. Without a CUDA
device it says so in one line and exits 0 (the tests are still collected and skipped by
`make test`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from speed.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEMO = "configs/image/animals/base.yaml"


def run_step(name: str, command: list[str], timeout: int, log_dir: Path) -> dict:
    """Run one step; returns {"step", "ok", "seconds", "log"} (its output goes to the log)."""
    log = log_dir / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = time.perf_counter() - start
    print(f"  {name}: {'ok' if code == 0 else f'FAILED ({code})'} in {seconds:.0f} s", flush=True)
    return {"step": name, "ok": code == 0, "seconds": round(seconds, 1), "log": str(log)}


def test_rows(junit: Path) -> list[dict]:
    """One row per test case of a pytest JUnit XML report: passed / failed / skipped."""
    if not junit.is_file():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                detail = (element.get("message") or "").splitlines()[:1]
                rows.append({"test": case.get("name"), "outcome": outcome, "detail": detail})
                break
        else:
            rows.append({"test": case.get("name"), "outcome": outcome, "detail": []})
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"`make gpu-check` on {result['device']}, torch {result['torch']} (CUDA "
        f"{result['cuda']}), {result['date']}, {result['minutes']:.1f} min.",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for row in result["tests"]:
        detail = f" ({row['detail'][0][:80]})" if row["detail"] else ""
        lines.append(f"| {row['test']} | {row['outcome']}{detail} |")
    for step in result["steps"]:
        lines.append(f"| step: {step['step']} | {'ok' if step['ok'] else 'FAILED'}, "
                     f"{step['seconds']:.0f} s |")  # fmt: skip
    for row in result.get("throughput", []):
        mfu = row.get("mfu")
        lines.append(
            f"| DiT-XL/2 batch {row['batch_size']} {row['mode']} | "
            f"{row.get('steps_per_s', 0):.2f} steps/s, {row.get('images_per_s', 0):.0f} img/s"
            + ("" if mfu is None else f", MFU {100 * mfu:.1f}%")
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-benchmarks", action="store_true", help="the CUDA tests only")
    parser.add_argument("--demo-steps", type=int, default=400, help="demo training steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}); nothing to check")
        return 0
    start = time.perf_counter()
    work = ROOT / "runs" / "gpu_check"
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    junit = work / "cuda_tests.xml"
    print(f"gpu-check on {torch.cuda.get_device_name(0)}", flush=True)
    steps = [
        run_step(
            "cuda tests",
            [python, "-m", "pytest", "-m", "cuda", "-q", "-rA", f"--junitxml={junit}", "tests"],
            300,
            work,
        )  # fmt: skip
    ]
    throughput = []
    if not args.skip_benchmarks:
        out = work / "throughput_cuda"
        steps.append(run_step("throughput DiT-XL/2", [
            python, "benchmarks/throughput.py", "--device", "cuda", "--models", "DiT-XL/2",
            "--batch-sizes", "32", "--modes", "fp32", "bf16+compile", "--out", str(out)],
            240, work))  # fmt: skip
        if out.with_suffix(".json").is_file():
            throughput = json.loads(out.with_suffix(".json").read_text()).get("results", [])
        run_dir = work / "demo"
        steps.append(run_step("demo training", [
            python, "main.py", "-c", DEMO, "-p", "train", f"experiment_dir={run_dir}",
            f"max_training_steps={args.demo_steps}", f"ckpt_every={args.demo_steps}",
            "sample_every=0", "wandb=disabled", "overwrite=true"], 180, work))  # fmt: skip
        ckpt = RunDir(run_dir).checkpoint(args.demo_steps)
        steps.append(run_step("sampling benchmark", [
            python, "benchmarks/sampling.py", "--quick", "--device", "cuda", "--ckpt", str(ckpt),
            "--out", str(work / "sampling_cuda")], 240, work))  # fmt: skip
    result = {
        "benchmark": "gpu_check",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.date.today().isoformat(),
        "minutes": (time.perf_counter() - start) / 60,
        "tests": test_rows(junit),
        "steps": steps,
        "throughput": throughput,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    failed = [r for r in result["tests"] if r["outcome"] == "failed"]
    failed += [s for s in steps if not s["ok"]]
    print(f"gpu-check: {'FAILED' if failed else 'passed'}; wrote {args.out}.json and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
