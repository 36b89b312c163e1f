"""speed/study/summary.py and report.py on records with known scores: speed-ups in steps and in
seconds, means, bootstrap intervals, the shared-setting comparison, the tables, and the warnings
where a result cannot mean anything."""

import numpy as np
import pytest

from speed.diffusion import create_diffusion
from speed.flow import create_interpolant
from speed.study import figures, plan, report, summary

LRS = (0.002, 0.001)


def lr(value):
    return (("optimizer.lr", value),)


@pytest.fixture
def unet(tmp_path, small_speed_study):
    study = small_speed_study(tmp_path)
    return study, plan.study_runs(study, plan.study_sweep(study))


def test_report_speedups_means_and_tables(unet, make_record):
    """Baseline curves 30/20/10 (target 10 at step 300); the paper's SpeeD reaches 10 at 150
    (seed 0: 2x) and at 200 (seed 1: 1.5x) at half the baseline's time per step; the released
    variant never."""
    study, runs = unet
    records = []
    for seed in (0, 1):
        records += [make_record(runs[("baseline", lr(v), seed)], 10.0) for v in LRS]
    paper = {0: (20.0, 0.0, -5.0), 1: (20.0, 10.0, 5.0)}
    for seed, curve in paper.items():
        records += [make_record(runs[("speed_paper", lr(v), seed)], 8.0, curve, sec_per_step=0.25)
                    for v in LRS]  # fmt: skip
    for seed in (0, 1):
        records += [make_record(runs[("speed_released", lr(v), seed)], 20.0, (40, 30, 20))
                    for v in LRS]  # fmt: skip
    weights_only = make_record(runs[("speed_weighting_only", lr(LRS[0]), 0)], 9.0, (15, 10, 5))
    p2_only = make_record(runs[("p2_weighting_only", lr(LRS[0]), 0)], 12.0, (12.0, 11.0, 10.0))
    records = {r["name"]: r for r in [*records, weights_only, p2_only]}
    result = summary.summarize(study, runs, records)
    paper_speedup = result["speedup"]["speed_paper"]
    assert paper_speedup["per_seed"] == {0: pytest.approx(2.0), 1: pytest.approx(1.5)}
    assert paper_speedup["mean"] == pytest.approx(1.75)
    assert paper_speedup["std"] == pytest.approx(0.5 / 2**0.5)
    low, high = paper_speedup["interval"]  # resampled means of two values lie between them
    assert 1.5 <= low <= 1.75 <= high <= 2.0
    # half the time per step: twice the step speed-up in wall-clock seconds
    assert paper_speedup["seconds"]["per_seed"] == {0: pytest.approx(4.0), 1: pytest.approx(3.0)}
    released = result["speedup"]["speed_released"]
    assert released["per_seed"] == {0: None, 1: None} and released["mean"] is None
    assert released["seconds"]["per_seed"] == {0: None, 1: None}
    # both rates tie for every method: the first (lowest FID, first found) is chosen
    assert result["chosen"] == {m: {"optimizer.lr": LRS[0]} for m in result["chosen"]}
    baseline = result["methods"]["baseline"]
    assert baseline["seeds"] == [0, 1] and baseline["curves"]["curve"]["fid"]["mean"][200] == 20.0
    paper_fid = result["methods"]["speed_paper"]["curves"]["curve"]["fid"]
    assert paper_fid["mean"] == {100: 20.0, 200: 5.0, 300: 0.0}
    assert result["methods"]["speed_paper"]["final"]["inception"]["fid"] == (16.0, 0.0)
    table = report.markdown(study, result, records, "python -m speed.study test.yaml --report")
    assert "| speed_paper | seed 0: 2.00x, seed 1: 1.50x | 1.75 +- 0.35 (2/2 reach) |" in table
    assert "| seed 0: 4.00x, seed 1: 3.00x | 3.50 +- 0.71 (2/2 reach) |" in table
    assert "| speed_released | seed 0: never, seed 1: never | - (0/2 reach) |" in table
    # a part of the paper's SpeeD is reported at the common rate beside the named methods
    part = result["methods"]["speed_weighting_only"]
    assert part["setting"] == {"optimizer.lr": LRS[0]} and part["seeds"] == [0]
    assert result["speedup"]["speed_weighting_only"]["per_seed"] == {0: pytest.approx(1.5)}
    assert "speed_sampling_only" not in result["methods"]
    assert "speed_sampling_only" not in result["speedup"]
    # and so is a part of the released variant (P2 alone reaches 10 at step 300: 1x)
    assert result["speedup"]["p2_weighting_only"]["per_seed"] == {0: pytest.approx(1.0)}
    assert "| speed_weighting_only | optimizer.lr 0.002 | 1 | 9.0 | 0.500 | 18.0 |" in table
    # every run's final domain and Inception FID (the records' Inception is twice the domain's)
    assert f"| {weights_only['name']} | 9.0 | 0.500 | 18.0 | 300 | 0.500 |" in table
    assert "| baseline | 10.0 | 10.0 |" in table  # the fairness grid, first seed
    assert "python -m speed.study test.yaml --report" in table


