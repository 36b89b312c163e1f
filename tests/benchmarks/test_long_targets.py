"""The cross-study speed-up: a study's method's step to the long baseline's final score, against
the step where the baseline first reaches it, on hand-made curves with known crossings;
wall-clock from the study's timing, the baseline's seconds under the study's name for it."""

import pytest
from long_targets import compare, targets


def record(method, seed, curve):
    return {"method": method, "seed": seed, "curve": {str(s): {"fid": v} for s, v in curve.items()}}


def test_speedups_to_the_long_baselines_target():
    long_runs = {
        ("baseline", 0): record("baseline", 0, {2000: 40.0, 4000: 20.0, 6000: 10.0, 8000: 10.0}),
    }
    masked_runs = {
        ("fast", 0): record("fast", 0, {1000: 30.0, 2000: 10.0, 3000: 8.0}),  # 10 at 2000
        ("slow", 0): record("slow", 0, {1000: 30.0, 3000: 12.0}),  # never down to 10
    }
    timing = {
        "methods": {"baseline": {"sec_per_step": {0: 1.0}}, "fast": {"sec_per_step": {0: 4.0}}}
    }
    goals = targets(long_runs)
    assert goals == {0: {"fid": 10.0, "step": 8000, "reached": 6000.0}}  # first at 6000, not 8000
    result = compare(long_runs, masked_runs, ["fast", "slow"], timing)
    assert result["fast"]["steps"]["per_seed"] == {0: pytest.approx(3.0)}  # 6000 / 2000
    assert result["fast"]["seconds"]["per_seed"] == {0: pytest.approx(0.75)}  # 6000 s / 8000 s
    assert result["slow"]["steps"]["per_seed"] == {0: None}


def test_a_method_the_long_study_trains_on_is_read_on_its_long_run():
    long_runs = {
        ("baseline", 0): record("baseline", 0, {2000: 40.0, 4000: 20.0, 6000: 10.0, 8000: 8.0}),
        ("fast", 0): record("fast", 0, {2000: 20.0, 4000: 9.0, 6000: 7.0, 8000: 6.0}),
    }
    masked = {("fast", 0): record("fast", 0, {2000: 20.0, 3000: 12.0})}  # its first 3000 steps
    timing = {"methods": {m: {"sec_per_step": {0: 1.0}} for m in ("baseline", "fast")}}
    result = compare(long_runs, masked, ["fast"], timing)
    # the target 8.0, the baseline there at 8000, the long run at 5000 (9.0 at 4000, 7.0 at 6000)
    assert result["fast"]["steps"]["per_seed"] == {0: pytest.approx(8000 / 5000)}
    assert compare({("baseline", 0): long_runs[("baseline", 0)]}, masked, ["fast"], timing)["fast"][
        "steps"
    ]["per_seed"] == {0: None}


def test_the_baselines_seconds_are_the_studys_reference_methods():
    """The flow study calls the baseline `ddpm` (a copy of the masked study's runs): its timing
    has ddpm's seconds, and those are the long baseline's."""
    long_runs = {("baseline", 0): record("baseline", 0, {2000: 40.0, 4000: 20.0, 6000: 10.0})}
    flow = {("sit", 0): record("sit", 0, {1000: 30.0, 2000: 10.0})}
    timing = {"methods": {"ddpm": {"sec_per_step": {0: 1.0}}, "sit": {"sec_per_step": {0: 2.0}}}}
    result = compare(long_runs, flow, ["sit"], timing, reference="ddpm")
    assert result["sit"]["steps"]["per_seed"] == {0: pytest.approx(3.0)}
    assert result["sit"]["seconds"]["per_seed"] == {0: pytest.approx(1.5)}  # 6000 s / 4000 s
    unnamed = compare(long_runs, flow, ["sit"], timing)  # this timing has no "baseline"
    assert unnamed["sit"]["seconds"]["per_seed"] == {0: None}
