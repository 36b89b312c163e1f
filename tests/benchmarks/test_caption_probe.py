"""The caption probe: zero where the caption cannot matter (PixArt with its cross-attention
outputs zeroed, its only path from the caption), and the RMS differences and cosines it reports
equal a direct computation."""

import torch
from caption_probe import caption_probe

from speed.models import build_pixart
from speed.text import ByteTokens

CAPTIONS = ["a cat", "a dog", "a cow"]


def _model():
    torch.manual_seed(0)
    tokens = ByteTokens(max_length=6)
    model = build_pixart(
        "PixArt-S/4", input_size=8, in_channels=1, hidden_size=32, depth=1, num_heads=4,
        learn_sigma=False, text_depth=1, text_heads=2, caption_channels=16,
        vocab_size=tokens.vocab_size, max_length=tokens.max_length,
    )  # fmt: skip
    with torch.no_grad():  # off the zero initialisation, so the caption reaches the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval(), tokens


def test_a_model_without_cross_attention_output_ignores_its_caption():
    model, tokens = _model()
    torch.nn.init.zeros_(model.blocks[0].cross_attn.proj.weight)
    torch.nn.init.zeros_(model.blocks[0].cross_attn.proj.bias)
    result = caption_probe(model, tokens, CAPTIONS, [500], side=8, channels=1)
    assert result["difference"][500] == [0.0, 0.0, 0.0] and result["rms"][500] > 0.01


def test_differences_and_cosines_match_a_direct_computation():
    model, tokens = _model()
    result = caption_probe(model, tokens, CAPTIONS, [100, 700], side=8, channels=1, tokens=3)
    condition = tokens.condition(CAPTIONS, torch.device("cpu"))
    x = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (100, 700):
            eps = [model(x, torch.tensor([t]), y=condition["y"][k : k + 1],
                         mask=condition["mask"][k : k + 1]) for k in range(3)]  # fmt: skip
            expected = [(e - eps[0]).square().mean().sqrt().item() for e in eps]
            torch.testing.assert_close(
                torch.tensor(result["difference"][t]), torch.tensor(expected), atol=1e-6, rtol=0
            )
            assert result["difference"][t][1] > 1e-4  # the perturbed model reads its caption
            assert abs(result["rms"][t] - eps[0].square().mean().sqrt().item()) < 1e-6
        text = model.text_encoder(condition["y"], condition["mask"])[:, :3].flatten(1)
    cosine = torch.nn.functional.cosine_similarity(text[:, None], text[None], dim=-1)
    torch.testing.assert_close(torch.tensor(result["cosine"]), cosine, atol=1e-5, rtol=0)
