"""How closely a ControlNet's samples follow their control images:
python -m evaluations.control_fidelity SAMPLES [--controls CONTROLS] [--threshold T] [--out F].

SAMPLES is an inference `.npz` of a ControlNet run, which holds each image's control image
(`control`) beside the images (`arr_0`); `--controls` takes them from another `.npz` (`arr_0`) or
image folder instead, image i for sample i. The metrics are the registry `CONTROL_METRICS`
(entries as `evaluations.evaluate.METRICS`': a function of (control images, samples) whose
keyword-only parameters are its settings, plus a `Metric` line): the edge IoU compares the
control edge map (its bright pixels) with the edges of each sample, found by the same
silhouette-edge transform the control images were made with (`speed.control.transforms.Edges`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from evaluations import metrics
from evaluations.evaluate import Metric
from evaluations.image_io import ImageSource, load_source
from speed.control.images import NPZ_CONTROL_KEY
from speed.control.transforms import Edges
from speed.errors import ConfigError, DataError, run_cli


def sample_edges(images: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean edge maps [N, H, W] of uint8 images [N, H, W, C]: the silhouette edges."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double() / 127.5 - 1
    return (Edges(threshold)(x)[:, 0] > 0).numpy()


def control_edges(controls: np.ndarray) -> np.ndarray:
    """Boolean maps [N, H, W] of uint8 edge control images [N, H, W, C]: the bright pixels."""
    return np.asarray(controls)[..., 0] > 127


def _edge_iou(controls: np.ndarray, samples: np.ndarray, *, threshold: float = -0.5) -> dict:
    per_image = metrics.edge_iou(sample_edges(samples, threshold), control_edges(controls))
    return {"value": float(per_image.mean()), "std": float(per_image.std()), "threshold": threshold}


# A new metric: one function above and one line here.
CONTROL_METRICS: dict[str, Metric] = {
    "edge_iou": Metric(
        _edge_iou,
        "edge IoU",
        help={"threshold": "silhouette brightness in [-1, 1] the sample edges are found at"},
    ),
}


def compute_control_metrics(controls: np.ndarray, samples: np.ndarray, **settings) -> dict:
    """Every metric of `CONTROL_METRICS` of samples uint8 [N, H, W, C] under controls uint8
    [N, H, W, C'] (image i under control i); settings go to the metrics that declare them."""
    if len(controls) != len(samples) or controls.shape[1:3] != samples.shape[1:3]:
        raise DataError(
            f"{len(samples)} samples of {samples.shape[1:3]} px need as many control images of "
            f"that size, got {len(controls)} of {controls.shape[1:3]}"
        )
    result = {"num_images": len(samples)}
    for name, metric in CONTROL_METRICS.items():
        own = {key: value for key, value in settings.items() if key in metric.settings}
        result[name] = metric.fn(controls, samples, **own)
    return result


def controls_of(samples_path: Path, controls_path: str | None) -> np.ndarray:
    """The control images: `controls_path`'s images, else the samples `.npz`'s own."""
    if controls_path is not None:
        source = load_source(controls_path)
        if not isinstance(source, ImageSource):
            raise ConfigError(f"--controls {controls_path} holds statistics, not images")
        return source.images
    with np.load(samples_path) as arrays:
        if NPZ_CONTROL_KEY not in arrays.files:
            raise DataError(
                f"{samples_path} holds no control images ('{NPZ_CONTROL_KEY}'): it is no "
                "ControlNet inference output; pass --controls"
            )
        return arrays[NPZ_CONTROL_KEY]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="a ControlNet inference .npz (or image folder)")
    parser.add_argument("--controls", default=None, help="control images (.npz or folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    for metric in CONTROL_METRICS.values():
        for name, default in metric.settings.items():
            flag = "--" + name.replace("_", "-")
            parser.add_argument(flag, type=type(default), default=default, help=metric.help[name])
    args = parser.parse_args(argv)

    def evaluate() -> int:
        samples = load_source(args.samples)
        if not isinstance(samples, ImageSource):
            raise ConfigError(f"{args.samples} holds statistics, not images")
        controls = controls_of(args.samples, args.controls)
        settings = {
            name: getattr(args, name)
            for metric in CONTROL_METRICS.values()
            for name in metric.settings
        }
        result = compute_control_metrics(controls, samples.images, **settings)
        for name, metric in CONTROL_METRICS.items():
            print(f"{metric.label}: {result[name]['value']:.4f} over {len(samples)} images")
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.out}")
        return 0

    return run_cli(evaluate)


if __name__ == "__main__":
    raise SystemExit(main())
