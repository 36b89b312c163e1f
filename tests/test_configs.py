"""Every experiment YAML under configs/ loads and validates for every phase, and its diffusion
node builds (model/data/autoencoder nodes may point at data or weights this machine lacks)."""

from pathlib import Path

import numpy as np
import pytest

from speed.config import instantiate, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if p != CONFIGS / "base.yaml")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
@pytest.mark.parametrize("phase", ["train", "inference", "sample"])
def test_config_loads(path, phase):
    cfg = load_config(path, phase)
    diffusion = instantiate(cfg.diffusion)
    if diffusion.family == "interpolant":  # a density on continuous t
        t = np.linspace(0.0, 1.0, 200001)
        density = diffusion.timestep_sampler.distribution.density(t)
        assert abs(np.trapezoid(density, t) - 1.0) < 1e-3
        return
    probs = diffusion.timestep_sampler.probs
    assert probs.shape == (diffusion.num_timesteps,)
    assert abs(probs.sum() - 1.0) < 1e-9


def test_faster_config_is_speed_weights_with_uniform_sampling():
    """The demo's faster.yaml: the change-aware weights alone (the study's finding on the UNet)."""
    cfg = load_config(CONFIGS / "image/animals/faster.yaml", "train")
    sampler = instantiate(cfg.diffusion).timestep_sampler
    assert sampler.probs[0] == pytest.approx(sampler.probs[999])
    weights = sampler.weights
    assert weights[800] == 1.0 and 0.4 <= weights[:700].min() < 0.45  # in [1 - lam, lam] below tau
    assert weights[:700].max() == pytest.approx(0.6)


def test_speed_switch_is_the_papers_recipe():
    cfg = load_config(CONFIGS / "image/animals/base.yaml", "train", ["diffusion.faster=true"])
    sampler = instantiate(cfg.diffusion).timestep_sampler
    below, above = sampler.probs[0], sampler.probs[999]
    assert below / above == pytest.approx(5.0)
    assert sampler.weights is not None and sampler.weights[800] == 1.0
