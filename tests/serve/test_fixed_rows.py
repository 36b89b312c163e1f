"""Fixed-size batches: every call sees exactly `rows` rows, padding dropped; a text encoder's
captions too."""

import torch

from speed.serve.fixed_rows import FixedRowsEncoder, in_rows
from speed.text import T5TextEncoder


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


def test_captions_are_encoded_in_rows_and_each_keeps_its_own_embedding(
    tiny_t5_dir, tokenizer_captions
):
    """A tiny T5 through `FixedRowsEncoder`: every encoder call sees `rows` captions, and a
    caption's embedding and mask are the same, bit for bit, alone or among others; all equal
    the plain encoder's within float rounding."""
    t5 = T5TextEncoder(tiny_t5_dir, max_length=6)
    sizes = []
    t5.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    encoder, cpu = FixedRowsEncoder(t5, rows=2), torch.device("cpu")
    a, b, c = tokenizer_captions
    together = encoder.condition([b, c, a], cpu)
    alone = encoder.condition([a], cpu)
    assert sizes == [2, 2, 2] and together["y"].shape == (3, 6, 16)
    for key in ("y", "mask"):
        assert torch.equal(together[key][2:], alone[key])
    plain = t5.condition([b, c, a], cpu)
    torch.testing.assert_close(together["y"], plain["y"])
    assert torch.equal(together["mask"], plain["mask"]) and not torch.equal(
        together["y"][0], together["y"][2]
    )
