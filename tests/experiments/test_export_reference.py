"""speed/experiments/export_reference.py: the reference images are the dataset's own, unflipped,
whatever the torch random state (animal-mnist flips by default without the config saying so)."""

import numpy as np
import torch

from speed.config import load_config
from speed.data.animals import load_animal_mnist_arrays
from speed.experiments import export_reference
from speed.runners.build import build_reference_dataset

CONFIG = "configs/image/animals/base.yaml"


def test_reference_images_are_the_unflipped_images_whatever_the_random_state(tmp_path):
    cfg = load_config(CONFIG, "inference")
    assert "random_flip" not in cfg.data  # the class's default (True) applies
    drawn = []
    for torch_seed in (0, 1):
        torch.manual_seed(torch_seed)
        drawn.append(export_reference.export_reference(build_reference_dataset(cfg), 12, seed=3))
    (first, labels), (second, _) = drawn
    np.testing.assert_array_equal(first, second)
    images, all_labels = load_animal_mnist_arrays()
    order = np.random.default_rng(3).permutation(len(all_labels))[:12]
    np.testing.assert_array_equal(first[..., 0], images[order])
    np.testing.assert_array_equal(labels, all_labels[order])

    out = tmp_path / "reference.npz"
    words = ["-c", CONFIG, "--out", str(out), "--num", "12", "--seed", "3"]
    assert export_reference.main(words) == 0
    np.testing.assert_array_equal(np.load(out)["arr_0"], first)
