"""Respacing: which timesteps are kept (guided-diffusion's rules) and the respaced schedule."""

import numpy as np
import pytest
import torch

from speed.diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    SpacedDiffusion,
    respace,
    space_timesteps,
)

BETAS = np.linspace(1e-4, 0.02, 1000)
ABAR = np.cumprod(1.0 - BETAS)
TYPES = dict(
    model_mean_type=ModelMeanType.EPSILON,
    model_var_type=ModelVarType.LEARNED_RANGE,
    loss_type=LossType.MSE,
)


def test_ddim_stride():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim30") == set(range(0, 1000, 34))  # ceil(1000 / 34) = 30
    with pytest.raises(ValueError, match="no integer stride"):
        space_timesteps(1000, "ddim999")


def test_even_sections_by_hand():
    # two sections of 11 steps: strides 10 / 3 and 10 / 2, rounded
    assert space_timesteps(22, "4,3") == {0, 3, 7, 10, 11, 16, 21}
    # 10 steps in 3 sections: the first one gets the remainder (sizes 4, 3, 3)
    assert space_timesteps(10, [2, 2, 2]) == {0, 3, 4, 6, 7, 9}
    assert space_timesteps(10, 1) == {0}


def test_sections_10_15_20():
    kept = sorted(space_timesteps(300, "10,15,20"))
    assert len(kept) == 45
    for lo, count in [(0, 10), (100, 15), (200, 20)]:
        section = [s for s in kept if lo <= s < lo + 100]
        assert len(section) == count and section[0] == lo and section[-1] == lo + 99
        gaps = np.diff(section)
        assert gaps.max() - gaps.min() <= 1  # evenly spread, up to rounding


def test_250_even_steps_cover_both_ends():
    kept = sorted(space_timesteps(1000, "250"))
    assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999
    assert set(np.diff(kept)) <= {4, 5}


@pytest.mark.parametrize("spec", ["abc", "ddim", "10,x", "2000", "0"])
def test_bad_specs(spec):
    with pytest.raises(ValueError, match="timestep_respacing"):
        space_timesteps(1000, spec)


def test_respaced_betas_reproduce_the_kept_alpha_bars():
    kept = sorted(space_timesteps(1000, "10,15,20"))
    d = SpacedDiffusion(kept, betas=BETAS, **TYPES)
    assert d.num_timesteps == 45
    np.testing.assert_allclose(d.alphas_cumprod, ABAR[kept], rtol=1e-12)
    np.testing.assert_array_equal(d.timestep_map, kept)
    np.testing.assert_allclose(d.base_alphas_cumprod, ABAR, rtol=1e-12)
    assert d.original_num_steps == 1000


def test_model_is_called_with_original_timesteps():
    d = SpacedDiffusion(space_timesteps(1000, "ddim50"), betas=BETAS, **TYPES)
    seen = []

    def model(x, t, scale):
        seen.append(t.clone())
        return torch.cat([scale * x, torch.zeros_like(x)], dim=1)

    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    idx = torch.tensor([0, 1, 49])
    d.p_mean_variance(model, x, idx, model_kwargs={"scale": 0.1})
    d.training_losses(model, x, idx, model_kwargs={"scale": 0.1})
    for t in seen:
        assert t.dtype == torch.long
        assert t.tolist() == [0, 20, 980]


def test_respace_keeps_types_and_uses_the_base_schedule():
    spaced = SpacedDiffusion(space_timesteps(1000, "250"), betas=BETAS, **TYPES)
    again = respace(spaced, range(0, 1000, 100))
    np.testing.assert_allclose(again.alphas_cumprod, ABAR[::100], rtol=1e-12)
    assert again.model_var_type == ModelVarType.LEARNED_RANGE
    full = GaussianDiffusion(betas=BETAS, **TYPES)
    np.testing.assert_allclose(respace(full, [999]).alphas_cumprod, ABAR[[999]], rtol=1e-10)
    with pytest.raises(ValueError, match="subset"):
        respace(full, [1000])
