"""UTF-8 bytes as tokens, for a small text transformer trained jointly with the model (LDM's
text-to-image set-up, Rombach et al. 2022 sec. 4.3, with bytes in place of a learned vocabulary),
so text-to-image runs on a machine with no pretrained weights. Id 0 is padding; byte b is b + 1."""

from __future__ import annotations

from speed.text.base import ModelTokens


class ByteTokens(ModelTokens):
    """Captions -> byte ids [N, max_length] and mask; `forward` passes the ids on unchanged
    (`dim` 0): the model's own `text_encoder` (speed.models.text_transformer) embeds them.

    Args:
        max_length: bytes per caption (longer captions are cut).
    """

    name = "bytes"
    vocab_size = 257  # padding + 256 byte values
    ids_about = (
        "UTF-8 bytes of the caption, byte b as id b + 1, 0 = padding (speed.text.ByteTokens)"
    )

    def __init__(self, max_length: int = 64):
        super().__init__()
        if max_length < 1:
            raise ValueError(f"text_encoder.max_length must be >= 1, got {max_length}")
        self.max_length = max_length

    def token_ids(self, caption: str) -> list[int]:
        return [byte + 1 for byte in caption.encode("utf-8")]
