"""Prompts from the config: a list, or a file (one per line) that replaces it when set."""

import pytest

from speed.errors import ConfigError
from speed.text.prompts import load_prompts


def test_a_file_wins_over_the_list_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(" a cat left of a zebra \n\n a dog\n")
    assert load_prompts(["x"], str(path)) == ["a cat left of a zebra", "a dog"]
    assert load_prompts(["x ", "y"], None) == ["x", "y"]
    assert load_prompts(None, None) is None


def test_bad_prompts_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_prompts(None, str(tmp_path / "absent.txt"))
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="holds no prompt"):
        load_prompts(None, str(tmp_path / "empty.txt"))
    with pytest.raises(ConfigError, match="non-empty"):
        load_prompts(["ok", " "], None)
