"""What a frozen text encoder adds to a text-to-image training step, and what the latent cache
(`-p extract`, which stores the encoder's embeddings) saves.

    python benchmarks/text_encoder_cost.py            # demo-sized PixArt on this machine's CPU
    python benchmarks/text_encoder_cost.py --quick    # 1 warm-up + 2 timed steps each

Two parts:

- timed, on this machine: the demo's PixArt DiT (configs/image/animals_text/base.yaml: width 192,
  depth 4, 64 tokens), its caption projection widened to each T5 v1.1 encoder's width, one training
  step (timesteps, `training_losses`, backward, AdamW) on a batch of 32 captions of 120 tokens,
  cached (the embeddings given) against uncached (the T5 encoder's forward first, as training
  without a cache runs it: `speed.runners.train._condition`). T5 v1.1 small and base have the
  released architectures (`transformers.T5Config`) with random weights: the cost does not depend
  on the values. Tokenising is not timed (string work, microseconds per caption);
- counted, machine-independent: FLOPs (FlopCounterMode on the meta device, nothing allocated) of
  the published setting, T5 v1.1 XXL's encoder on 120 tokens against one PixArt-XL/2 training step
  (forward + backward) on a 256 px image's 32x32x4 latents, per image.

Writes benchmarks/results/text_encoder_cost_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from models_forward import time_stage, written_out_attention
from torch.utils.flop_counter import FlopCounterMode
from transformers import T5Config, T5EncoderModel

from speed.config import load_config
from speed.diffusion import create_diffusion
from speed.models.pixart import build_pixart
from speed.utils.machine import load_average, run_header

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
DEMO = REPO / "configs/image/animals_text/base.yaml"
TOKENS = 120  # PixArt-alpha's T5 length
# T5 v1.1 encoders (google/t5-v1_1-{small,base,xxl} config.json): d_model, d_kv, d_ff, layers, heads
T5_V1_1 = {
    "small": (512, 64, 1024, 8, 6),
    "base": (768, 64, 2048, 12, 12),
    "xxl": (4096, 64, 10240, 24, 64),
}


def t5_encoder(size: str) -> T5EncoderModel:
    d_model, d_kv, d_ff, layers, heads = T5_V1_1[size]
    config = T5Config(
        vocab_size=32128, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=layers,
        num_heads=heads, feed_forward_proj="gated-gelu",
    )  # fmt: skip
    return T5EncoderModel(config).eval().requires_grad_(False)


def demo_pixart(caption_channels: int) -> torch.nn.Module:
    """The demo config's PixArt (sizes from the YAML), reading `caption_channels`-wide captions."""
    node = load_config(DEMO, "train").model
    sizes = {k: node[k] for k in ("name", "patch_size", "depth", "hidden_size", "num_heads")}
    return build_pixart(
        **sizes, input_size=56, in_channels=1, learn_sigma=False,
        caption_channels=caption_channels, max_length=TOKENS,
    )  # fmt: skip


def timed_case(size: str, batch: int, warmup: int, repeats: int) -> dict:
    """Seconds of a cached and an uncached training step with T5 v1.1 `size`'s width."""
    torch.manual_seed(0)
    encoder = t5_encoder(size)
    model = demo_pixart(encoder.config.d_model).train()
    diffusion = create_diffusion("", learn_sigma=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, 56, 56)
    ids = torch.randint(0, encoder.config.vocab_size, (batch, TOKENS))
    mask = torch.ones(batch, TOKENS, dtype=torch.bool)
    with torch.no_grad():
        cached = encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def step(embeddings: torch.Tensor) -> None:
        t = torch.randint(0, diffusion.num_timesteps, (batch,))
        loss = diffusion.training_losses(model, x, t, {"y": embeddings, "mask": mask})["loss"]
        loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def encode() -> torch.Tensor:
        with torch.no_grad():
            return encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    return {
        "encoder": f"T5 v1.1 {size}",
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
        "model_params": sum(p.numel() for p in model.parameters()),
        "cached": time_stage(lambda: step(cached), torch.device("cpu"), warmup, repeats),
        "uncached": time_stage(lambda: step(encode()), torch.device("cpu"), warmup, repeats),
        "encode": time_stage(encode, torch.device("cpu"), warmup, repeats),
    }


