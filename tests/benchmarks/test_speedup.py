"""benchmarks/speedup.py and speedup_report.py: the study's stages and learning-rate choice on
records with known scores, run claims between workers, the report's arithmetic, and the held-out
loss-per-region probe on a model whose output is known (zero)."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import speedup
import speedup_plan
import speedup_report
import speedup_scoring
import torch

from speed.config import load_config
from speed.diffusion import create_diffusion
from speed.diffusion.timesteps import loss_by_region
from speed.run import RunDir
from speed.runners.train import train
from speed.sweep.state import read_record, record_sweep

PLAN = dataclasses.replace(speedup_plan.PLANS["unet"], steps=300, eval_every=100, g1_every=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    sweep = speedup_plan.study_sweep(PLAN, tmp_path_factory.mktemp("study"), [])
    return speedup_plan.study_runs(sweep)


def record(run, final_fid, curve=(30.0, 20.0, 10.0), accuracy=0.5):
    """A finished run's record with the given final FID and FID curve at steps 100, 200, 300."""
    steps = {
        str(100 * (i + 1)): {"fid": f, "class_accuracy": accuracy} for i, f in enumerate(curve)
    }
    return {
        "name": run.name,
        "method": run.method,
        "sampling": run.sampling,
        "weighting": run.weighting,
        "lr": run.lr,
        "seed": run.seed,
        "curve": steps,
        "curve_guidance1": {"300": {"fid": curve[-1] + 1, "class_accuracy": accuracy}},
        "final": {
            "domain": {"fid": final_fid, "class_accuracy": accuracy},
            "inception": {"fid": 2 * final_fid},
        },
        "region_losses": {"loss_t/000-099": 0.1, "loss_t/900-999": 0.01},
        "sec_per_step": 0.5,
        "machine": "test",
        "date": "2026-12-01",
    }


def test_the_study_is_the_grid_times_rates_and_seeds(runs):
    assert len(runs) == 3 * 3 * len(PLAN.lrs) * len(PLAN.seeds)
    named = runs[("speed", "speed", 2.0e-3, 0)]
    assert named.method == "speed_paper" and runs[("uniform", "p2", 1.0e-3, 1)].method is None
    assert "diffusion.sampling=tanh" in runs[("tanh", "p2", 2.0e-3, 0)].name


def test_stages_choose_each_methods_rate_then_the_common_rate_for_the_other_cells(runs):
    todo, waiting = speedup_plan.pending(PLAN, runs, {})
    first = [(r.method, r.lr, r.seed) for r in todo]
    assert first == [(m, lr, 0) for lr in PLAN.lrs for m in speedup_plan.NAMED] and waiting
    # Seed 0 finished: baseline and the paper's SpeeD are better at 1e-3, the released at 2e-3.
    finals = {("baseline", 1e-3): 10.0, ("speed_paper", 1e-3): 12.0, ("speed_released", 2e-3): 9.0}
    records = {r.name: record(r, finals.get((r.method, r.lr), 50.0)) for r in todo}
    todo, waiting = speedup_plan.pending(PLAN, runs, records)
    assert not waiting and len(todo) == 6 + 6 + 4
    seeds = [(r.method, r.lr, r.seed) for r in todo[:6]]
    expected_lr = {"baseline": 1e-3, "speed_paper": 1e-3, "speed_released": 2e-3}
    assert seeds == [(m, expected_lr[m], s) for s in (1, 2) for m in speedup_plan.NAMED]
    others = todo[6:12]
    assert {r.lr for r in others} == {1e-3} and all(r.method is None for r in others)
    assert {(r.sampling, r.weighting) for r in others}.isdisjoint(speedup_plan.NAMED.values())
    # Last, seeds 1 and 2 of the paper's two parts alone, at the common rate.
    assert [(r.sampling, r.weighting, r.lr, r.seed) for r in todo[12:]] == [
        (*cell, 1e-3, seed) for seed in (1, 2) for cell in speedup_plan.PARTS.values()
    ]
    records.update({r.name: record(r, 20.0) for r in todo})
    assert speedup_plan.pending(PLAN, runs, records) == ([], False)


