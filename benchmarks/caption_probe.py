"""How much does a caption-conditioned model's output depend on its caption, and does its text
model tell word order apart? A direct probe, cheaper than sampling and scoring.

For captions c_0..c_{K-1}: the cosine similarity of their text embeddings (the model's own text
transformer, or the frozen encoder's output, over the first `--tokens` tokens) and, at each
timestep t, the RMS difference between the model's noise prediction under c_k and under c_0 on
one fixed noisy input x_t (pure Gaussian noise, the same for every caption), beside the RMS of
the prediction itself. 0 means the caption is ignored.

    python benchmarks/caption_probe.py configs/image/animals_text/base.yaml \\
        runs/animals_text/train/checkpoints/0001800.pt
"""

from __future__ import annotations

import argparse
import json

import torch

from speed.config import load_config
from speed.runners.build import build_sampling_model, build_text_encoder

CAPTIONS = [
    "a cat left of a zebra",
    "a dog left of a horse",
    "a zebra left of a cat",  # the first with its animals swapped
    "a bird left of an elephant",
]


@torch.no_grad()
def caption_probe(model, text_encoder, captions: list[str], timesteps: list[int], side: int,
                  channels: int, tokens: int = 6, seed: int = 0) -> dict:  # fmt: skip
    """{"cosine": [K, K] text-embedding cosines, "rms": {t: RMS of the prediction under c_0},
    "difference": {t: [K] RMS difference to c_0's prediction}}."""
    condition = text_encoder.condition(captions, torch.device("cpu"))
    y, mask = condition["y"], condition["mask"]
    count = len(captions)
    kept = torch.zeros(count, dtype=torch.long)  # no caption dropped
    embedded, _ = model.caption(y, mask, count, kept)  # what the model attends to
    flat = embedded[:, :tokens].flatten(1).float()
    flat = flat / flat.norm(dim=1, keepdim=True)
    x = torch.randn((1, channels, side, side), generator=torch.Generator().manual_seed(seed))
    result = {"cosine": (flat @ flat.T).tolist(), "rms": {}, "difference": {}}
    for t in timesteps:
        out = model(x.expand(count, -1, -1, -1), torch.full((count,), t), y=y, mask=mask)
        eps = out[:, :channels]
        result["rms"][t] = eps[0].square().mean().sqrt().item()
        result["difference"][t] = (eps - eps[:1]).flatten(1).square().mean(1).sqrt().tolist()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--captions", nargs="+", default=CAPTIONS)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[300, 600, 900])
    parser.add_argument("--tokens", type=int, default=6, help="text tokens compared")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, "sample", [f"ckpt_path={args.checkpoint}"])
    text_encoder = build_text_encoder(cfg)
    model, _, spec = build_sampling_model(cfg, None, torch.device("cpu"), text_encoder)
    result = caption_probe(model, text_encoder, args.captions, args.timesteps, spec.side,
                           spec.channels, args.tokens)  # fmt: skip
    print("text-embedding cosine to each caption:")
    for caption, row in zip(args.captions, result["cosine"]):
        print(f"  {caption!r:32} " + " ".join(f"{v:6.3f}" for v in row))
    print("RMS difference of the noise prediction to the first caption's:")
    for t in args.timesteps:
        diffs = " ".join(f"{v:.5f}" for v in result["difference"][t])
        print(f"  t={t:4d} (prediction RMS {result['rms'][t]:.3f}): {diffs}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"captions": args.captions, **result}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