def published_flops() -> dict:
    """FLOPs per image of T5 v1.1 XXL's encoder (120 tokens) and of a PixArt-XL/2 training step
    at 256 px, counted on the meta device."""
    with torch.device("meta"):
        encoder = t5_encoder("xxl")
        model = build_pixart("PixArt-XL/2", input_size=32, caption_channels=4096)
        ids = torch.zeros(1, TOKENS, dtype=torch.long)
        mask = torch.ones(1, TOKENS, dtype=torch.bool)
        x, t = torch.zeros(1, 4, 32, 32), torch.zeros(1, dtype=torch.long)
        y = torch.zeros(1, TOKENS, 4096)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():  # no padding: a full mask is no mask (and meta has no values)
        encoder(input_ids=ids)
    encode = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with written_out_attention(model), counter:
        model(x, t, y=y, mask=mask).float().sum().backward()
    return {
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
        "model_params": sum(p.numel() for p in model.parameters()),
        "encode_gflops": encode / 1e9,
        "train_step_gflops": counter.get_total_flops() / 1e9,
    }


def markdown(rows: list[dict], flops: dict, meta: dict) -> str:
    lines = [
        f"# Text encoder cost per training step ({meta['device']}, {meta['threads']} threads)",
        "",
        f"{meta['date']}. Batch {meta['batch_size']} of 56x56 images, captions of {TOKENS} "
        f"tokens; the demo's PixArt (configs/image/animals_text/base.yaml) reading each encoder's "
        f"width. Median of {meta['repeats']} steps after {meta['warmup']} warm-up. Load average "
        f"before/after: {meta['loadavg_before']} / {meta['loadavg_after']}.",
        "",
        "| encoder | encoder params | model params | encode s | step cached s | "
        "step uncached s | uncached / cached |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cached, uncached = statistics.median(r["cached"]), statistics.median(r["uncached"])
        lines.append(
            f"| {r['encoder']} | {r['encoder_params'] / 1e6:.1f}M | "
            f"{r['model_params'] / 1e6:.2f}M | {statistics.median(r['encode']):.3f} | "
            f"{cached:.3f} | {uncached:.3f} | {uncached / cached:.2f}x |"
        )
    ratio = flops["encode_gflops"] / flops["train_step_gflops"]
    lines += [
        "",
        "Published setting, counted (per image, machine-independent): T5 v1.1 XXL encoder "
        f"({flops['encoder_params'] / 1e9:.2f}B params) on {TOKENS} tokens "
        f"{flops['encode_gflops']:.0f} GFLOP; PixArt-XL/2 "
        f"({flops['model_params'] / 1e6:.0f}M params) training step at 256 px (forward + "
        f"backward) {flops['train_step_gflops']:.0f} GFLOP. Without a cache the encoder adds "
        f"{ratio:.2f}x the step's own FLOPs (one caption per image per step).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="the demo's data.batch_size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1 warm-up, 2 timed steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sizes", nargs="+", choices=["small", "base"], default=["small", "base"])
    parser.add_argument("--out", type=Path, help="results stem (default: text_encoder_cost_cpu)")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 1, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = run_header(
        "cpu", args.threads, batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats
    )
    flops = published_flops()
    rows = [timed_case(s, args.batch_size, args.warmup, args.repeats) for s in args.sizes]
    meta["loadavg_after"] = load_average()
    report = markdown(rows, flops, meta)
    print(report)
    stem = args.out or RESULTS / "text_encoder_cost_cpu"
    stem.parent.mkdir(parents=True, exist_ok=True)
    results = {"meta": meta, "rows": rows, "published": flops}
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".md").write_text(report)
    return results


if __name__ == "__main__":
    main()
