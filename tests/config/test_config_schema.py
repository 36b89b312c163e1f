"""speed.config_schema: root keys and the value-vs-annotation check."""

import dataclasses
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml

from speed.config_schema import NODES, PHASES, ROOT_TYPES, RootConfig, root_defaults, type_mismatch


def test_root_keys_are_the_dataclass_fields_and_distinct_from_nodes():
    names = [field.name for field in dataclasses.fields(RootConfig)]
    assert list(ROOT_TYPES) == names == list(root_defaults())
    assert not set(names) & set(NODES) and not set(names) & set(PHASES)
    for name, value in root_defaults().items():  # every default fits its own type
        assert type_mismatch(value, ROOT_TYPES[name]) is None, name


BASE_YAML = Path(__file__).resolve().parents[2] / "configs/base.yaml"


def test_configs_base_yaml_repeats_every_root_default():
    """configs/base.yaml lists the root keys for readers; RootConfig is what the loader uses. A
    default changed in one and not the other fails here, key by key."""
    text = BASE_YAML.read_text()
    base = yaml.safe_load(text)
    root = {key: value for key, value in base.items() if key not in NODES and key not in PHASES}
    defaults = root_defaults()
    assert sorted(root) == sorted(defaults)
    for key, value in defaults.items():
        assert root[key] == value and type(root[key]) is type(value), key
    for line in text.splitlines():  # each root key carries a comment with its meaning
        key = line.split(":")[0]
        if key in defaults:
            assert "#" in line, key


@pytest.mark.parametrize(
    "value, annotation",
    [
        (3, int),
        (3, float),
        (2.5, float),
        (True, bool),
        ("a", str),
        (None, Optional[int]),  # noqa: UP045 (typing.Optional, as older signatures use)
        (4, int | None),
        ([1, 2.5], list[float]),
        (1.5, float | list[float]),
        ([1.0, 4.0], float | list[float]),
        ("path", bool | str),
        ("bf16", Literal["fp32", "bf16"]),
        ([0.9, 0.999], tuple[float, float]),
        ({"a": 1}, dict[str, int]),
        ("anything", Any),
        ("x", Path),  # classes are not judged from YAML values
        ("x", float | Path),  # nor unions holding them
    ],
)
def test_values_that_fit(value, annotation):
    assert type_mismatch(value, annotation) is None


@pytest.mark.parametrize(
    "value, annotation, expected",
    [
        ("abc", int, "int"),
        (True, int, "int"),  # a bool is not an int here
        (1, bool, "bool"),
        (2.5, int, "int"),
        (None, int, "int"),
        (3, str, "str"),
        ("1", float | list[float], "float or list of float"),
        ([1, "a"], list[int] | None, "list of int or null"),
        (5, bool | str, "bool or str"),
        ("fp8", Literal["fp32", "bf16"], "one of fp32|bf16"),
        ([0.9], tuple[float, float], "list of float"),
        (3, dict[str, int], "dict"),
    ],
)
def test_values_that_do_not_fit(value, annotation, expected):
    assert type_mismatch(value, annotation) == expected
