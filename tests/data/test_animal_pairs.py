"""The text-to-image demo set: two real animal-mnist silhouettes side by side, captions that say
which stands where, and held-out pairs that never appear."""

import pytest
import torch

from speed.data import ANIMAL_CLASSES, AnimalPairs, load_animal_mnist_arrays
from speed.data.animal_pairs import HELD_OUT_PAIRS, pair_captions


@pytest.fixture(scope="module")
def pairs():
    return AnimalPairs(num_pairs=2000)


def test_held_out_pairs_never_appear_and_the_rest_do(pairs):
    index = {name: i for i, name in enumerate(ANIMAL_CLASSES)}
    held = {(index[a], index[b]) for a, b in HELD_OUT_PAIRS}
    seen = {tuple(p) for p in pairs.pairs.tolist()}
    assert not seen & held
    assert len(seen) == 90 - len(held)  # every other ordered pair of two classes
    assert all(a != b for a, b in seen)


def test_halves_are_the_source_silhouettes_and_captions_name_them(pairs):
    images, labels = load_animal_mnist_arrays()
    x, y = pairs[3]
    assert x.shape == (1, 56, 56) and y.item() == 3
    left, right = x[0, 14:42, :28], x[0, 14:42, 28:]
    sources = torch.from_numpy(images).float() / 127.5 - 1
    match_left = (sources - left).abs().flatten(1).amax(1).argmin()
    match_right = (sources - right).abs().flatten(1).amax(1).argmin()
    assert torch.allclose(sources[match_left], left) and torch.allclose(sources[match_right], right)
    a, b = pairs.pairs[3].tolist()
    assert (labels[match_left], labels[match_right]) == (a, b)
    assert pairs.captions(3) == pair_captions(ANIMAL_CLASSES[a], ANIMAL_CLASSES[b])
    assert bool((x[0, :14] == -1).all() and (x[0, 42:] == -1).all())  # background bands


def test_captions_use_the_right_article():
    assert pair_captions("elephant", "cat") == [
        "an elephant left of a cat",
        "a cat right of an elephant",
    ]


def test_the_set_is_fixed_and_checks_its_arguments():
    a, b = AnimalPairs(num_pairs=50), AnimalPairs(num_pairs=50)
    assert torch.equal(a.pairs, b.pairs) and torch.equal(a[7][0], b[7][0])
    with pytest.raises(ValueError, match="held_out"):
        AnimalPairs(num_pairs=5, held_out=[["cat", "unicorn"]])
    with pytest.raises(ValueError, match="image_size"):
        AnimalPairs(image_size=57)


def test_captions_parse_back_to_their_pair():
    from speed.data.animal_pairs import parse_pair

    for left, right in [("cat", "zebra"), ("elephant", "bear")]:
        ids = (ANIMAL_CLASSES.index(left), ANIMAL_CLASSES.index(right))
        assert [parse_pair(c) for c in pair_captions(left, right)] == [ids, ids]
    assert parse_pair("A  Dog left of a cat") == (4, 2)
    assert parse_pair("a unicorn left of a cat") is None and parse_pair("two cats") is None
