"""The interpolant objective through the phases on a tiny DiT from YAML: train, exact resume,
inference and sample with ODE and SDE samplers, and the one-line refusals of the wrong family;
the masked backbones (MaskDiT, MDT) train, resume and sample with it too."""

import numpy as np
import pytest
import torch
from tests_paths import FLOW_CONFIG, FLOW_MASKDIT_CONFIG  # tests/runners

from speed.config import ConfigError, load_config
from speed.models import load_checkpoint
from speed.runners.inference import inference
from speed.runners.sample import sample
from speed.runners.train import train


@pytest.fixture
def flow(tiny_overrides, tiny_dit):
    def overrides(run, steps=2, *extra):
        return tiny_overrides(run, steps) + tiny_dit + list(extra)

    return overrides


def test_train_records_the_objective_and_resumes_exactly(tmp_path, flow):
    quiet = "sample_every=0"
    straight = train(load_config(FLOW_CONFIG, "train", flow(tmp_path / "a", 4, quiet)))
    train(load_config(FLOW_CONFIG, "train", flow(tmp_path / "b", 2, quiet)))
    resumed = train(
        load_config(FLOW_CONFIG, "train", flow(tmp_path / "b", 4, quiet, "resume=true"))
    )
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["objective"] == "interpolant" and a["config"]["diffusion"]["path"] == "linear"
    assert a["model"]["final_layer.linear.weight"].shape[0] == 4 * 4 * 1  # no variance channels
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


@pytest.mark.parametrize(
    "extra",
    [
        ["sampler=heun"],
        ["sampler=euler_maruyama", "sampler_options.last_step=tweedie"],
        ["diffusion.sampling=logit_normal", "sampler=euler", "guidance_scale=3",
         "sampler_options.guidance_high=0.7", "sampler_options.shift=2.0"],
    ],
)  # fmt: skip
def test_inference_and_sample_with_each_sampler(tmp_path, flow, extra):
    run = tmp_path / "run"
    train(load_config(FLOW_CONFIG, "train", flow(run, 1, *extra, "sample_every=0")))
    npz = np.load(inference(load_config(FLOW_CONFIG, "inference", flow(run, 1, *extra))))
    assert npz["arr_0"].shape == (6, 28, 28, 3) and npz["arr_1"].tolist() == [0, 3] * 3
    strip = ["denoise_strip=true"]
    assert sample(load_config(FLOW_CONFIG, "sample", flow(run, 1, *extra, *strip))).is_file()


MASKED = {  # (config, tiny overrides): MaskDiT from its flow config, MDT named over the DiT's
    "maskdit": (FLOW_MASKDIT_CONFIG, ["model.hidden_size=32", "model.depth=2",
                "model.num_heads=2", "model.decoder_hidden_size=16", "model.decoder_depth=1",
                "model.decoder_num_heads=2", "model.unmask_at_step=3"]),  # steps 0-2 masked
    "mdt": (FLOW_CONFIG, ["model._target_=speed.models.mdt.build_mdt", "model.name=MDT-S/4",
            "model.hidden_size=32", "model.depth=4", "model.num_heads=2", "model.decode_layer=2"]),
}  # fmt: skip


@pytest.mark.parametrize("backbone", sorted(MASKED))
def test_masked_backbones_train_resume_and_sample(tmp_path, tiny_overrides, backbone):
    config, tiny = MASKED[backbone]

    def load(phase, run, steps, *extra):
        return load_config(config, phase, tiny_overrides(run, steps) + tiny + list(extra))

    straight = train(load("train", tmp_path / "a", 4, "sample_every=0"))
    train(load("train", tmp_path / "b", 2, "sample_every=0"))
    resumed = train(load("train", tmp_path / "b", 4, "sample_every=0", "resume=true"))
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a["objective"] == "interpolant" and "mask_token" in a["model"]
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert sample(load("sample", tmp_path / "a", 4)).is_file()


def test_the_wrong_family_is_refused_in_one_line(tmp_path, flow, dit_config, main, capsys):
    run = tmp_path / "run"
    train(load_config(FLOW_CONFIG, "train", flow(run, 1)))
    with pytest.raises(ConfigError, match="sampler 'ddpm' samples the gaussian objective"):
        sample(load_config(FLOW_CONFIG, "sample", flow(run, 1, "sampler=ddpm")))
    ckpt = run / "train/checkpoints/0000001.pt"
    with pytest.raises(ConfigError, match="was trained with the interpolant objective"):
        sample(load_config(dit_config, "sample", flow(run, 1, f"ckpt_path={ckpt}")))
    with pytest.raises(ConfigError, match="trained with the interpolant objective; resuming"):
        train(load_config(dit_config, "train", flow(run, 2, "resume=true")))
    assert main(["-c", FLOW_CONFIG, "-p", "sample", *flow(run, 1, "sampler=ddim")]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "samples the gaussian objective" in errors[0]


def test_export_then_onnx_runtime_samples_like_pytorch(tmp_path, flow):
    from speed.deploy.onnx_sampling import OnnxDenoiser
    from speed.flow.samplers import SAMPLERS
    from speed.runners.build import build_autoencoder, build_diffusion, build_sampling_model
    from speed.runners.export import export

    run = tmp_path / "run"
    train(load_config(FLOW_CONFIG, "train", flow(run, 1, "sample_every=0")))
    cfg = load_config(FLOW_CONFIG, "export", flow(run, 1))
    session = OnnxDenoiser(export(cfg))
    assert session.manifest["interpolant"]["path"] == "linear"
    model, _, spec = build_sampling_model(cfg, build_autoencoder(cfg), torch.device("cpu"))
    objective = build_diffusion(cfg)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(3, spec.channels, spec.side, spec.side, generator=g)
    y = torch.tensor([0, 1, 2])

    def onnx_model(x, t, y):
        return torch.from_numpy(session(x.numpy(), t.numpy(), y.numpy()))

    expected = SAMPLERS["heun"](objective, model, noise, 4, {"y": y})
    got = SAMPLERS["heun"](objective, onnx_model, noise, 4, {"y": y})
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
