"""The export phase on models that take more than noise, time and labels, each a tiny run from
YAML exported through `-p export`: a text-to-image PixArt and UNet (byte ids their own text
transformer reads), a ControlNet branch over its DiT base, and a class-conditional
super-resolution UNet.

The trained checkpoints' weights are re-drawn (0.1 N(0, 1), as tests/deploy's tiny models) so
that a zero-initialised layer (PixArt's cross-attention outputs, a ControlNet's projections)
cannot hide an input the graph ignores. For each model: ONNX Runtime's output equals the
two-pass guidance formula eps_u + s (eps_c - eps_u) computed with the PyTorch model (s = 1: its
conditional output), the extra input changes the output, a DDIM image sampled through ONNX
Runtime equals `generate`'s from the same noise, and a missing or misshapen input is one line.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import test_text_to_image  # tests/runners: its tiny T5 config on a captioned folder
import torch
from tests_paths import REPO  # tests/runners

from speed.autoencoders import Identity
from speed.config import load_config
from speed.deploy.manifest import load_manifest
from speed.deploy.onnx_sampling import OnnxDenoiser, ddim_sample
from speed.errors import DataError
from speed.generation import generate
from speed.models import SuperResUNet
from speed.models.loading import load_checkpoint, save_checkpoint
from speed.runners.build import (
    build_diffusion,
    build_sampling_model,
    build_text_encoder,
)
from speed.runners.train import train
from speed.text import T5TextEncoder
from speed.utils.images import to_uint8

pytestmark = pytest.mark.usefixtures("single_thread")
RTOL, ATOL = 1e-4, 1e-5  # fp32, two kernel libraries (tests/deploy/test_onnx_graph.py)
TEXT_CONFIG = str(REPO / "configs/image/animals_text/base.yaml")
CONTROL_CONFIG = str(REPO / "configs/image/animals/control.yaml")
SUPER_RES_CONFIG = str(REPO / "configs/image/animals/super_res.yaml")
DOC = REPO / "docs/export.md"
captioned_folder = test_text_to_image.captioned_folder  # the fixture, shared
TINY_TEXT = [
    "model.hidden_size=32", "model.depth=2", "model.num_heads=2", "model.caption_channels=16",
    "model.text_depth=1", "model.text_heads=2", "data.num_pairs=64",
]  # fmt: skip


def redrawn(path: Path, prefix: str = "", seed: int = 0) -> Path:
    """Re-draw the float weights (model and EMA) of the checkpoint at `path` whose names start
    with `prefix`, in place; returns `path`."""
    state = load_checkpoint(path)
    g = torch.Generator().manual_seed(seed)
    for key in ("model", "ema"):
        for name, tensor in state[key].items():
            if name.startswith(prefix) and tensor.is_floating_point():
                state[key][name] = 0.1 * torch.randn(tensor.shape, generator=g)
    return save_checkpoint(state, path)  # with its checksum


def exported(main, config, overrides) -> OnnxDenoiser:
    """`-p export` of the run, its graph and manifest in an ONNX Runtime session (one thread)."""
    assert main(["-c", config, "-p", "export", *overrides]) == 0
    (onnx,) = (Path(overrides[0].split("=", 1)[1]) / "export").glob("*.onnx")
    manifest = load_manifest(onnx.with_suffix(".json"))
    assert manifest["export"]["max_abs_diff"] < 1e-4
    return OnnxDenoiser(onnx, threads=1)


def pytorch_model(config, overrides, text=False):
    cfg = load_config(config, "export", overrides)
    encoder = build_text_encoder(cfg) if text else None
    model, _, _ = build_sampling_model(cfg, Identity(), torch.device("cpu"), encoder)
    return cfg, model


def numpy_of(tree):
    if isinstance(tree, dict):
        return {key: numpy_of(value) for key, value in tree.items()}
    return None if tree is None else tree.numpy()


def noisy(g: torch.Generator, channels: int, side: int):
    """x [3, channels, side, side] ~ N(0, I) and timesteps early, middle and late."""
    return torch.randn(3, channels, side, side, generator=g), torch.tensor([10, 500, 990])


def check_guidance(session, model, x, t, condition, uncond, conditions):
    """ONNX Runtime at s = 1 and 3 against the PyTorch model's two passes: `condition` and
    `uncond` are its kwargs for the conditional and unconditional halves; `conditions` the
    extra inputs (both halves). Returns the ONNX output at s = 3."""
    with torch.no_grad():
        eps_c = model(x, t, **condition, **conditions).numpy()
        eps_u = model(x, t, **uncond, **conditions).numpy()
    assert np.abs(eps_c - eps_u).max() > 1e-2  # the condition matters
    g = model.guided_channels
    label = condition if "mask" in condition else condition["y"]
    for s in (1.0, 3.0):
        got = session(x, t, numpy_of(label), s, numpy_of(conditions))
        assert got.shape == eps_c.shape
        np.testing.assert_allclose(got[:, :g], (eps_u + s * (eps_c - eps_u))[:, :g], RTOL, ATOL)
        np.testing.assert_allclose(got[:, g:], eps_c[:, g:], RTOL, ATOL)
    return got


def check_sampling(session, cfg, model, noise, labels, conditions):
    """DDIM-4 with guidance 3 (eta 0, clipped): ONNX Runtime and `generate` from the same noise
    agree to 5e-4 (measured: 1.2e-4 at most, float32 rounding of two kernel libraries grown by
    guidance 3 over 4 steps of random weights) and as uint8 pictures to one grey level."""
    options = {"num_steps": 4, "guidance_scale": 3.0, "clip_denoised": True}
    expected = generate(
        model, build_diffusion(cfg), Identity(), noise, labels, sampler="ddim",
        conditions=conditions, **options,
    )  # fmt: skip
    got = ddim_sample(
        session, noise.numpy(), numpy_of(labels), conditions=numpy_of(conditions), **options
    )
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=5e-4)
    grey = to_uint8(torch.from_numpy(got)).astype(int) - to_uint8(expected).astype(int)
    assert np.abs(grey).max() <= 1 and (grey != 0).mean() < 0.01
    assert np.abs(expected.numpy()).max() > 0.1


def one_line(call, match: str) -> None:
    with pytest.raises(DataError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_text_to_image_export_takes_byte_ids_and_mask(tmp_path, tiny_overrides, main):
    run = tmp_path / "run"
    overrides = tiny_overrides(run, 1) + TINY_TEXT + ["sample_every=0"]
    redrawn(train(load_config(TEXT_CONFIG, "train", overrides)))
    session = exported(main, TEXT_CONFIG, overrides)
    manifest = session.manifest
    assert manifest["inputs"] == ["x", "t", "y", "mask", "guidance_scale"]
    y, mask = manifest["conditions"]
    assert (y["name"], y["shape"], y["dtype"]) == ("y", ["N", 32], "int64")
    assert (mask["name"], mask["shape"], mask["dtype"]) == ("mask", ["N", 32], "bool")
    assert y["text_encoder"] == {"_target_": "speed.text.ByteTokens", "max_length": 32}
    assert manifest["guidance"]["null"] == "caption" and manifest["classes"]["null_label"] is None

    cfg, model = pytorch_model(TEXT_CONFIG, overrides, text=True)
    captions = ["a cat left of a zebra", "a dog left of a horse", ""]
    caption = build_text_encoder(cfg).condition(captions, "cpu")  # ids [3, 32], mask [3, 32]
    g = torch.Generator().manual_seed(0)
    x, t = noisy(g, 1, 56)
    drop = {"force_drop_ids": torch.ones(3, dtype=torch.long)}
    check_guidance(session, model, x, t, caption, {**caption, **drop}, {})
    check_sampling(session, cfg, model, torch.randn(3, 1, 56, 56, generator=g), caption, {})

    ids, token_mask = caption["y"].numpy(), caption["mask"].numpy()
    one_line(lambda: session(x, t, {"y": ids}), r"needs input mask \['N', 32\] bool")
    one_line(lambda: session(x, t, {"y": ids[:, :30], "mask": token_mask}), "shape")
    one_line(lambda: session(x, t, {"y": ids + 0.5, "mask": token_mask}), "float64 values")
    one_line(lambda: session(x, t, {"y": ids[:2], "mask": token_mask[:2]}), "batches differ")

    # docs/export.md's text-to-image snippet, unchanged but for the file it opens
    snippet = re.search(r"```python\n([^`]*animals_text.*?)```", DOC.read_text(), re.S).group(1)
    documented = '"runs/animals_text/export/0001800.onnx"'
    assert documented in snippet
    names = {}
    onnx = repr(str(run / "export/0000001.onnx"))
    exec(compile(snippet.replace(documented, onnx), str(DOC), "exec"), names)
    assert names["x0"].shape == (8, 1, 56, 56) and -1 <= names["x0"].min() < names["x0"].max() <= 1


def test_text_unet_export_takes_byte_ids_and_mask(tmp_path, tiny_overrides, main):
    """The caption-conditioned UNet (configs/image/animals_text/unet.yaml) exports as PixArt."""
    config = str(REPO / "configs/image/animals_text/unet.yaml")
    tiny = ["model.channel_mult=[1,2]", "model.attention_resolutions=[2]",
            "model.caption_channels=16", "model.text_depth=1", "model.text_heads=2",
            "data.num_pairs=64"]  # fmt: skip
    overrides = tiny_overrides(tmp_path / "run", 1) + tiny + ["sample_every=0"]
    redrawn(train(load_config(config, "train", overrides)))
    session = exported(main, config, overrides)
    assert session.manifest["inputs"] == ["x", "t", "y", "mask", "guidance_scale"]
    cfg, model = pytorch_model(config, overrides, text=True)
    caption = build_text_encoder(cfg).condition(["a cat left of a zebra", "a dog", ""], "cpu")
    x, t = noisy(torch.Generator().manual_seed(0), 1, 56)
    drop = {"force_drop_ids": torch.ones(3, dtype=torch.long)}
    check_guidance(session, model, x, t, caption, {**caption, **drop}, {})


def test_t5_conditioned_export_takes_caption_embeddings(
    tmp_path, captioned_folder, tiny_t5_dir, tiny_overrides, main
):
    """A frozen T5 stays outside the graph: the caller runs the encoder the manifest names."""
    config = test_text_to_image.folder_config(tmp_path, *captioned_folder, tiny_t5_dir)
    overrides = tiny_overrides(tmp_path / "run", 1) + ["sample_every=0", "data.batch_size=2"]
    redrawn(train(load_config(config, "train", overrides)))
    session = exported(main, config, overrides)
    y, mask = session.manifest["conditions"]
    assert (y["shape"], y["dtype"], mask["dtype"]) == (["N", 6, 16], "float32", "bool")
    assert y["text_encoder"] == {
        "_target_": "speed.text.T5TextEncoder", "path": str(tiny_t5_dir), "max_length": 6,
    }  # fmt: skip

    cfg, model = pytorch_model(config, overrides, text=True)
    encoder = T5TextEncoder(y["text_encoder"]["path"], y["text_encoder"]["max_length"])
    caption = encoder.condition(["a cat left of a zebra", "a dog", "a cow"], "cpu")
    x, t = noisy(torch.Generator().manual_seed(0), 3, 8)  # the folder's RGB images
    drop = {"force_drop_ids": torch.ones(3, dtype=torch.long)}
    check_guidance(session, model, x, t, caption, {**caption, **drop}, {})
    embeddings = caption["y"].numpy()
    one_line(lambda: session(x, t, {"y": embeddings[..., :8], "mask": caption["mask"]}), "16")


@pytest.fixture(scope="module")
def control_run(tmp_path_factory, dit_config, tiny_overrides, tiny_dit):
    """(overrides) of a ControlNet run over a tiny DiT base, both re-drawn, trained one step."""
    base = train(
        load_config(dit_config, "train", tiny_overrides(tmp_path_factory.mktemp("base"), 1)
                    + tiny_dit + ["sample_every=0"])
    )  # fmt: skip
    redrawn(base, seed=1)
    run = tmp_path_factory.mktemp("control")
    overrides = tiny_overrides(run, 1) + tiny_dit + [
        "sample_every=0", "control.num_blocks=1", f"control.base={base}", "control.scale=0.5",
    ]  # fmt: skip
    redrawn(train(load_config(CONTROL_CONFIG, "train", overrides)), "branch.", seed=2)
    return overrides


def test_control_export_takes_the_control_image(control_run, main):
    session = exported(main, CONTROL_CONFIG, control_run)
    manifest = session.manifest
    assert manifest["inputs"] == ["x", "t", "y", "control", "guidance_scale"]
    (control,) = manifest["conditions"]
    assert (control["shape"], control["dtype"]) == (["N", 1, 28, 28], "float32")
    assert control["transform"] == "edges" and control["transform_options"] == {"threshold": -0.5}
    assert control["scale"] == 0.5 and control["scale_folded"] is True
    assert manifest["guidance"]["null"] == "label" and manifest["classes"]["null_label"] == 10

    cfg, model = pytorch_model(CONTROL_CONFIG, control_run)
    g = torch.Generator().manual_seed(0)
    x, t = noisy(g, 1, 28)
    y = torch.tensor([0, 3, 9])
    maps = torch.randn(3, 1, 28, 28, generator=g).sign()
    null = {"y": torch.full_like(y, 10)}
    got = check_guidance(session, model, x, t, {"y": y}, null, {"control": maps})
    other = session(x, t, y.numpy(), 3.0, {"control": -maps.numpy()})
    assert np.abs(got - other).max() > 1e-2  # the control image steers the output
    noise = torch.randn(3, 1, 28, 28, generator=g)
    check_sampling(session, cfg, model, noise, y, {"control": maps})

    one_line(
        lambda: session(x, t, y, 3.0),
        r"needs input control \['N', 1, 28, 28\] float32 \(control image",
    )
    one_line(lambda: session(x, t, y, 3.0, {"control": maps[:, :, :14]}), "got shape")
    one_line(lambda: session(x, t, y, 3.0, {"low_res": maps}), "no input 'low_res'")


def test_super_resolution_export_takes_the_low_res_image(tmp_path, main, monkeypatch, capsys):
    run = tmp_path / "run"
    overrides = [
        f"experiment_dir={run}", "max_training_steps=1", "ckpt_every=1", "log_every=1",
        "warmup_steps=0", "data.batch_size=4", "data.held_out=6", "num_steps=2",
        "model.channel_mult=[1,2]", "model.attention_resolutions=[]", "wandb=disabled",
        "data.class_cond=true", "num_classes=null", "model.class_dropout_prob=0.1",
        "guidance_scale=2.0",
    ]  # fmt: skip
    redrawn(train(load_config(SUPER_RES_CONFIG, "train", overrides)))
    session = exported(main, SUPER_RES_CONFIG, overrides)
    manifest = session.manifest
    assert manifest["inputs"] == ["x", "t", "y", "low_res", "guidance_scale"]
    (low_res,) = manifest["conditions"]
    assert (low_res["shape"], low_res["dtype"]) == (["N", 1, 14, 14], "float32")
    assert low_res["degradation"] == {"low_size": 14, "blur_sigma": 0.0, "noise_std": 0.0}
    assert "bilinear" in low_res["what"]

    cfg, model = pytorch_model(SUPER_RES_CONFIG, overrides)
    g = torch.Generator().manual_seed(0)
    x, t = noisy(g, 1, 28)
    y = torch.tensor([0, 3, 9])
    low = torch.rand(3, 1, 14, 14, generator=g) * 2 - 1
    null = {"y": torch.full_like(y, 10)}
    got = check_guidance(session, model, x, t, {"y": y}, null, {"low_res": low})
    other = session(x, t, y.numpy(), 3.0, {"low_res": -low.numpy()})
    assert np.abs(got - other).max() > 1e-2
    check_sampling(session, cfg, model, torch.randn(3, 1, 28, 28, generator=g), y, {"low_res": low})

    one_line(lambda: session(x, t, y, 3.0), r"needs input low_res \['N', 1, 14, 14\] float32")
    one_line(lambda: session(x, t, y, 3.0, {"low_res": low[:, :, :7, :7]}), "got shape")

    # an input the export cannot describe (none of today's models has one): one line
    monkeypatch.setattr(SuperResUNet, "conditions", ("low_res", "depth"))
    capsys.readouterr()
    assert main(["-c", SUPER_RES_CONFIG, "-p", "export", *overrides]) == 2
    err = capsys.readouterr().err
    assert "is a SuperResUNet, which also needs depth" in err and err.count("\n") == 1
