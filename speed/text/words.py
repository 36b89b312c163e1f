"""Words as tokens through the hashing trick (Weinberger et al. 2009, "Feature Hashing for Large
Scale Multitask Learning"; fastText's subword buckets): a lower-cased word w gets id
1 + crc32(w) mod `buckets`, so there is no vocabulary file to build, ship or keep in step with the
checkpoint, and the ids are the same on every machine and Python process (crc32 is fixed, unlike
Python's salted `hash`). For a small text transformer trained with the model on a machine with no
pretrained weights: a word reaches the model as one token, where `ByteTokens` makes the model
learn words from their letters first. Two words may share a bucket (with 4096 buckets and a
vocabulary of V words, about V^2 / 8192 pairs do); `collisions` lists them for a set of captions.
Id 0 is padding."""

from __future__ import annotations

import re
import zlib

from speed.text.base import ModelTokens

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")  # runs of letters and digits; any other mark alone


def words(caption: str) -> list[str]:
    """The caption's tokens: lower-cased runs of letters and digits, each other mark alone."""
    return _WORD.findall(caption.lower())


class WordTokens(ModelTokens):
    """Captions -> hashed word ids [N, max_length] and mask; `forward` passes the ids on unchanged
    (`dim` 0): the model's own `text_encoder` (speed.models.text_transformer) embeds them.

    Args:
        max_length: words per caption (longer captions are cut).
        buckets: hash buckets (ids 1..buckets).
    """

    name = "words"
    ids_about = (
        "lower-cased words of the caption (runs of letters and digits; any other mark alone), "
        "word w as id 1 + crc32(utf-8 w) mod buckets, 0 = padding (speed.text.WordTokens)"
    )

    def __init__(self, max_length: int = 16, buckets: int = 4096):
        super().__init__()
        if max_length < 1 or buckets < 1:
            raise ValueError(
                f"text_encoder.max_length and .buckets must be >= 1, got {max_length}, {buckets}"
            )
        self.max_length, self.buckets = max_length, buckets
        self.vocab_size = buckets + 1  # padding + the buckets

    def word_id(self, word: str) -> int:
        return 1 + zlib.crc32(word.encode("utf-8")) % self.buckets

    def token_ids(self, caption: str) -> list[int]:
        return [self.word_id(w) for w in words(caption)]

    def collisions(self, captions: list[str]) -> dict[int, list[str]]:
        """{id: its words} for every id that two or more of the captions' words share."""
        by_id: dict[int, set[str]] = {}
        for caption in captions:
            for word in words(caption):
                by_id.setdefault(self.word_id(word), set()).add(word)
        return {i: sorted(ws) for i, ws in by_id.items() if len(ws) > 1}
