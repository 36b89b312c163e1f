"""Samplers built from config (`speed.generation`): options declared by the sampler's keyword-only
parameters, checked when built, and set from the command line through to the call."""

import ast
from pathlib import Path

import pytest
import torch

from speed.autoencoders import Identity
from speed.config import ConfigError, load_config
from speed.diffusion import create_diffusion
from speed.diffusion.samplers import SAMPLERS, dpm_solver, sampler_options
from speed.generation import build_sampler, generate, sampler_from_config
from speed.models import build_dit

REPO = Path(__file__).resolve().parents[1]


def sampling_config(demo_config, *overrides):
    return load_config(demo_config, "sample", list(overrides))


@pytest.fixture
def toy_sampler(monkeypatch):
    """Registers "toy": one file's worth of sampler with a keyword-only option `strength`."""
    calls = []

    def toy_sample(
        diffusion,
        model,
        noise,
        num_steps,
        model_kwargs=None,
        generator=None,
        progress=False,
        *,
        strength: float = 1.0,
        callback=None,
    ):
        calls.append({"strength": strength, "num_steps": num_steps})
        return noise * strength

    monkeypatch.setitem(SAMPLERS, "toy", toy_sample)
    return calls


def test_a_registered_sampler_takes_its_option_from_the_command_line(demo_config, toy_sampler):
    cfg = sampling_config(demo_config, "sampler=toy", "sampler_options.strength=0.25")
    assert sampler_options("toy") == {"strength": (1.0, float)}
    noise = torch.ones(2, 1, 4, 4)
    images = generate(
        torch.nn.Identity(),
        create_diffusion(""),
        Identity(),
        noise,
        None,
        sampler=sampler_from_config(cfg),
        num_steps=cfg.num_steps,
    )
    assert toy_sampler == [{"strength": 0.25, "num_steps": 25}]
    torch.testing.assert_close(images, torch.full_like(noise, 0.25))


def test_an_unknown_option_names_the_key_and_the_closest_one(demo_config, toy_sampler):
    cfg = sampling_config(demo_config, "sampler=toy", "sampler_options.strenght=2")
    with pytest.raises(ConfigError, match=r"'sampler_options\.strenght'.*'sampler_options\.stre"):
        sampler_from_config(cfg)
    cfg = sampling_config(demo_config, "sampler=dpm_solver++", "sampler_options.gird=logSNR")
    with pytest.raises(ConfigError, match=r"did you mean 'sampler_options\.grid'"):
        sampler_from_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sampler=dpm_solver++", "sampler_options.grid=uniform"], "expects one of logSNR|time"),
        (["sampler=ddim", "eta=-0.5"], r"'sampler_options\.eta' of 'ddim' must be >= 0"),
        (["sampler=ddim", "sampler_options.eta=-1"], "must be >= 0"),
        (["sampler=ddim", "sampler_options.eta=fast"], "expects float, got 'fast'"),
        (["sampler=toy", "sampler_options.strength=[1]"], "expects float"),
    ],
)
def test_a_bad_option_value_fails_when_the_sampler_is_built(
    demo_config, toy_sampler, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        sampler_from_config(sampling_config(demo_config, *overrides))


def test_dpm_solver_grid_is_set_from_config(demo_config):
    cfg = sampling_config(demo_config, "sampler=dpm_solver++", "sampler_options.grid=time_uniform")
    built = sampler_from_config(cfg)
    assert built.func is SAMPLERS["dpm_solver++"]
    # the demo sets clip_denoised and eta at the root; dpm_solver++ declares only the first
    assert built.keywords == {"clip_denoised": True, "grid": "time_uniform"}


def test_root_keys_reach_only_samplers_that_declare_them(demo_config):
    ddim = sampler_from_config(sampling_config(demo_config))  # the demo: ddim with eta 1
    assert ddim.keywords == {"eta": 1.0, "clip_denoised": True}
    plms = sampler_from_config(sampling_config(demo_config, "sampler=plms", "eta=0.5"))
    assert plms.keywords == {"clip_denoised": True}
    wins = sampling_config(demo_config, "eta=0.5", "sampler_options.eta=0.0")
    assert sampler_from_config(wins).keywords["eta"] == 0.0  # sampler_options wins


def test_build_sampler_matches_calling_the_sampler_directly():
    diffusion = create_diffusion("", learn_sigma=False)
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    model = lambda x, t, **kw: 0.1 * x  # noqa: E731
    built = build_sampler("ddim", {"eta": 1.0})
    run = lambda fn, **kw: fn(  # noqa: E731
        diffusion, model, noise, 5, generator=torch.Generator().manual_seed(1), **kw
    )
    torch.testing.assert_close(run(built), run(SAMPLERS["ddim"], eta=1.0))


def test_every_sampler_declares_its_options():
    assert sampler_options("ddim")["eta"][0] == 0.0
    assert set(sampler_options("dpm_solver++")) == {"grid", "clip_denoised"}
    grid_choices = sampler_options("dpm_solver++")["grid"][1].__args__
    assert set(grid_choices) == set(dpm_solver.GRIDS)
    for name in SAMPLERS:
        assert "callback" not in sampler_options(name)
        assert "clip_denoised" in sampler_options(name)


def test_runners_never_import_each_other():
    for path in (REPO / "speed/runners").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        ]
        runners = [
            m for m in imported if m.startswith("speed.runners.") and m != "speed.runners.build"
        ]
        assert runners == [], f"{path.name} imports {runners}"


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm_solver++"])
def test_bf16_and_fp16_samples_are_close_to_fp32(sampler, single_thread):
    torch.manual_seed(0)
    model = build_dit(
        "DiT-S/4", input_size=8, in_channels=1, num_classes=3, depth=2, hidden_size=32,
        num_heads=2, learn_sigma=False,
    ).eval()  # fmt: skip
    for p in model.parameters():  # adaLN-Zero starts at zero: give the output something to do
        p.data.add_(0.05 * torch.randn_like(p))
    diffusion = create_diffusion("", learn_sigma=False)
    noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 3

    def images(precision):
        return generate(
            model, diffusion, Identity(), noise, labels, sampler=sampler, num_steps=10,
            guidance_scale=2.0, generator=torch.Generator().manual_seed(0), precision=precision,
            clip_denoised=True,
        )  # fmt: skip

    fp32 = images("fp32")
    errors = {}
    for precision in ("bf16", "fp16"):
        low = images(precision)
        assert low.dtype == torch.float32
        errors[precision] = (low - fp32).abs()
    # Measured (10 guided steps, pixels in [-1, 1]): mean |bf16 - fp32| 5-7e-4, max 0.03-0.14
    # (at a few pixels near the clipping edge); fp16, with 3 more mantissa bits, 4-8x less.
    assert 1e-5 < errors["bf16"].mean() < 5e-3 and errors["bf16"].max() < 0.3
    assert errors["fp16"].mean() < errors["bf16"].mean() / 2
