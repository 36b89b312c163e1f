"""benchmarks/speedup.py: the speed-up summary on curves with known answers, the plan checks,
and the held-out loss-per-region probe on a model whose output is known (zero)."""

import argparse

import pytest
import speedup
import torch

from speed.diffusion.timesteps import loss_by_region


def curve(fids: dict[int, float]) -> dict[int, dict]:
    return {step: {"fid": fid} for step, fid in fids.items()}


def test_summary_per_seed_mean_and_mean_curve():
    curves = {
        # seed 0: baseline reaches its final 6.0 at step 300, SpeeD at 200 -> 1.5x
        "baseline/seed0": curve({100: 10.0, 200: 8.0, 300: 6.0}),
        "speed/seed0": curve({100: 9.0, 200: 6.0, 300: 5.0}),
        # seed 1: target 4.0; SpeeD crosses it halfway between 100 (5.0) and 200 (3.0) -> 2x
        "baseline/seed1": curve({100: 8.0, 200: 6.0, 300: 4.0}),
        "speed/seed1": curve({100: 5.0, 200: 3.0, 300: 2.0}),
    }
    summary = speedup.summarize_speedups(curves, (0, 1))
    assert summary["per_seed"][0]["speedup"] == pytest.approx(1.5)
    assert summary["per_seed"][1]["speed_steps"] == pytest.approx(150.0)
    assert summary["per_seed"][1]["speedup"] == pytest.approx(2.0)
    assert summary["speedup_mean"] == pytest.approx(1.75)
    assert summary["speedup_std"] == pytest.approx(0.5 / 2**0.5)  # sample std of 1.5, 2
    # mean curves: baseline 9, 7, 5; SpeeD 7, 4.5, 3.5 -> SpeeD reaches 5 at 100 + 2/2.5*100
    assert summary["mean_curve"]["baseline"] == {100: 9.0, 200: 7.0, 300: 5.0}
    assert summary["speedup_of_mean_curves"] == pytest.approx(300 / 180)


def test_summary_counts_a_seed_that_never_reaches_the_target():
    curves = {
        "baseline/seed0": curve({100: 10.0, 200: 6.0}),
        "speed/seed0": curve({100: 9.0, 200: 7.0}),
    }
    summary = speedup.summarize_speedups(curves, (0,))
    assert summary["per_seed"][0]["speedup"] is None
    assert summary["speedup_mean"] is None
    assert summary["seeds_reaching_target"] == "0/1"


def args(**kw):
    base = dict(quick=False, seeds=None, steps=None, eval_every=None, num_samples=None,
                ablations=None, ablation_steps=None, no_inception=False)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_plan_defaults_quick_and_checks():
    assert speedup.plan_from_args(args()).seeds == (0, 1, 2)
    quick = speedup.plan_from_args(args(quick=True))
    assert quick.seeds == (0,) and quick.ablations == () and quick.inception_steps == ()
    full = speedup.plan_from_args(args())
    same = ("model", "steps", "eval_every", "num_samples", "num_reference", "num_steps")
    assert all(getattr(quick, k) == getattr(full, k) for k in same)  # the full run re-uses it
    assert speedup.plan_from_args(args(no_inception=True)).inception_steps == ()
    with pytest.raises(SystemExit, match="multiple of --eval-every"):
        speedup.plan_from_args(args(steps=1100, eval_every=250))
    with pytest.raises(SystemExit, match="unknown ablation"):
        speedup.plan_from_args(args(ablations=["k7"]))


def test_region_losses_of_a_zero_output_model_are_the_noise_power(
    tmp_path, tiny_overrides, tiny_dit
):
    """With lr 0 the plan's DiT keeps its adaLN-Zero init, whose output is exactly 0: the eps-MSE
    of each region is then the mean squared noise of the images drawn into it."""
    run = speedup.make_run(
        "baseline/seed0",
        speedup.METHODS["baseline"],
        tmp_path,
        seed=0,
        steps=1,
        every=1,
        extra=[
            *speedup.Plan().model,
            *tiny_overrides(tmp_path)[3:],
            *tiny_dit,
            "optimizer.lr=0.0",
            "sample_every=0",
        ],
    )
    assert run.checkpoint_steps == [1]
    assert speedup.train_run(run) > 0
    assert speedup.train_run(run) == 0.0  # finished: not trained again
    num_images = 20
    losses = speedup.region_losses(run, num_images, seed=7)

    generator = torch.Generator().manual_seed(7)
    t = torch.arange(num_images) * 1000 // num_images
    t = t[torch.randperm(num_images, generator=generator)]
    noise = torch.randn(num_images, 1, 28, 28, generator=generator)
    expected = loss_by_region(t, noise.pow(2).mean(dim=(1, 2, 3)))
    assert list(losses) == list(expected) and len(losses) == 10
    for key in expected:
        assert losses[key] == pytest.approx(expected[key], rel=1e-5)