def test_a_restarted_study_first_finishes_the_runs_it_began(tmp_path):
    """Every worker first tries the runs with a checkpoint, whichever shard they fell in, then its
    own shard of the rest."""
    sweep = speedup_plan.study_sweep(PLAN, tmp_path, [])
    todo, _ = speedup_plan.pending(PLAN, speedup_plan.study_runs(sweep), {})
    begun = [todo[4], todo[1]]
    for run in begun:
        checkpoints = RunDir(run.sweep_run.run_dir(sweep.sweep_dir)).checkpoints
        checkpoints.mkdir(parents=True)
        (checkpoints / "0000100.pt").write_bytes(b"")
    (RunDir(todo[0].sweep_run.run_dir(sweep.sweep_dir)).checkpoints).mkdir(parents=True)
    rest = [r for r in todo if r not in begun]
    for index in (0, 1):
        share = speedup.worker_share(todo, sweep, (index, 2))
        assert share[:2] == [todo[1], todo[4]]  # study order kept
        assert share[2:] == rest[index::2]
    assert speedup.worker_share(todo[:2], sweep, (1, 2)) == [todo[1], todo[0]]  # shard empty


def test_a_run_stopped_before_its_last_step_is_not_scored(tmp_path, monkeypatch):
    """SIGTERM makes train() save and return early: the run must stay unrecorded and pending."""
    sweep = speedup_plan.study_sweep(PLAN, tmp_path, [])
    run = speedup_plan.study_runs(sweep)[("uniform", "none", 2.0e-3, 0)]
    record_sweep(dataclasses.replace(sweep, runs=(run.sweep_run,)), ["new"])
    monkeypatch.setattr(speedup, "train", lambda cfg: None)  # stopped before any checkpoint
    scorer = type("NoScorer", (), {"plan": PLAN})()
    with pytest.raises(speedup.StudyInterrupted, match="stopped before step 300"):
        speedup.do_run(run, sweep, scorer, noise_probe=False)
    (entry,) = read_record(sweep.sweep_dir)["runs"]
    assert entry["status"]["train"] == "pending"


def test_a_scorer_uses_the_studys_domain_classifier_unless_told_otherwise(tmp_path, monkeypatch):
    """Every script that scores study models (the study, the hand-offs) must use the committed
    network, never a classifier trained afresh on the machine at hand."""
    asked = []

    def ensure(path):
        asked.append(path)
        raise StopIteration  # the path is all this test needs

    monkeypatch.setattr(speedup_scoring.domain_classifier, "ensure_domain_classifier", ensure)
    for kwargs in ({}, {"domain_path": tmp_path / "other.pt"}):
        with pytest.raises(StopIteration):
            speedup_scoring.Scorer(PLAN, tmp_path, **kwargs)
    assert asked == [speedup_plan.DOMAIN_CLASSIFIER, tmp_path / "other.pt"]
    assert speedup_plan.DOMAIN_CLASSIFIER.is_file()


def test_common_rate_is_the_majority_and_the_smaller_on_a_tie():
    plan = dataclasses.replace(PLAN, lrs=(2e-3, 1e-3, 5e-4))
    assert speedup_plan.common_lr({"a": 2e-3, "b": 2e-3, "c": 1e-3}, plan) == 2e-3
    assert speedup_plan.common_lr({"a": 2e-3, "b": 5e-4, "c": 1e-3}, plan) == 5e-4
    assert speedup_plan.common_lr({"a": 2e-3, "b": None, "c": 1e-3}, plan) is None


