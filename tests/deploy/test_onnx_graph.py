"""The exported graph computes what PyTorch computes (fp32; tolerance rtol 1e-4, atol 1e-5, the
size of float32 rounding differences between two kernel libraries summed over a few layers), at
batch sizes other than the export's, with guidance folded in as in `forward_with_cfg`."""

import numpy as np
import onnx
import pytest
import torch

from speed.deploy.onnx_graph import DenoiserGraph
from speed.deploy.onnx_sampling import OnnxDenoiser

RTOL, ATOL = 1e-4, 1e-5


def session(path):
    return OnnxDenoiser(path, manifest={}, threads=1)


@pytest.mark.parametrize("name", ["dit", "unet"])
@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_runtime_equals_pytorch(exported, name, batch):
    model, path = exported(name)
    graph = DenoiserGraph(model)
    x, t, y, scale = graph.example_inputs(batch, model.in_channels, 8, seed=batch)
    with torch.no_grad():
        expected = graph(x, t, y, scale).numpy()
    got = session(path)(x.numpy(), t.numpy(), y.numpy(), float(scale))
    assert got.shape == expected.shape == (batch, model.out_channels, 8, 8)
    assert np.abs(expected).max() > 0.1  # random weights: a real output, not zeros
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["dit", "unet"])
def test_guidance_is_folded_in_like_the_two_pass_formula(exported, name):
    """eps_uncond + s (eps_cond - eps_uncond) on the guided channels (3 of DiT's 4 latent ones,
    the UNet's one), the model's own conditional output on the others."""
    model, path = exported(name)
    x, t, y, _ = DenoiserGraph(model).example_inputs(3, model.in_channels, 8, seed=7)
    with torch.no_grad():
        cond = model(x, t, y).numpy()
        uncond = model(x, t, torch.full_like(y, model.num_classes)).numpy()
    run = session(path)
    g = model.guided_channels
    assert g == (3 if name == "dit" else 1)
    for s in (1.0, 4.0):
        got = run(x.numpy(), t.numpy(), y.numpy(), s)
        np.testing.assert_allclose(
            got[:, :g], uncond[:, :g] + s * (cond - uncond)[:, :g], 1e-4, 1e-5
        )
        np.testing.assert_allclose(got[:, g:], cond[:, g:], RTOL, ATOL)
    assert np.abs(run(x.numpy(), t.numpy(), y.numpy(), 4.0) - cond).max() > 1e-2


def test_unconditional_graph_takes_x_and_t_only(exported):
    model, path = exported("uncond_dit")
    run = session(path)
    assert run.input_names == ["x", "t"]
    x, t = DenoiserGraph(model).example_inputs(2, 4, 8)
    with torch.no_grad():
        expected = model(x, t).numpy()
    np.testing.assert_allclose(run(x.numpy(), t.numpy()), expected, RTOL, ATOL)
    with pytest.raises(ValueError, match="no classifier-free guidance"):
        run(x.numpy(), t.numpy(), guidance_scale=2.0)


def test_one_self_contained_file_with_a_dynamic_batch(exported):
    _, path = exported("unet")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no external data
    graph = onnx.load(str(path)).graph
    dims = {i.name: i.type.tensor_type.shape.dim for i in graph.input}
    assert [d.dim_param != "" for d in dims["x"]] == [True, False, False, False]
    assert dims["x"][0].dim_param == dims["t"][0].dim_param == dims["y"][0].dim_param
    assert len(dims["guidance_scale"]) == 0  # a scalar
    assert [o.name for o in graph.output] == ["model_output"]
