"""Text conditioning for caption-conditioned backbones, built like `speed.autoencoders`: one
interface (`base.TextEncoder`), one file per kind, weights loaded from a local path.

- `Labels`: no text; class labels (or none) condition the model (every label-conditioned run).
- `T5TextEncoder`: T5 v1.1's encoder (PixArt-alpha: XXL, 120 tokens), frozen.
- `CLIPTextEncoder`: CLIP's text tower (Stable Diffusion: ViT-L/14, 77 tokens), frozen.
- `ByteTokens`: UTF-8 bytes as tokens for a small text transformer that trains with the model
  (`speed.models.text_transformer`, LDM-style), for machines without pretrained weights.
- `WordTokens`: hashed words as tokens for the same text transformer (a word is one token).
"""

from speed.text.base import Labels, TextEncoder
from speed.text.bytes import ByteTokens
from speed.text.clip import CLIPTextEncoder
from speed.text.t5 import T5TextEncoder
from speed.text.words import WordTokens

__all__ = ["ByteTokens", "CLIPTextEncoder", "Labels", "T5TextEncoder", "TextEncoder", "WordTokens"]