def test_a_run_is_claimed_by_one_live_process(tmp_path):
    assert speedup.claim(tmp_path) and speedup.claim(tmp_path)  # its own claim again
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        holder = {"host": socket.gethostname(), "pid": other.pid}
        (tmp_path / speedup.CLAIM_FILE).write_text(json.dumps(holder))
        assert not speedup.claim(tmp_path)  # a live worker holds it
    finally:
        other.kill()
        other.wait()
    assert speedup.claim(tmp_path)  # its holder died: taken over
    assert json.loads((tmp_path / speedup.CLAIM_FILE).read_text())["pid"] == os.getpid()
    speedup.release(tmp_path)
    assert not (tmp_path / speedup.CLAIM_FILE).exists()


def test_report_speedups_means_and_tables(runs, tmp_path):
    """Baseline curves 30/20/10 (target 10 at step 300); the paper's SpeeD reaches 10 at 150
    (seed 0: 2x) and at 200 (seed 1: 1.5x); the released variant never (seed 0 and 1)."""
    chosen = []
    for seed in (0, 1):
        chosen += [record(runs[("uniform", "none", lr, seed)], 10.0) for lr in PLAN.lrs]
    paper = {0: (20.0, 0.0, -5.0), 1: (20.0, 10.0, 5.0)}
    for seed, curve in paper.items():
        chosen += [record(runs[("speed", "speed", lr, seed)], 8.0, curve) for lr in PLAN.lrs]
    for seed in (0, 1):
        chosen += [record(runs[("tanh", "p2", lr, seed)], 20.0, (40, 30, 20)) for lr in PLAN.lrs]
    weights_only = record(runs[("uniform", "speed", PLAN.lrs[0], 0)], 9.0, (15.0, 10.0, 5.0))
    p2_only = record(runs[("uniform", "p2", PLAN.lrs[0], 0)], 12.0, (12.0, 11.0, 10.0))
    records = {r["name"]: r for r in [*chosen, weights_only, p2_only]}
    summary = speedup_report.summarize(PLAN, records)
    paper_speedup = summary["speedup"]["speed_paper"]
    assert paper_speedup["per_seed"] == {0: pytest.approx(2.0), 1: pytest.approx(1.5)}
    assert paper_speedup["mean"] == pytest.approx(1.75)
    assert paper_speedup["std"] == pytest.approx(0.5 / 2**0.5)
    released = summary["speedup"]["speed_released"]
    assert released["per_seed"] == {0: None, 1: None} and released["mean"] is None
    # both rates tie for every method: the first (lowest FID, first found) is chosen
    assert summary["chosen_lr"] == {m: PLAN.lrs[0] for m in speedup_plan.NAMED}
    baseline = summary["methods"]["baseline"]
    assert baseline["seeds"] == [0, 1] and baseline["fid_mean"][200] == 20.0
    assert summary["methods"]["speed_paper"]["fid_mean"] == {100: 20.0, 200: 5.0, 300: 0.0}
    assert summary["methods"]["speed_paper"]["final_inception_fid"] == (16.0, 0.0)
    table = speedup_report.markdown("unet", PLAN, summary, records)
    assert "| speed_paper | seed 0: 2.00x, seed 1: 1.50x | 1.75 +- 0.35 (2/2 reach)" in table
    assert "| speed_released | seed 0: never, seed 1: never | - (0/2 reach)" in table
    # a part of the paper's SpeeD is reported at the common rate beside the named methods
    part = summary["methods"]["speed_weighting_only"]
    assert part["lr"] == PLAN.lrs[0] and part["seeds"] == [0]
    assert summary["speedup"]["speed_weighting_only"]["per_seed"] == {0: pytest.approx(1.5)}
    assert "speed_sampling_only" not in summary["methods"]
    assert "speed_sampling_only" not in summary["speedup"]
    # and so is a part of the released variant (P2 alone reaches 10 at step 300: 1x)
    assert summary["methods"]["p2_weighting_only"]["lr"] == PLAN.lrs[0]
    assert summary["speedup"]["p2_weighting_only"]["per_seed"] == {0: pytest.approx(1.0)}
    assert "tanh_sampling_only" not in summary["methods"]
    assert f"| speed_weighting_only | {PLAN.lrs[0]:g} | 1 | 9.0 |" in table
    # the grid cells show the domain and the Inception FID (the records' is twice the domain's)
    assert summary["grid"]["uniform/speed"]["inception_fid"] == 18.0
    assert "| uniform | 10.0 / 20.0 | 9.0 / 18.0 | 12.0 / 24.0 |" in table


