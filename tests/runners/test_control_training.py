"""A ControlNet through the phases from YAML (configs/image/animals/control.yaml on the tiny DiT):
at initialisation the built model is its base exactly; the run trains and saves only the branch,
resumes exactly (with EMA, with SpeeD's diffusion.faster, and under strategy=fsdp on two ranks,
which equal one process); sampling shows each row's control
image before its samples, scale 0 is the base; inference samples under the data's edge maps and
stores them; another base is refused in one line (the export takes control images:
tests/runners/test_export_conditions.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_fsdp import torchrun  # tests/runners

from speed.app.studio import RunStudio
from speed.config import load_config
from speed.control import ControlledModel
from speed.errors import ConfigError
from speed.generation import control_grid_inputs, data_controls
from speed.models import load_checkpoint, load_pretrained
from speed.runners.build import (
    build_autoencoder,
    build_control,
    build_dataset,
    build_model,
    build_reference_dataset,
    build_sampling_model,
    data_spec,
)
from speed.runners.inference import inference
from speed.runners.sample import sample
from speed.runners.train import train
from speed.serve.engine import Engine

pytestmark = pytest.mark.usefixtures("single_thread")
CONTROL_CONFIG = str(Path(__file__).resolve().parents[2] / "configs/image/animals/control.yaml")


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, dit_config, tiny_overrides, tiny_dit):
    run = tmp_path_factory.mktemp("base")
    return train(load_config(dit_config, "train", tiny_overrides(run, 2) + tiny_dit))


def control_cfg(tiny_overrides, tiny_dit, run, steps, base, phase="train", *extra):
    overrides = tiny_overrides(run, steps) + tiny_dit + ["sample_every=0", "control.num_blocks=1"]
    return load_config(CONTROL_CONFIG, phase, overrides + [f"control.base={base}", *extra])


def inputs(spec, n=4):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, spec.channels, spec.side, spec.side, generator=g)
    control = torch.randn(n, spec.channels, spec.side, spec.side, generator=g).sign()
    return x, torch.tensor([3.0, 200, 600, 999])[:n], torch.arange(n) % 3, control


def test_the_yaml_built_model_is_its_base_exactly_at_initialisation(
    tmp_path, tiny_overrides, tiny_dit, base_ckpt
):
    cfg = control_cfg(tiny_overrides, tiny_dit, tmp_path / "a", 1, base_ckpt)
    spec = data_spec(cfg, build_dataset(cfg), build_autoencoder(cfg))
    base = load_pretrained(build_model(cfg, spec), base_ckpt).eval()
    model = build_control(cfg).apply(load_pretrained(build_model(cfg, spec), base_ckpt)).eval()
    assert isinstance(model, ControlledModel)
    x, t, y, control = inputs(spec)
    with torch.no_grad():
        assert torch.equal(model(x, t, y, control=control), base(x, t, y))
        assert torch.equal(
            model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]),
                                   torch.cat([y, torch.full_like(y, 10)]), 2.0,
                                   control=torch.cat([control, control])),
            base.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]),
                                  torch.cat([y, torch.full_like(y, 10)]), 2.0),
        )  # fmt: skip
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("branch.") for n in trainable)


@pytest.mark.parametrize("faster", [False, True], ids=["uniform", "faster"])
def test_control_run_saves_only_the_branch_and_resumes_exactly(
    tmp_path, tiny_overrides, tiny_dit, base_ckpt, faster
):
    def cfg(run, steps, *extra):
        return control_cfg(tiny_overrides, tiny_dit, tmp_path / run, steps, base_ckpt, "train",
                           f"diffusion.faster={str(faster).lower()}", *extra)  # fmt: skip

    straight = load_checkpoint(train(cfg("a", 4)))
    train(cfg("b", 2))
    resumed = load_checkpoint(train(cfg("b", 4, "resume=true")))
    for key in ("model", "ema"):
        assert straight[key] and all(name.startswith("branch.") for name in straight[key])
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"
    # trained: the zero projections moved; the optimizer holds the branch's state only
    assert straight["model"]["branch.after_proj.0.weight"].abs().sum() > 0
    assert len(straight["opt"]["state"]) == len(straight["model"])
    record = straight["adapter"]
    assert record["kind"] == "controlnet" and record["transform"] == "edges"
    assert record["base_sha256"] == build_control(cfg("a", 4)).base_sha256
    assert straight["config"]["diffusion"]["faster"] is faster


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_and_resume_exactly(
    tmp_path, tiny_overrides, tiny_dit, base_ckpt
):
    """The base's blocks and the branch's copies are FSDP units (the branch's residuals enter
    the base's sharded blocks through hooks): two ranks with half the batch each compute one
    process's update (to reduction-order rounding), the consolidated file holds the branch only,
    and the shards resume exactly."""

    def overrides(run, steps, *extra):
        common = ["sample_every=0", "data.random_flip=false", "global_batch_size=4"]
        return tiny_overrides(run, steps) + tiny_dit + common + [
            "control.num_blocks=1", f"control.base={base_ckpt}", *extra
        ]  # fmt: skip

    torchrun(CONTROL_CONFIG, overrides(tmp_path / "two", 4, "strategy=fsdp"))
    two = load_checkpoint(tmp_path / "two/train/checkpoints/0000004.pt")
    one_cfg = load_config(CONTROL_CONFIG, "train", overrides(tmp_path / "one", 4))
    one = load_checkpoint(train(one_cfg))
    assert two["adapter"] == one["adapter"] and two["opt"] is None
    assert two["model"]["branch.after_proj.0.weight"].abs().sum() > 0
    for key in ("model", "ema"):
        assert set(two[key]) == set(one[key])  # the branch's keys only
        for name, tensor in one[key].items():
            torch.testing.assert_close(two[key][name], tensor, atol=1e-5, rtol=0, msg=name)
    resume = f"resume={tmp_path}/two/train/checkpoints/0000002.pt"
    torchrun(CONTROL_CONFIG, overrides(tmp_path / "resumed", 4, "strategy=fsdp", resume))
    resumed = load_checkpoint(tmp_path / "resumed/train/checkpoints/0000004.pt")
    for key in ("model", "ema"):
        for name, tensor in two[key].items():
            assert torch.equal(resumed[key][name], tensor), f"{key}.{name} differs after resume"
    assert sample(control_cfg(tiny_overrides, tiny_dit, tmp_path / "two", 4, base_ckpt,
                              "sample")).is_file()  # fmt: skip


@pytest.mark.slow
def test_fsdp_two_ranks_equal_one_process_with_a_unet_branch(tmp_path, demo_config, tiny_overrides):
    """The UNet branch adds its residuals to the sharded decoder's skips and middle output by
    hooks: two ranks still compute one process's update."""
    base = train(load_config(demo_config, "train", tiny_overrides(tmp_path / "ub", 1)))

    def overrides(run, *extra):
        common = ["sample_every=0", "data.random_flip=false", "global_batch_size=4"]
        control = ["control.branch=unet", f"control.base={base}"]
        return tiny_overrides(tmp_path / run, 2) + common + control + [*extra]

    torchrun(demo_config, overrides("two", "strategy=fsdp"))
    two = load_checkpoint(tmp_path / "two/train/checkpoints/0000002.pt")
    one = load_checkpoint(train(load_config(demo_config, "train", overrides("one"))))
    assert any(name.startswith("branch.hint.") for name in two["model"])
    assert set(two["model"]) == set(one["model"])  # the branch's keys only
    assert two["model"]["branch.middle_conv.weight"].abs().sum() > 0
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


def test_faster_changes_what_the_branch_learns(tmp_path, tiny_overrides, tiny_dit, base_ckpt):
    def branch(run, faster):
        cfg = control_cfg(tiny_overrides, tiny_dit, tmp_path / run, 2, base_ckpt, "train",
                          f"diffusion.faster={faster}")  # fmt: skip
        return load_checkpoint(train(cfg))["model"]["branch.after_proj.0.weight"]

    assert not torch.equal(branch("u", "false"), branch("f", "true"))


def test_sample_shows_the_control_images_first_and_scale_zero_is_the_base(
    tmp_path, tiny_overrides, tiny_dit, base_ckpt
):
    run = tmp_path / "c"
    train(control_cfg(tiny_overrides, tiny_dit, run, 2, base_ckpt))
    folder = tmp_path / "edges"
    folder.mkdir()
    drawn = []
    for k, (a, b) in enumerate([(6, 22), (9, 19)]):
        edge = np.zeros((28, 28), np.uint8)
        edge[a:b, a] = edge[a:b, b - 1] = edge[a, a:b] = edge[b - 1, a:b] = 255
        Image.fromarray(edge).save(folder / f"{k}.png")
        drawn.append(edge)
    seeds = 3
    cfg = control_cfg(tiny_overrides, tiny_dit, run, 2, base_ckpt, "sample",
                      f"control.images={folder}")  # fmt: skip
    grid = np.asarray(Image.open(sample(cfg)))
    # 2 rows of (control, 3 seeds): 28 px tiles, 2 px padding, the whole grid enlarged 3x
    small, tile, pad = grid[::3, ::3], 28, 2
    small = small[..., 0] if small.ndim == 3 else small
    assert small.shape == (2 * (tile + pad) + pad, (seeds + 1) * (tile + pad) + pad)
    for row, edge in enumerate(drawn):
        top = pad + row * (tile + pad)
        assert np.array_equal(small[top : top + tile, pad : pad + tile], edge)
    # control.scale=0: the sampling model is the base
    cfg0 = control_cfg(tiny_overrides, tiny_dit, run, 2, base_ckpt, "sample", "control.scale=0")
    model, _, spec = build_sampling_model(cfg0, build_autoencoder(cfg0), torch.device("cpu"))
    base = load_pretrained(build_model(cfg0, spec), base_ckpt).eval()
    x, t, y, control = inputs(spec)
    with torch.no_grad():
        assert torch.equal(model(x, t, y, control=control), base(x, t, y))
        model.scale = 1.0  # the trained branch does change the output
        assert not torch.equal(model(x, t, y, control=control), base(x, t, y))


def test_inference_samples_under_the_data_edges_and_stores_them(
    tmp_path, tiny_overrides, tiny_dit, base_ckpt
):
    from evaluations.control_fidelity import main as fidelity

    run = tmp_path / "i"
    train(control_cfg(tiny_overrides, tiny_dit, run, 1, base_ckpt))
    cfg = control_cfg(tiny_overrides, tiny_dit, run, 1, base_ckpt, "inference")
    with np.load(inference(cfg)) as npz:
        controls, labels, images = npz["control"], npz["arr_1"], npz["arr_0"]
    maps, data_labels = data_controls(build_reference_dataset(cfg), build_control(cfg), range(6))
    assert np.array_equal(controls[..., 0], ((maps[:, 0] + 1) * 127.5).round().numpy())
    assert np.array_equal(labels, data_labels.numpy())  # each sample has its edges' class
    assert images.shape == (6, 28, 28, 3) and set(np.unique(controls)) == {0, 255}
    assert (
        fidelity([str(run / "inference" / "0000001.npz"), "--out", str(tmp_path / "f.json")]) == 0
    )


def test_another_base_is_refused_in_one_line(tmp_path, tiny_overrides, tiny_dit, base_ckpt):
    run = tmp_path / "d"
    train(control_cfg(tiny_overrides, tiny_dit, run, 1, base_ckpt))
    other = tmp_path / "other.pt"
    state = load_checkpoint(base_ckpt)
    state["ema"] = {k: v + 1 for k, v in state["ema"].items()}
    torch.save(state, other)
    with pytest.raises(ConfigError, match="set control.base to the checkpoint it was trained on"):
        sample(control_cfg(tiny_overrides, tiny_dit, run, 1, other, "sample"))
    with pytest.raises(ConfigError, match="sha256"):
        train(control_cfg(tiny_overrides, tiny_dit, run, 2, other, "train", "resume=true"))
    # The service and the page take no control image either: refused, never the base silently.
    with pytest.raises(ConfigError, match="the service: .* is a ControlNet branch"):
        Engine(run)
    with pytest.raises(ConfigError, match="the page: .* is a ControlNet branch"):
        RunStudio(run)
    for extra, message in (
        (["ckpt_path=x.pt"], "unset ckpt_path"),
        (["adapter.rank=2", f"adapter.base={base_ckpt}"], "adapter.rank=0"),
    ):
        cfg = control_cfg(tiny_overrides, tiny_dit, tmp_path / "e", 1, base_ckpt, "train", *extra)
        with pytest.raises(ConfigError, match=message):
            train(cfg)


def test_grid_rows_are_the_first_data_image_of_each_class(tmp_path, tiny_overrides, tiny_dit):
    cfg = control_cfg(tiny_overrides, tiny_dit, tmp_path / "g", 1, "unused.pt", "sample")
    dataset, control = build_reference_dataset(cfg), build_control(cfg)
    spec = data_spec(cfg, dataset, build_autoencoder(cfg))
    noise, labels, grid = control_grid_inputs(
        cfg, spec, control, build_autoencoder(cfg), dataset, torch.device("cpu")
    )
    first = [next(i for i in range(len(dataset)) if dataset[i][1] == c) for c in (0, 3)]
    maps, _ = data_controls(dataset, control, first)
    assert labels.tolist() == [0, 0, 0, 3, 3, 3]  # sample_classes [0, 3], 3 seeds each
    assert np.array_equal(grid.shown[..., 0], ((maps[:, 0] + 1) * 127.5).round().numpy())
    assert torch.equal(grid.per_image, maps.repeat_interleave(3, 0))  # pixel space: as is
    assert noise.shape == (6, 1, 28, 28) and torch.equal(noise[0], noise[3])  # a column's noise


def test_the_demo_unet_takes_a_unet_branch_and_refuses_a_dit_one(
    tmp_path, demo_config, tiny_overrides
):
    base = train(load_config(demo_config, "train", tiny_overrides(tmp_path / "ub", 1)))

    def cfg(run, branch):
        extra = [f"control.branch={branch}", f"control.base={base}", "sample_every=0"]
        return load_config(demo_config, "train", tiny_overrides(tmp_path / run, 1) + extra)

    unet = cfg("u", "unet")
    saved = load_checkpoint(train(unet))["model"]
    assert saved and all(name.startswith("branch.") for name in saved)
    assert any(name.startswith("branch.hint.") for name in saved)
    spec = data_spec(unet, build_dataset(unet), build_autoencoder(unet))
    model = build_control(unet).apply(load_pretrained(build_model(unet, spec), base)).eval()
    reference = load_pretrained(build_model(unet, spec), base).eval()
    x, t, y, control = inputs(spec)
    with torch.no_grad():
        assert torch.equal(model(x, t, y, control=control), reference(x, t, y))
    with pytest.raises(ConfigError, match="control.branch=dit needs a DiT"):
        train(cfg("d", "dit"))


def test_control_branch_trains_under_bf16_with_float32_weights(
    tmp_path, tiny_overrides, tiny_dit, base_ckpt
):
    cfg = control_cfg(tiny_overrides, tiny_dit, tmp_path / "bf16", 2, base_ckpt, "train",
                      "precision=bf16")  # fmt: skip
    state = load_checkpoint(train(cfg))
    assert state["model"] and all(name.startswith("branch.") for name in state["model"])
    assert {t.dtype for t in state["model"].values() if t.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