def test_a_ladder_says_which_part_pays(tmp_path, small_speed_study, make_record):
    """baseline -> weights only -> the paper's SpeeD: the weights reach the baseline's final 10
    at step 200 (1.5x), the paper's SpeeD at 150 on seed 0 (2x over the baseline, so 2 / 1.5
    over the weights) at half the time per step (4x in wall-clock: 4 / 1.5 over the weights);
    seed 1 has no weights-only run, and P2 alone never reaches it on seed 0."""
    ladder = ["baseline", "speed_weighting_only", "speed_paper", "p2_weighting_only"]
    study = small_speed_study(tmp_path, ladder=ladder)
    runs = plan.study_runs(study, plan.study_sweep(study))
    records = [make_record(runs[("baseline", lr(v), s)], 10.0) for v in LRS for s in (0, 1)]
    records += [make_record(runs[("speed_paper", lr(v), s)], 8.0, (20.0, 0.0, -5.0),
                            sec_per_step=0.25) for v in LRS for s in (0, 1)]  # fmt: skip
    # every tuned method has its rate chosen, so the untuned parts run at the common one
    records += [make_record(runs[("speed_released", lr(v), s)], 20.0, (40, 30, 20))
                for v in LRS for s in (0, 1)]  # fmt: skip
    records.append(make_record(runs[("speed_weighting_only", lr(LRS[0]), 0)], 9.0, (15, 10, 5)))
    records.append(make_record(runs[("p2_weighting_only", lr(LRS[0]), 0)], 12.0, (12, 11, 11)))
    result = summary.summarize(study, runs, {r["name"]: r for r in records})
    weights, paper, p2 = result["ladder"]
    assert (weights["from"], weights["to"]) == ("baseline", "speed_weighting_only")
    assert weights["steps"]["per_seed"] == {0: pytest.approx(1.5)}
    assert paper["steps"]["per_seed"] == {0: pytest.approx(2 / 1.5)}
    assert paper["seconds"]["per_seed"] == {0: pytest.approx(4 / 1.5)}
    assert p2["steps"]["per_seed"] == {0: None} and p2["steps"]["mean"] is None
    table = report.markdown(study, result, {r["name"]: r for r in records}, "cmd")
    assert "Which part pays (baseline -> speed_weighting_only -> speed_paper -> p2" in table
    assert ("| speed_paper | speed_weighting_only | seed 0: 1.33x | 1.33 (1/1 reach) "
            "| seed 0: 2.67x | 2.67 (1/1 reach) |") in table  # fmt: skip
    assert "| p2_weighting_only | speed_paper | seed 0: never | - (0/1 reach) |" in table
    figures.plot(study, runs, result, tmp_path / "ladder.png")  # a panel of the rungs' bars
    assert (tmp_path / "ladder.png").stat().st_size > 10_000
    no_ladder = small_speed_study(tmp_path)
    assert summary.summarize(no_ladder, runs, {r["name"]: r for r in records})["ladder"] == []


