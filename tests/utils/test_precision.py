"""`speed.utils.precision`: the config's precision names, and the denoiser that runs under autocast
but hands float32 back to the sampler."""

import pytest
import torch
from torch import nn

from speed.errors import ConfigError
from speed.utils.precision import autocast_denoiser, autocast_dtype


def test_precision_names_map_to_autocast_dtypes_and_an_unknown_one_is_refused():
    assert autocast_dtype("fp32") is None
    assert autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp16") is torch.float16
    with pytest.raises(
        ConfigError, match=r"^precision: unknown 'fp8'; use one of fp32, bf16, fp16$"
    ):
        autocast_dtype("fp8")


def test_fp32_leaves_the_model_function_as_it_is():
    def model_fn(x, t):
        return x

    assert autocast_denoiser(model_fn, "fp32", "cpu") is model_fn


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_the_forward_runs_in_low_precision_and_returns_float32(precision, dtype):
    torch.manual_seed(0)
    layer = nn.Linear(16, 16)
    seen = []

    def model_fn(x, t, y=None):
        h = layer(x)
        seen.append((h.dtype, y))
        return h * t[:, None]

    x, t = torch.randn(4, 16), torch.arange(4.0)
    out = autocast_denoiser(model_fn, precision, "cpu")(x, t, y="labels")
    assert seen == [(dtype, "labels")]  # the matmul ran in `dtype`; keyword arguments pass through
    assert out.dtype == torch.float32
    exact = layer(x) * t[:, None]
    # One rounding of inputs and weights to 8 (bf16) or 11 (fp16) significant bits.
    tolerance = {"bf16": 3e-2, "fp16": 4e-3}[precision]
    torch.testing.assert_close(out, exact, atol=tolerance, rtol=tolerance)
    assert not torch.equal(out, exact)
    assert not torch.is_autocast_enabled("cpu")  # the context ends with the call
