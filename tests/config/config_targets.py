"""Tiny `_target_` callables for the config tests."""

from __future__ import annotations


def make_point(x: int, y: float = 0.0, label: str = "p", tags: list[str] | None = None) -> dict:
    return {"x": x, "y": y, "label": label, "tags": tags}


class Box:
    def __init__(self, width: int, height: int = 1):
        self.width, self.height = width, height


def flexible(size: int = 1, **options) -> dict:
    return {"size": size, **options}


def failing(value: int = 0):
    raise ValueError(f"value must be positive, got {value}")


def broken():
    raise RuntimeError("a bug in the target")
