"""Fixtures for the config tests: tiny YAML trees written under tmp_path."""

import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def write_tree(tmp_path, monkeypatch):
    """write_tree({"configs/base.yaml": "...", ...}) writes the files under tmp_path (the working
    directory, so messages show paths relative to it) and returns {relative path: Path}."""
    monkeypatch.chdir(tmp_path)

    def write(files: dict[str, str]) -> dict[str, Path]:
        paths = {}
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
            paths[name] = path
        return paths

    return write
