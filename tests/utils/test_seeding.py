"""Per-sample generators: a sample's noise is its own generator's, whatever its batch."""

import pytest
import torch

from speed.utils.seeding import randn_rows


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_one_generator_is_plain_randn():
    got = randn_rows((3, 2), torch.Generator().manual_seed(5))
    assert torch.equal(got, torch.randn((3, 2), generator=torch.Generator().manual_seed(5)))


def test_each_row_draws_from_its_own_generator():
    got = randn_rows((2, 4), gens(1, 2))
    assert torch.equal(got[0], torch.randn(4, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(got[1], torch.randn(4, generator=torch.Generator().manual_seed(2)))


def test_a_batch_of_several_samples_equals_each_alone():
    """Doubled rows (guidance's [cond; uncond]) cycle through the generators, so each sample's
    generator advances the same way alone and batched, draw after draw."""
    alone_a, alone_b = gens(7), gens(8)
    batched = gens(7, 8)
    for _ in range(3):
        a = randn_rows((2, 5), alone_a)  # [cond; uncond] of sample a alone
        b = randn_rows((2, 5), alone_b)
        both = randn_rows((4, 5), batched)  # [cond a, cond b; uncond a, uncond b]
        assert torch.equal(both[[0, 2]], a) and torch.equal(both[[1, 3]], b)


def test_rows_must_be_a_multiple_of_the_generators():
    with pytest.raises(ValueError, match="2 per-sample generators cannot draw 3 rows"):
        randn_rows((3, 1), gens(1, 2))
