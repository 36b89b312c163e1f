"""Sinusoidal embeddings and attention against their formulas, written out element by element."""

import math

import numpy as np
import pytest
import torch

from speed.models.layers import attention, sincos_pos_embed_2d, timestep_embedding


@pytest.mark.parametrize("dim", [8, 9])
def test_timestep_embedding_formula(dim):
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    got = timestep_embedding(t, dim).double()
    half = dim // 2
    for n, tn in enumerate(t.tolist()):
        for i in range(half):
            freq = math.exp(-math.log(10000.0) * i / half)
            assert got[n, i].item() == pytest.approx(math.cos(tn * freq), abs=1e-4)
            assert got[n, half + i].item() == pytest.approx(math.sin(tn * freq), abs=1e-4)
        if dim % 2:
            assert got[n, -1].item() == 0.0


def test_sincos_pos_embed_2d_formula():
    dim, grid_h, grid_w = 8, 2, 3
    table = sincos_pos_embed_2d(dim, grid_h, grid_w)
    assert table.shape == (grid_h * grid_w, dim)
    quarter = dim // 4
    for i in range(grid_h):
        for j in range(grid_w):
            row = table[i * grid_w + j]
            for k in range(quarter):
                omega = 10000.0 ** (-k / quarter)
                # First half encodes the column j, second half the row i; each [sin, cos].
                expected = [
                    (k, math.sin(j * omega)),
                    (quarter + k, math.cos(j * omega)),
                    (2 * quarter + k, math.sin(i * omega)),
                    (3 * quarter + k, math.cos(i * omega)),
                ]
                for index, value in expected:
                    assert row[index] == pytest.approx(value, abs=1e-12)


def test_sincos_needs_dim_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2, 2)


@pytest.mark.parametrize("fused", [True, False])
def test_attention_matches_softmax_formula(fused):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    got = attention(q, k, v, fused=fused)
    expected = np.zeros((2, 3, 5, 4))
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    for b in range(2):
        for h in range(3):
            scores = qn[b, h] @ kn[b, h].T / math.sqrt(4)
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            expected[b, h] = weights @ vn[b, h]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_fused_attention_equals_explicit_float32():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=gen) for _ in range(3))
    torch.testing.assert_close(
        attention(q, k, v, fused=True), attention(q, k, v, fused=False), atol=1e-5, rtol=0
    )
