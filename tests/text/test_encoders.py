"""Text encoders: tiny random T5 and CLIP text models saved with save_pretrained beside a
tokenizer built offline (tests/conftest.py), loaded through `speed.text`'s real path (local files
only); and the byte and hashed-word tokens of the jointly trained text transformer."""

import pytest
import torch

from speed.errors import ConfigError
from speed.text import ByteTokens, CLIPTextEncoder, Labels, T5TextEncoder, WordTokens


def test_t5_embeds_like_transformers_with_the_padding_mask(tiny_t5_dir, CAPTIONS):
    from transformers import T5EncoderModel

    encoder = T5TextEncoder(str(tiny_t5_dir), max_length=12)
    out = encoder.condition(CAPTIONS, torch.device("cpu"))
    assert out["y"].shape == (3, 12, 16) and out["mask"].shape == (3, 12)
    assert out["mask"].sum(1).tolist() == [6, 2, 9]  # whitespace words, no special tokens added
    reference = T5EncoderModel.from_pretrained(tiny_t5_dir).eval()
    ids, mask = encoder.tokenize(CAPTIONS)
    expected = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(out["y"], expected)
    assert encoder.model_arguments() == {"caption_channels": 16, "vocab_size": 0, "max_length": 12}
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.encoder.training  # frozen: stays in eval mode


def test_t5_output_ignores_padding(tiny_t5_dir, CAPTIONS):
    """A caption's embeddings do not depend on how far it is padded."""
    short, long = T5TextEncoder(str(tiny_t5_dir), max_length=8), T5TextEncoder(str(tiny_t5_dir), 12)
    a = short.condition(CAPTIONS[:1], torch.device("cpu"))["y"][0, :6]
    b = long.condition(CAPTIONS[:1], torch.device("cpu"))["y"][0, :6]
    torch.testing.assert_close(a, b)


def test_clip_attends_to_every_token_by_default(tiny_clip_dir, CAPTIONS):
    from transformers import CLIPTextModel

    encoder = CLIPTextEncoder(str(tiny_clip_dir), max_length=10)
    out = encoder.condition(CAPTIONS, torch.device("cpu"))
    assert out["y"].shape == (3, 10, 16) and bool(out["mask"].all())
    ids, _ = encoder.tokenize(CAPTIONS)
    expected = CLIPTextModel.from_pretrained(tiny_clip_dir).eval()(input_ids=ids).last_hidden_state
    torch.testing.assert_close(out["y"], expected)
    masked = CLIPTextEncoder(str(tiny_clip_dir), max_length=10, mask_padding=True)
    assert masked.condition(CAPTIONS, torch.device("cpu"))["mask"].sum(1).tolist() == [6, 2, 9]


@pytest.fixture
def CAPTIONS(tokenizer_captions):  # noqa: N802
    return tokenizer_captions


@pytest.mark.parametrize("cls", [T5TextEncoder, CLIPTextEncoder])
def test_a_missing_folder_names_the_key(tmp_path, cls):
    with pytest.raises(ConfigError, match="text_encoder.path"):
        cls(str(tmp_path / "absent"))


def test_byte_tokens_are_bytes_plus_one_padded_with_zero():
    tokens = ByteTokens(max_length=4)
    ids, mask = tokens.tokenize(["ab", "héllo"])
    assert ids.tolist() == [[98, 99, 0, 0], [105, 196, 170, 109]]  # UTF-8 bytes + 1, cut at 4
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    out = tokens.condition(["ab"], torch.device("cpu"))
    assert torch.equal(out["y"], ids[:1]) and tokens.model_arguments()["vocab_size"] == 257
    assert tokens.reads_text and not Labels().reads_text


def test_word_tokens_are_one_plus_crc32_of_each_lower_cased_word():
    tokens = WordTokens(max_length=7, buckets=4096)
    ids, mask = tokens.tokenize(["A Cat left of a zebra.", "cat,cat"])
    # crc32: "a" 3904355907, "cat" 2656977832, "left" 2053629800, "of" 124625402,
    # "zebra" 358047158, "." 248832578, "," 3772416878; id = 1 + crc32 % 4096
    assert ids.tolist() == [[3652, 937, 1897, 507, 3652, 3511, 579], [937, 879, 937, 0, 0, 0, 0]]
    assert mask.sum(1).tolist() == [7, 3]
    assert tokens.tokenize(["a cat left of a zebra . more"])[0].tolist() == ids[:1].tolist()  # cut
    assert tokens.model_arguments() == {"caption_channels": 0, "vocab_size": 4097, "max_length": 7}
    cat = tokens.condition(["cat"], torch.device("cpu"))["y"]
    assert torch.equal(cat[0, :1], torch.tensor([937]))


def test_word_tokens_list_the_words_that_share_a_bucket():
    tokens = WordTokens(buckets=4)  # cat, left -> 1; of, zebra -> 3; a -> 4
    assert tokens.collisions(["a cat left of a zebra"]) == {1: ["cat", "left"], 3: ["of", "zebra"]}
    assert WordTokens().collisions(["a cat left of a zebra"]) == {}
    with pytest.raises(ValueError, match="buckets"):
        WordTokens(buckets=0)
