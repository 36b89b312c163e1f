"""benchmarks/sampling_throughput.py with tiny settings: both demo models in fp32 and bf16, the
table and the JSON, the compiled copy, and the argument checks."""

import json

import pytest
import sampling_throughput as bench
import torch


def test_tiny_run_writes_rows_for_every_model_mode_and_sampler(tmp_path, capsys):
    out = tmp_path / "throughput"
    argv = [
        "--samplers", "ddim-2", "dpm_solver++-2", "--modes", "fp32", "bf16",
        "--batch-size", "2", "--repeats", "1", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["results"]) == {"unet", "dit"}
    for rows in report["results"].values():
        assert [(r["mode"], r["sampler"]) for r in rows] == [
            ("fp32", "ddim-2"), ("fp32", "dpm_solver++-2"),
            ("bf16", "ddim-2"), ("bf16", "dpm_solver++-2"),
        ]  # fmt: skip
        for r in rows:
            assert r["images_per_s"] > 0 and len(r["seconds"]) == 1 and r["warmup_s"] > 0
            assert 0 <= r["mean_abs_diff"] <= r["max_abs_diff"] <= 255
        assert all(r["max_abs_diff"] == 0 for r in rows if r["mode"] == "fp32")
    # bf16 rounding changes some pixels of the random-weight models' images
    assert any(r["max_abs_diff"] > 0 for rows in report["results"].values() for r in rows)
    table = out.with_suffix(".md").read_text()
    assert table == capsys.readouterr().out[-len(table) :]
    assert "| ddim-2 | fp32 |" in table and "| 1.00x |" in table
    assert report["meta"]["params"]["unet"] > 1e6 and report["meta"]["weights"]["dit"] == (
        "random weights"
    )


def test_the_compiled_mode_compiles_a_copy():
    model = torch.nn.Linear(2, 2)
    assert bench.prepare(model, compile_model=False) is model
    compiled = bench.prepare(model, compile_model=True)
    assert compiled is not model and compiled._compiled_call_impl is not None
    assert model._compiled_call_impl is None
    torch.testing.assert_close(compiled.state_dict(), model.state_dict())


def test_bad_arguments_name_the_form(tmp_path):
    assert bench.parse_sampler("dpm_solver++-10") == ("dpm_solver++", 10)
    assert bench.parse_ckpt(f"unet={tmp_path}") == ("unet", tmp_path)
    for bad in ("ddim", "ddim-0", "-5"):
        with pytest.raises(ValueError, match="NAME-STEPS"):
            bench.parse_sampler(bad)
    with pytest.raises(ValueError, match="MODEL=PATH"):
        bench.parse_ckpt("vit=x.pt")
    assert bench.parse_args(["--device", "cuda"]).out.name == "sampling_throughput_cuda"
