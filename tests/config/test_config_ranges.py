"""Numbers that reach torch or numpy are range-checked when the config is loaded: one line naming
the key and the allowed range, before anything runs."""

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.config_schema import RANGES
from speed.errors import ConfigError
from speed.utils.seeding import derived_seed, seed_everything


@pytest.mark.parametrize(
    "word,message",
    [
        ("seed=18446744073709551616", "config key 'seed' must lie in 0..4294967295"),
        ("seed=-1", "config key 'seed' must lie in 0..4294967295, got -1"),
        ("num_steps=0", "config key 'num_steps' must be >= 1, got 0"),
        ("global_batch_size=0", "config key 'global_batch_size' must be >= 1"),
        ("data.batch_size=0", "config key 'data.batch_size' must be >= 1"),
        ("data.num_workers=-2", "config key 'data.num_workers' must be >= 0"),
        ("image_size=-32", "config key 'image_size' must be >= 0"),
        ("ema_rates=[0.999,1.5]", "config key 'ema_rates' must lie in 0.0..1.0, got 1.5"),
        ("guidance_scale=.nan", "config key 'guidance_scale' must be a finite number"),
        ("inference.guidance_scale=[1.0,.inf]", "'guidance_scale' must be a finite number"),
        ("num_samples=9223372036854775808", "'num_samples' must fit in 64 bits"),
        ("model.model_channels=100000000000000000000", "'model.model_channels' must fit in 64"),
        ("sample_classes=[1,-99999999999999999999]", "'sample_classes' must fit in 64 bits"),
    ],
)
def test_numbers_out_of_range_are_one_line_naming_the_key(
    main, demo_config, tmp_path, capsys, word, message
):
    phase = "inference" if word.startswith("inference.") else "train"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(demo_config, phase, [f"experiment_dir={tmp_path}", word])
    assert main(["-c", demo_config, "-p", phase, f"experiment_dir={tmp_path}", word]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_largest_seed_works_wherever_a_seed_goes():
    """The bound is what numpy takes, and what torch takes as a per-rank seed seed * W + r."""
    low, high = RANGES["seed"]
    for seed in (low, high):
        seed_everything(seed)
        np.random.seed(seed)
        torch.Generator().manual_seed(seed * 4096 + 4095)  # rank 4095 of 4096
        assert 0 <= derived_seed(seed, 1, 2) < 2**63
    with pytest.raises(ValueError):
        np.random.seed(high + 1)  # one past the bound is numpy's error
