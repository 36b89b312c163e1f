"""Fixed-size batches: every call sees exactly `rows` rows, padding dropped."""

import torch

from speed.serve.fixed_rows import in_rows


def test_every_call_sees_rows_rows_and_the_padding_is_dropped():
    seen = []

    def fn(x, y):
        seen.append((x.shape[0], None if y is None else y.shape[0]))
        return 2 * x

    x = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(in_rows(fn, 4)(x, None), 2 * x)
    assert seen == [(4, None), (4, None)]
    seen.clear()
    assert torch.equal(in_rows(fn, 4)(x[:4], torch.zeros(4)), 2 * x[:4])
    assert seen == [(4, 4)]


def test_padding_repeats_the_last_row():
    got = in_rows(lambda x: x.clone(), 3)
    calls = []
    in_rows(lambda x: calls.append(x.clone()) or x, 3)(torch.tensor([[1.0], [2.0]]))
    assert torch.equal(calls[0], torch.tensor([[1.0], [2.0], [2.0]]))
    assert torch.equal(got(torch.tensor([[5.0]])), torch.tensor([[5.0]]))