def test_report_compares_every_method_at_the_shared_rate(tmp_path, small_speed_study, make_record):
    """The baseline is best at 2e-3 (final 10 against 12), the others at 1e-3: the shared-setting
    table compares all three at 1e-3, each against the baseline's 1e-3 run of its seed, beside
    the comparison at each method's own rate."""
    study = small_speed_study(tmp_path, name="speed_dit")
    runs = plan.study_runs(study, plan.study_sweep(study))
    slow, fast = (30.0, 20.0, 10.0), (20.0, 10.0, 5.0)  # fast reaches 10 at step 200
    records = [
        make_record(runs[("baseline", lr(2e-3), 0)], 10.0, slow),
        make_record(runs[("baseline", lr(1e-3), 0)], 12.0, fast),
        make_record(runs[("speed_paper", lr(2e-3), 0)], 20.0, slow),
        make_record(runs[("speed_paper", lr(1e-3), 0)], 8.0, fast),
        make_record(runs[("speed_released", lr(2e-3), 0)], 20.0, slow),
        make_record(runs[("speed_released", lr(1e-3), 0)], 9.0, slow),
    ]
    records = {r["name"]: r for r in records}
    result = summary.summarize(study, runs, records)
    assert result["speedup"]["speed_paper"]["per_seed"] == {0: pytest.approx(1.5)}
    shared = result["shared"]
    assert shared["setting"] == {"optimizer.lr": 1e-3}
    assert shared["methods"]["baseline"]["final"]["domain"]["fid"] == (12.0, None)
    assert shared["speedup"]["speed_paper"]["per_seed"] == {0: pytest.approx(1.0)}
    assert shared["speedup"]["speed_released"]["per_seed"] == {0: None}  # never reaches 5
    table = report.markdown(study, result, records, "cmd")
    assert "Every tuned method at the common setting, optimizer.lr 0.001" in table
    assert "| speed_paper | seed 0: 1.00x | 1.00 (1/1 reach) | - | 1.00 |" in table
    no_shared = small_speed_study(tmp_path, name="speed_dit",
                                  fairness={"grid": {"optimizer.lr": list(LRS)}})  # fmt: skip
    assert summary.summarize(no_shared, runs, records)["shared"] is None
    figures.plot(study, runs, result, tmp_path / "shared.png")  # draws the 1e-3 baseline too
    assert (tmp_path / "shared.png").stat().st_size > 10_000


def test_timestep_tables_show_the_methods_densities_and_weights(unet):
    study, runs = unet
    tables = figures.timestep_tables(study, runs, ["baseline", "speed_paper", "speed_released"])
    kind, x, density, weights = tables["baseline"]
    assert kind == "discrete" and x[[0, -1]] == pytest.approx([1e-3, 1.0])
    assert density == pytest.approx([1.0] * 1000) and set(weights) == {1.0}
    kind, x, density, weights = tables["speed_paper"]
    assert density.mean() == pytest.approx(1.0)
    # asymmetric: t >= 700 holds 300 of 5 * 700 + 300 shares; dual: the mirrors |t - 642| never
    # land there, so half the draws do (about 8x less often than uniform's 0.3)
    assert density[700:].sum() / 1000 == pytest.approx(0.5 * 300 / 3800)
    assert weights[700:] == pytest.approx([1.0] * 300) and weights[:700].max() <= 0.6 + 1e-12
    _, _, _, weights = tables["speed_released"]
    abar = create_diffusion("").alphas_cumprod
    assert weights == pytest.approx(1.0 - abar)  # P2 with k = gamma = 1: 1 / (1 + SNR)


def test_an_interpolant_gets_its_own_timestep_panel(tmp_path):
    """A study mixing DDPM and interpolant methods draws them on separate time axes; SpeeD in
    continuous time shows its density (mean 1 over t) and its weights."""
    sampler = create_interpolant(faster=True).timestep_sampler
    kind, x, density, weights = figures.timestep_table(sampler)
    assert kind == "continuous" and np.all(np.diff(x) > 0) and 0 < x[0] < x[-1] < 1
    assert density.mean() == pytest.approx(1.0, abs=0.01)
    assert density == pytest.approx(sampler.distribution.effective_density(x))
    assert weights == pytest.approx(sampler.weighting.weights(x))
    uniform = figures.timestep_table(create_interpolant().timestep_sampler)
    ddpm = figures.timestep_table(create_diffusion("").timestep_sampler)
    assert figures._differ([uniform, figures.timestep_table(sampler)])
    assert not figures._differ([uniform, uniform])
    assert figures._differ([uniform, ddpm])  # never compared point by point


