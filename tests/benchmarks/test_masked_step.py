"""benchmarks/masked_step.py on shrunk demo models: every case runs, the results are written, and
a step's FLOPs fall with MaskDiT's mask ratio while MDT's two passes cost more than the DiT."""

import json

import masked_step

SHRINK = ["model.hidden_size=32", "model.num_heads=2"]


def test_cases_run_and_cost_falls_with_the_mask_ratio(tmp_path, monkeypatch):
    shrunk = {name: (config, over + SHRINK) for name, (config, over) in masked_step.CASES.items()}
    monkeypatch.setattr(masked_step, "CASES", shrunk)
    argv = ["--batch-size", "4", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path / "r")]
    rows = masked_step.main(argv)
    flops = {r["case"]: r["gflops_per_step"] for r in rows}
    assert list(flops) == list(shrunk)
    assert flops["MaskDiT, mask 0"] > flops["MaskDiT, mask 0.5"] > flops["MaskDiT, mask 0.75"]
    assert flops["MDT, 2 passes"] > flops["DiT"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["case"] for r in saved["rows"]] == list(shrunk) and saved["meta"]["batch_size"] == 4
    assert "| MaskDiT, mask 0.5 |" in (tmp_path / "r.md").read_text()