def test_report_compares_every_method_at_the_shared_rate(runs, tmp_path):
    """The baseline is best at 2e-3 (final 10 against 12), the others at 1e-3: the shared-rate
    table compares all three at 1e-3, each against the baseline's 1e-3 run of its seed, beside
    the comparison at each method's own rate."""
    plan = dataclasses.replace(PLAN, credit_cells=False, shared_rate_seeds=True)
    slow, fast = (30.0, 20.0, 10.0), (20.0, 10.0, 5.0)  # fast reaches 10 at step 200
    records = [
        record(runs[("uniform", "none", 2e-3, 0)], 10.0, slow),
        record(runs[("uniform", "none", 1e-3, 0)], 12.0, fast),
        record(runs[("speed", "speed", 2e-3, 0)], 20.0, slow),
        record(runs[("speed", "speed", 1e-3, 0)], 8.0, fast),
        record(runs[("tanh", "p2", 2e-3, 0)], 20.0, slow),
        record(runs[("tanh", "p2", 1e-3, 0)], 9.0, slow),
    ]
    summary = speedup_report.summarize(plan, {r["name"]: r for r in records})
    assert summary["speedup"]["speed_paper"]["per_seed"] == {0: pytest.approx(1.5)}
    shared = summary["shared_rate"]
    assert shared["lr"] == 1e-3 and shared["methods"]["baseline"]["lr"] == 1e-3
    assert shared["methods"]["baseline"]["final_domain_fid"] == (12.0, None)
    assert shared["speedup"]["speed_paper"]["per_seed"] == {0: pytest.approx(1.0)}
    assert shared["speedup"]["speed_released"]["per_seed"] == {0: None}  # never reaches 5
    table = speedup_report.markdown("dit", plan, summary, {r["name"]: r for r in records})
    assert "Every method at the common rate, lr 0.001" in table
    assert "| speed_paper | 1 | 8.0 | 0.500 | 16.0 | seed 0: 1.00x | 1.00 (1/1 reach) |" in table
    without = speedup_report.summarize(PLAN, {r["name"]: r for r in records})
    assert without["shared_rate"] is None
    speedup_report.plot("dit", plan, summary, tmp_path / "shared.png")  # draws the 1e-3 baseline
    assert (tmp_path / "shared.png").stat().st_size > 10_000


def test_timestep_tables_show_the_variants_densities_and_weights():
    tables = speedup_report.timestep_tables(PLAN)
    probs, weights = tables["baseline"]
    assert probs == pytest.approx([1e-3] * 1000) and set(weights) == {1.0}
    probs, weights = tables["speed_paper"]
    assert probs.sum() == pytest.approx(1.0)
    # asymmetric: t >= 700 holds 300 of 5 * 700 + 300 shares; dual: the mirrors |t - 642| never
    # land there, so half the draws do (about 8x less often than uniform's 0.3)
    assert probs[700:].sum() == pytest.approx(0.5 * 300 / 3800)
    assert weights[700:] == pytest.approx([1.0] * 300) and weights[:700].max() <= 0.6 + 1e-12
    probs, weights = tables["speed_released"]
    abar = create_diffusion("").alphas_cumprod
    assert weights == pytest.approx(1.0 - abar)  # P2 with k = gamma = 1: 1 / (1 + SNR)


