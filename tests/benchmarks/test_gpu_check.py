"""benchmarks/gpu_check.py: without a GPU one line and exit 0; its report from a JUnit file."""

import gpu_check
import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path without a CUDA device")
def test_without_a_gpu_it_says_so_in_one_line_and_succeeds(capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "gpu_check")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out
    assert not (tmp_path / "gpu_check.json").exists()


def test_report_rows_from_junit_and_the_table(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_cuda" name="test_a" time="1.0"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="1.0">'
        '<failure message="assert 0.97 &gt;= 0.99&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.test_cuda" name="test_c" time="0">'
        '<skipped message="needs a CUDA device"/></testcase>'
        "</testsuite></testsuites>"
    )
    rows = gpu_check.test_rows(junit)
    assert [(r["test"], r["outcome"]) for r in rows] == [
        ("test_a", "passed"), ("test_b", "failed"), ("test_c", "skipped")]  # fmt: skip
    assert rows[1]["detail"] == ["assert 0.97 >= 0.99"]
    result = {"device": "NVIDIA H200", "torch": "2.14.1", "cuda": "13.0", "date": "2026-12-01",
              "minutes": 6.5, "tests": rows, "steps": [{"step": "cuda tests", "ok": False,
              "seconds": 60.0}], "throughput": [{"batch_size": 32, "mode": "bf16+compile",
              "steps_per_s": 2.5, "images_per_s": 80.0, "mfu": 0.41}]}  # fmt: skip
    table = gpu_check.markdown(result)
    assert "| test_b | failed (assert 0.97 >= 0.99) |" in table
    assert "| DiT-XL/2 batch 32 bf16+compile | 2.50 steps/s, 80 img/s, MFU 41.0% |" in table
