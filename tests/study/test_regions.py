"""speed/study/regions.py: when a tenth's loss counts as settled, which run of each method is
probed (the chosen learning rate once chosen), the class-mean bound against the loss of
that predictor measured by sampling, and the report's ratios."""

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.diffusion.timesteps import loss_by_region
from speed.experiments.export_reference import export_reference
from speed.runners.build import build_dataset, build_diffusion
from speed.study import plan, regions

LRS = (0.002, 0.001)


def lr(value):
    return (("optimizer.lr", value),)


@pytest.fixture
def study_runs(tmp_path, small_speed_study):
    study = small_speed_study(tmp_path)
    return study, plan.study_runs(study, plan.study_sweep(study))


def test_settled_is_the_first_step_from_which_the_loss_stays_near_the_last():
    trajectory = {100: 2.0, 200: 1.02, 300: 1.2, 400: 1.04, 500: 1.0}
    assert regions.settled_step(trajectory, 0.05) == 400  # 300 left the band again
    assert regions.settled_step(trajectory, 0.25) == 200
    assert regions.settled_step(trajectory, 1.5) == 100
    assert regions.settled_step({100: 3.0, 200: 1.0}, 0.05) == 200


def test_each_method_is_probed_at_its_chosen_rate_or_its_only_finished_one(study_runs, make_record):
    study, runs = study_runs
    baseline = [runs[("baseline", lr(v), 0)] for v in LRS]
    released = runs[("speed_released", lr(LRS[1]), 0)]
    records = {
        r.name: make_record(r, fid)
        for r, fid in [(baseline[0], 12.0), (baseline[1], 10.0), (released, 9.0)]
    }
    chosen = plan.probed_runs(study, runs, records)
    assert set(chosen) == {"baseline", "speed_released"}  # the paper's SpeeD has no run yet
    assert chosen["baseline"] == (baseline[1], lr(LRS[1]), True)
    assert chosen["speed_released"] == (released, lr(LRS[1]), False)


def test_report_gives_each_checkpoint_as_a_ratio_to_the_last():
    result = {
        "meta": {"study": "unet", "images": 20, "tolerance": 0.05, "machine": "m", "date": "d"},
        "class_mean_bound": {"loss_t/000-099": 0.2},
        "runs": {
            "baseline": {
                "setting": {"optimizer.lr": 1e-3},
                "setting_chosen": True,
                "losses": {"100": {"loss_t/000-099": 0.3}, "200": {"loss_t/000-099": 0.1}},
                "settled": {"loss_t/000-099": 200},
            }
        },
    }
    table = regions.markdown(result)
    assert "| 000-099 | 3.00 | 1.00 | 1.00e-01 | 200 | 0.50 |" in table
    assert "| class-mean bound | 2.00e-01 |" in table
    assert "## baseline (optimizer.lr 0.001, first seed)" in table


def test_class_mean_bound_is_the_loss_of_predicting_the_class_mean_image(
    tiny_overrides, tmp_path, demo_config
):
    """Monte Carlo: x_t from real images and fresh noise, eps predicted from x_t with x0 taken as
    the class's mean image; its eps-MSE per tenth matches SNR_t Var(x0 | y) to sampling error."""
    config, words, num = demo_config, tiny_overrides(tmp_path), 400
    bound = regions.class_mean_bound(config, words, num)

    cfg = load_config(config, "inference", [*words, "data.random_flip=false"])
    diffusion = build_diffusion(cfg)
    images, labels = export_reference(build_dataset(cfg), num, seed=0)
    x0 = torch.from_numpy(images[..., :1]).permute(0, 3, 1, 2).double() / 127.5 - 1.0
    means = {c: x0[labels == c].mean(0) for c in np.unique(labels)}
    mean_image = torch.stack([means[c] for c in labels])
    generator = torch.Generator().manual_seed(0)
    abar = torch.from_numpy(np.asarray(diffusion.alphas_cumprod, dtype=np.float64))
    t = torch.arange(1000).repeat_interleave(4)  # 4 draws of every timestep
    pick = torch.randint(num, (len(t),), generator=generator)
    noise = torch.randn(len(t), *x0.shape[1:], generator=generator, dtype=torch.float64)
    a = abar[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0[pick] + (1 - a).sqrt() * noise
    eps_hat = (x_t - a.sqrt() * mean_image[pick]) / (1 - a).sqrt()
    measured = loss_by_region(t, (eps_hat - noise).pow(2).mean(dim=(1, 2, 3)))
    assert list(measured) == list(bound)
    for tenth in bound:  # 400 draws of whole images per tenth: a few percent of sampling error
        assert measured[tenth] == pytest.approx(bound[tenth], rel=0.1), tenth
    assert bound["loss_t/000-099"] > 1 > bound["loss_t/900-999"] * 1e3  # SNR spans 1e5
