"""The export phase on a tiny trained run (the demo's DiT variant, 2 blocks of width 32): the ONNX
graph of the EMA weights and its manifest, whose schedule is checked against the linear schedule
computed here independently, and the sampling snippet of docs/export.md run as written on it.
(The UNet's export is checked in tests/deploy.)"""

import re
from pathlib import Path

import numpy as np
import torch

from speed.autoencoders import Identity
from speed.config import load_config
from speed.deploy.manifest import load_manifest
from speed.deploy.onnx_sampling import OnnxDenoiser
from speed.runners.build import build_sampling_model
from speed.runners.train import train

DOC = Path(__file__).resolve().parents[2] / "docs/export.md"


def test_export_writes_the_ema_graph_and_its_manifest(
    tmp_path, dit_config, tiny_overrides, tiny_dit, main, single_thread
):
    run = tmp_path / "run"
    overrides = tiny_overrides(run) + tiny_dit
    train(load_config(dit_config, "train", overrides))
    assert main(["-c", dit_config, "-p", "export", *overrides]) == 0
    files = sorted(p.name for p in (run / "export").iterdir())
    assert files == ["0000002.json", "0000002.onnx", "config.yaml"]

    manifest = load_manifest(run / "export/0000002.json")
    betas = np.linspace(1e-4, 0.02, 1000)  # linear schedule of DDPM (Ho et al. 2020), T = 1000
    schedule = manifest["schedule"]
    assert schedule["num_timesteps"] == 1000
    np.testing.assert_allclose(schedule["betas"], betas, rtol=1e-12)
    np.testing.assert_allclose(schedule["alphas_cumprod"], np.cumprod(1 - betas), rtol=1e-12)
    assert (manifest["parameterisation"], manifest["learn_sigma"]) == ("epsilon", False)
    assert manifest["inputs"] == ["x", "t", "y", "guidance_scale"]
    assert manifest["image"] == {
        "channels": 1,
        "side": 28,
        "pixel_side": 28,
        "autoencoder": "identity",
        "latent_scale": 1.0,
    }
    assert manifest["classes"]["num_classes"] == manifest["classes"]["null_label"] == 10
    assert manifest["classes"]["names"][0] == "bear"
    assert manifest["guidance"] == {
        "folded": True, "input": "guidance_scale", "guided_channels": 1, "null": "label"
    }  # fmt: skip
    assert manifest["conditions"] == []
    assert manifest["settings"] == {
        "sampler": "ddim",
        "num_steps": 3,
        "eta": 1.0,
        "guidance_scale": 2.0,
        "clip_denoised": True,
    }
    assert manifest["checkpoint"]["step"] == 2 and manifest["checkpoint"]["weights"] == "ema"
    assert manifest["export"]["max_abs_diff"] < 1e-5

    cfg = load_config(dit_config, "export", overrides)
    ema, _, _ = build_sampling_model(cfg, Identity(), torch.device("cpu"))
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([0, 250, 500, 999]), torch.tensor([0, 3, 6, 9])
    with torch.no_grad():
        null = torch.full_like(y, 10)
        expected = ema.forward_with_cfg(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), 2.0
        )[:4]  # both halves hold the guided output
    onnx = run / "export/0000002.onnx"
    got = OnnxDenoiser(onnx, threads=1)(x, t, y, 2.0)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)

    # docs/export.md's snippet, unchanged but for the file it opens
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    documented = '"runs/animals/export/0002000.onnx"'
    assert documented in snippet
    names = {}
    exec(compile(snippet.replace(documented, repr(str(onnx))), str(DOC), "exec"), names)
    x0 = names["x0"]
    assert x0.shape == (8, 1, 28, 28) and x0.dtype == np.float32
    assert -1.0 <= x0.min() and x0.max() <= 1.0  # the range the docs state


def test_export_without_a_checkpoint_is_one_line(
    tmp_path, demo_config, tiny_overrides, main, capsys
):
    assert main(["-c", demo_config, "-p", "export", *tiny_overrides(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and err.count("\n") == 1
