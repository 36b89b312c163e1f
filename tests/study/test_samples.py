"""speed/study/samples.py: the images of each class in label order, and the refusal of a
class with too few."""

import numpy as np
import pytest

from speed.errors import ConfigError
from speed.study import samples


def test_class_rows_take_the_first_images_of_each_class_in_label_order():
    labels = np.array([1, 0, 1, 0, 1, 0])
    images = np.arange(6).reshape(6, 1, 1, 1)  # image i holds the value i
    rows = samples.class_rows(images, labels, per_class=2)
    assert rows.ravel().tolist() == [1, 3, 0, 2]
    with pytest.raises(ConfigError, match="class 0 has 3 images, fewer than --per-class"):
        samples.class_rows(images, labels, per_class=4)


def test_prompt_rows_follow_the_order_the_prompts_first_appear():
    prompts = ["a dog left of a cat", "a cat left of a zebra"] * 3  # image i has prompt i mod 2
    images = np.arange(6).reshape(6, 1, 1, 1)
    assert samples.class_rows(images, prompts, per_class=3).ravel().tolist() == [0, 2, 4, 1, 3, 5]
