"""benchmarks/ode_convergence.py on a tiny DiT in pixel space: its distance is the RMS pixel
difference, and DPM-Solver++ approaches the reference solution with every step count."""

import numpy as np
import ode_convergence
import torch


def test_rms_distance_is_per_image():
    exact = torch.zeros(2, 1, 2, 2)
    images = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    np.testing.assert_allclose(ode_convergence.rms_distance(images, exact), [1.0, 1.0])


def test_dpm_solver_approaches_the_reference_with_every_step_count(tiny):
    rows = [("dpm_solver++", n) for n in (5, 10, 20, 40)] + [("pndm", 5)]
    results, ddim_distance = ode_convergence.convergence(
        *tiny,
        rows,
        reference_steps=200,
        guidance_scale=2.0,
    )
    assert [r["setting"] for r in results][-1] == "pndm-5"
    assert [r["model_calls"] for r in results] == [5, 10, 20, 40, 5 + 9]
    distances = [r["rms"] for r in results[:4]]
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] < distances[0] / 10  # second order: 8x fewer steps, ~64x less error
    assert np.isfinite(ddim_distance) and ddim_distance > 0
