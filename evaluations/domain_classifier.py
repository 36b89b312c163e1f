"""A small CNN classifier of the demo dataset, used as a fast FID-like feature extractor.

Inception at 299 x 299 runs at about 5 images/s on a small CPU; this network reads 28 x 28
grayscale animal-mnist images directly. Its 256-d penultimate activations give an FID-like
distance (not comparable to Inception FID) and its logits say whether a sample shows the class it
was asked for (`evaluations.metrics.class_accuracy`).

Train it once:  python -m evaluations.domain_classifier --out runs/domain_classifier.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from evaluations.features import FeatureExtractor, file_digest, to_float_nchw
from speed.errors import DataError, MissingFileError
from speed.utils.atomic import atomic_write

DEFAULT_DOMAIN_PATH = Path("runs/domain_classifier.pt")
FORMAT = "speed-domain-classifier-v1"


class DomainClassifier(nn.Module):
    """3 blocks of (2 x [conv3x3-BN-ReLU], maxpool 2) -> global mean -> 256-d -> logits."""

    def __init__(self, in_channels=1, num_classes=10, widths=(32, 64, 128), feature_dim=256):
        super().__init__()
        blocks, c_in = [], in_channels
        for width in widths:
            for c in (c_in, width):
                blocks += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
                blocks.append(nn.ReLU(inplace=True))
            blocks.append(nn.MaxPool2d(2))
            c_in = width
        self.trunk = nn.Sequential(*blocks)
        self.embed = nn.Linear(widths[-1], feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, C, H, W] in [-1, 1] -> (features [N, feature_dim] >= 0, logits [N, classes])."""
        h = self.trunk(x).mean(dim=(2, 3))  # [N, widths[-1]]
        features = F.relu(self.embed(h))
        return features, self.head(features)


def _model_input(x: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """Float [N, C, H, W] in [0, 255] -> [N, channels, size, size] in [-1, 1] (RGB -> gray by
    channel mean, bilinear resize with antialiasing)."""
    x = x / 127.5 - 1.0
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    return x


def _accuracy(model: DomainClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    with torch.inference_mode():
        hits = sum(
            (model(x[i : i + batch_size])[1].argmax(1) == y[i : i + batch_size]).sum().item()
            for i in range(0, len(x), batch_size)
        )
    return hits / max(len(x), 1)


def train_domain_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    out_path: str | os.PathLike,
    epochs: int = 8,  # passes over the training split
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 2e-3,  # Adam learning rate, constant
    val_fraction: float = 0.1,  # held out to report accuracy on unseen images
    class_names: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Train on uint8 images [N, H, W(, C)] with int labels [N] in [0, K); save weights + metadata
    to `out_path` and return the metadata (accuracies, sizes, seed)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels) or len(images) < 2:
        raise DataError(
            f"need >= 2 images with one label each, got {len(images)} and {len(labels)}"
        )
    if not 0 <= val_fraction < 1 or epochs < 1:
        raise DataError(f"need 0 <= val_fraction < 1 and epochs >= 1, got {val_fraction}, {epochs}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = to_float_nchw(images)
    if x.shape[2] != x.shape[3]:
        raise DataError(f"domain classifier needs square images, got {tuple(x.shape[2:])}")
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    meta = {
        "format": FORMAT,
        "in_channels": int(x.shape[1]),
        "image_size": int(x.shape[2]),
        "num_classes": num_classes,
        "widths": [32, 64, 128],
        "feature_dim": 256,
        "class_names": class_names,
        "epochs": epochs,
        "seed": seed,
    }
    x = _model_input(x, meta["image_size"], meta["in_channels"])
    y = torch.from_numpy(labels)
    order = torch.randperm(len(x), generator=generator)
    num_val = int(len(x) * val_fraction)
    val, train = order[:num_val], order[num_val:]
    model = DomainClassifier(meta["in_channels"], meta["num_classes"], meta["widths"], 256)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in tqdm(range(epochs), desc="domain classifier", disable=not progress):
        model.train()
        for batch in train[torch.randperm(len(train), generator=generator)].split(batch_size):
            if len(batch) < 2:  # BatchNorm needs two images per batch
                continue
            loss = F.cross_entropy(model(x[batch])[1], y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    meta["train_accuracy"] = _accuracy(model, x[train], y[train], batch_size)
    meta["val_accuracy"] = _accuracy(model, x[val], y[val], batch_size) if num_val else None
    meta.update(num_train=len(train), num_val=num_val)
    atomic_write(out_path, {"state_dict": model.state_dict(), "meta": meta})
    return meta


class DomainFeatures(FeatureExtractor):
    """Penultimate features (256-d) and logits of a trained `DomainClassifier` file."""

    classifies_dataset_labels = True
    has_logits = True

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        path = Path(DEFAULT_DOMAIN_PATH if path is None else path)
        if not path.is_file():
            raise MissingFileError(
                f"domain classifier {path} not found: create it with "
                f"`python -m evaluations.domain_classifier --out {path}`"
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or checkpoint.get("meta", {}).get("format") != FORMAT:
            raise DataError(f"{path}: not a domain classifier file written by this module")
        self.meta = meta = checkpoint["meta"]
        self.model = DomainClassifier(
            meta["in_channels"], meta["num_classes"], meta["widths"], meta["feature_dim"]
        )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.eval()
        self.num_features = meta["feature_dim"]
        self.name = (
            "domain-classifier features (FID-like, not comparable to Inception FID; "
            f"{path.name} sha256 {file_digest(path)})"
        )

    def activations(self, images) -> dict[str, torch.Tensor]:
        x = _model_input(to_float_nchw(images), self.meta["image_size"], self.meta["in_channels"])
        features, logits = self.model(x)
        return {"features": features, "logits": logits}


def ensure_domain_classifier(path: str | os.PathLike | None = None) -> Path:
    """The domain classifier file at `path` (default DEFAULT_DOMAIN_PATH), trained on
    animal-mnist with the default settings first if it does not exist yet."""
    path = Path(DEFAULT_DOMAIN_PATH if path is None else path)
    if not path.is_file():
        from speed.data.animals import load_animal_mnist_arrays

        print(f"training the domain classifier once -> {path}", flush=True)
        train_domain_classifier(*load_animal_mnist_arrays(), path, progress=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the animal-mnist domain classifier.")
    parser.add_argument("--out", type=Path, default=DEFAULT_DOMAIN_PATH, help="weights file")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from speed.data.animals import load_animal_mnist_arrays

    try:
        images, labels = load_animal_mnist_arrays()
        meta = train_domain_classifier(images, labels, args.out, epochs=args.epochs, seed=args.seed)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: train accuracy {meta['train_accuracy']:.4f}, "
        f"held-out accuracy {meta['val_accuracy']:.4f} ({meta['num_val']} images)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
