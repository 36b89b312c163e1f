"""Learning-rate multipliers."""

import math

import pytest

from speed.utils.lr_schedule import lr_multiplier


def test_schedules():
    assert lr_multiplier(5, "constant", 10, 100) == 1.0
    assert lr_multiplier(4, "warmup", 10, 100) == pytest.approx(0.5)
    assert lr_multiplier(50, "warmup", 10, 100) == 1.0
    assert lr_multiplier(55, "cosine", 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_multiplier(100, "cosine", 10, 100) == pytest.approx(0.0)
    assert lr_multiplier(75, "linear_anneal", 0, 100) == pytest.approx(0.25)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="lr_schedule: unknown 'cosin'"):
        lr_multiplier(0, "cosin", 10, 100)