def test_region_losses_of_a_zero_output_model_are_the_noise_power(
    tmp_path, tiny_overrides, tiny_dit
):
    """With lr 0 the DiT keeps its adaLN-Zero init, whose output is exactly 0: the eps-MSE of each
    region is then the mean squared noise of the images drawn into it."""
    config = speedup_plan.CONFIGS / "dit.yaml"
    words = [*tiny_overrides(tmp_path, steps=1), *tiny_dit, "optimizer.lr=0.0", "sample_every=0"]
    train(load_config(config, "train", words))
    num_images = 20
    losses = speedup_scoring.region_losses(config, words, num_images, seed=7)

    generator = torch.Generator().manual_seed(7)
    t = torch.arange(num_images) * 1000 // num_images
    t = t[torch.randperm(num_images, generator=generator)]
    noise = torch.randn(num_images, 1, 28, 28, generator=generator)
    expected = loss_by_region(t, noise.pow(2).mean(dim=(1, 2, 3)))
    assert list(losses) == list(expected) and len(losses) == 10
    for key in expected:
        assert losses[key] == pytest.approx(expected[key], rel=1e-5)


def test_seconds_per_step_is_the_mean_over_the_training_log(tmp_path):
    run = RunDir(tmp_path)
    assert speedup._mean_sec_per_step(run) is None
    run.logs.mkdir(parents=True)
    run.metrics_file.write_text('{"step": 100, "sec_per_step": 0.5}\n{"step": 1}\n'
                                '{"step": 200, "sec_per_step": 1.5}\n{"step": 3')  # fmt: skip
    assert speedup._mean_sec_per_step(run) == pytest.approx(1.0)  # a killed run's cut line: skipped


def test_a_plan_without_credit_cells_ends_with_the_named_methods_seeds(runs):
    plan = dataclasses.replace(PLAN, credit_cells=False)
    first, _ = speedup_plan.pending(plan, runs, {})
    records = {r.name: record(r, 10.0) for r in first}
    second, waiting = speedup_plan.pending(plan, runs, records)
    assert not waiting and {r.method for r in second} == set(speedup_plan.NAMED)
    assert {r.seed for r in second} == {1, 2} and len(second) == 6
    records.update({r.name: record(r, 10.0) for r in second})
    assert speedup_plan.pending(plan, runs, records) == ([], False)


def test_a_report_without_finished_runs_says_so(tmp_path, capsys):
    assert speedup.main(["--backbone", "dit", "--report", "--results", str(tmp_path)]) == 1
    assert "no finished runs" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_shared_rate_seeds_run_every_method_at_the_common_rate(runs):
    """The baseline chose 2e-3, the others 1e-3: with shared_rate_seeds the baseline's seeds 1 and 2
    also run at 1e-3, after the chosen rates' seeds; the other methods have theirs already."""
    plan = dataclasses.replace(PLAN, credit_cells=False, shared_rate_seeds=True)
    first, waiting = speedup_plan.pending(plan, runs, {})
    assert len(first) == 6 and waiting
    finals = {("baseline", 2e-3): 10.0, ("speed_paper", 1e-3): 12.0, ("speed_released", 1e-3): 9.0}
    records = {r.name: record(r, finals.get((r.method, r.lr), 50.0)) for r in first}
    partial = dict(list(records.items())[:5])  # the released variant's rate is not chosen yet
    todo, waiting = speedup_plan.pending(plan, runs, partial)
    assert waiting and [(r.method, r.lr, r.seed) for r in todo] == [
        ("speed_released", 1e-3, 0),
        ("baseline", 2e-3, 1),
        ("speed_paper", 1e-3, 1),
        ("baseline", 2e-3, 2),
        ("speed_paper", 1e-3, 2),
    ]
    todo, waiting = speedup_plan.pending(plan, runs, records)
    assert not waiting
    assert [(r.method, r.lr, r.seed) for r in todo] == [
        ("baseline", 2e-3, 1),
        ("speed_paper", 1e-3, 1),
        ("speed_released", 1e-3, 1),
        ("baseline", 2e-3, 2),
        ("speed_paper", 1e-3, 2),
        ("speed_released", 1e-3, 2),
        ("baseline", 1e-3, 1),
        ("baseline", 1e-3, 2),
    ]
    records.update({r.name: record(r, 10.0) for r in todo})
    assert speedup_plan.pending(plan, runs, records) == ([], False)
