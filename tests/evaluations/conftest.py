"""Shared fixtures (session-scoped: they hand out pure functions and a class): a tiny
deterministic feature extractor, its numpy twin, and small random image sets."""

import numpy as np
import pytest
import torch

from evaluations.features import FeatureExtractor, to_float_nchw


class TinyExtractor(FeatureExtractor):
    """Gray-level features of uint8 images: 4 quadrant means, global std, and (as logits) the
    quadrant means again. Cheap, deterministic, and easy to recompute with numpy."""

    name = "tiny test extractor"
    num_features = 5

    def __init__(self, with_logits: bool = False):
        super().__init__()
        self.has_logits = with_logits

    def activations(self, images):
        x = to_float_nchw(images).mean(dim=1)  # [N, H, W] in 0..255
        h, w = x.shape[1] // 2, x.shape[2] // 2
        quads = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
        means = torch.stack([q.mean(dim=(1, 2)) for q in quads], dim=1)
        features = torch.cat([means, x.flatten(1).std(dim=1, keepdim=True)], dim=1)
        out = {"features": features}
        if self.has_logits:
            out["logits"] = means / 64.0
        return out


def _tiny_features_numpy(images: np.ndarray) -> np.ndarray:
    """TinyExtractor's features computed independently with numpy in float64 (NHWC uint8)."""
    gray = images.astype(np.float64).mean(axis=3)
    h, w = gray.shape[1] // 2, gray.shape[2] // 2
    quads = [gray[:, :h, :w], gray[:, :h, w:], gray[:, h:, :w], gray[:, h:, w:]]
    means = np.stack([q.mean(axis=(1, 2)) for q in quads], axis=1)
    std = gray.reshape(len(gray), -1).std(axis=1, ddof=1)
    return np.concatenate([means, std[:, None]], axis=1)


def _random_images(seed: int, n: int = 24, size: int = 8, channels: int = 1) -> np.ndarray:
    """uint8 [n, size, size, channels] with per-image brightness so features vary."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(n, 1, 1, 1))
    return (base + rng.integers(0, 56, size=(n, size, size, channels))).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_extractor_cls():
    return TinyExtractor


@pytest.fixture(scope="session")
def tiny_features():
    return _tiny_features_numpy


@pytest.fixture(scope="session")
def random_images():
    return _random_images