def test_warnings_where_a_result_cannot_mean_anything(unet, make_record, small_speed_study,
                                                      tmp_path):  # fmt: skip
    study, runs = unet
    same = {r["name"]: r for r in (
        make_record(runs[(m, lr(v), 0)], 10.0) for m in ("baseline", "speed_paper")
        for v in LRS)}  # fmt: skip
    found = summary.summarize(study, runs, same)["warnings"]
    assert any(w.startswith("every method scores the same final domain fid (10)") for w in found)
    # 0.995 ** 300 = 0.22 of the initial weights still in the sampled EMA
    assert any(w.startswith("baseline: its EMA (rate 0.995) still holds 22%") for w in found)
    weighted = "training losses are weighted differently (speed_paper:"
    assert any(w.startswith(weighted) for w in found)
    for record in same.values():
        if record["method"] == "speed_paper":
            record["final"]["domain"]["fid"] = 11.0
    found = summary.summarize(study, runs, same)["warnings"]
    assert not any(w.startswith("every method scores the same") for w in found)
    longer = small_speed_study(tmp_path, budget={"steps": 3000})
    assert not any("EMA" in w for w in summary.summarize(longer, runs, same)["warnings"])
    assert (  # the baseline's curve: 30, 20, 10 at steps 100, 200, 300 on every seed
        "baseline: its curve.fid still improved from 20 at step 200 to 10 at step 300 (seed "
        "mean; noise not measured: one seed, no probe), so the speed-ups are to a score it was "
        "still leaving: raise budget.steps and run the study again (recorded runs train on from "
        "their last checkpoint)"
    ) in found
    for early, message in ((10.15, False), (10.25, True)):  # within 2% of the final 10 or not
        settling = [
            make_record(runs[(m, lr(v), 0)], 10.0, (early if m == "baseline" else 20.0, 99.0, 10.0))
            for m in ("baseline", "speed_paper")
            for v in LRS
        ]  # a spike at step 200 does not count: its best before the last quarter does
        found = summary.summarize(study, runs, {r["name"]: r for r in settling})["warnings"]
        assert any(f"from {early} at step 100 to 10 at step 300" in w for w in found) is message

    raw_score = __import__("yaml").safe_load(study.path.read_text())["score"]
    raw_score["curves"]["curve"].update(every=100, metrics=["fid", "kid"])
    raw_score["curves"]["curve_guidance1"]["every"] = 300
    kid = small_speed_study(tmp_path, score=raw_score)
    assert summary._kid_warnings(kid) == [
        "curve curve: KID subsets of 256 images are the whole set of 256: every subset is the "
        "same and its spread says nothing; set score.metric_settings.kid_subset_size below it"
    ]
    raw_score["metric_settings"] = {"kid_subset_size": 100}
    assert summary._kid_warnings(small_speed_study(tmp_path, score=raw_score)) == []


def test_seconds_of_training_count_each_logged_step_once():
    rows = [
        {"step": 100, "sec_per_step": 0.5},
        {"step": 200, "sec_per_step": 1.0},
        {"step": 300, "sec_per_step": 9.0},  # killed after this line; resumed from step 200
        {"step": 1},
        {"step": 300, "sec_per_step": 2.0},
        {"step": 400, "sec_per_step": 2.0},
    ]
    from speed.study.work import mean_sec_per_step, training_seconds

    assert training_seconds(rows, [100, 200, 250, 400, 500]) == {
        100: 50.0, 200: 150.0, 250: 250.0, 400: 550.0,  # 500 lies past the log
    }  # fmt: skip
    assert mean_sec_per_step(rows) == pytest.approx((0.5 + 1 + 9 + 2 + 2) / 5)
    assert mean_sec_per_step([{"step": 1}]) is None


def test_bootstrap_interval_of_the_mean():
    assert summary.bootstrap_interval([1.0]) is None
    assert summary.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    values = list(np.random.default_rng(1).normal(1.5, 0.2, 50))
    low, high = summary.bootstrap_interval(values)
    half = 1.96 * np.std(values, ddof=1) / np.sqrt(50)  # the normal interval, for a large sample
    assert low == pytest.approx(np.mean(values) - half, abs=0.02)
    assert high == pytest.approx(np.mean(values) + half, abs=0.02)
    assert summary.bootstrap_interval(values) == (low, high)  # seeded: the same every time
