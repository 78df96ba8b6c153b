"""Image-token decoding: KV cache vs full recompute (the authors' evaluation recomputes the whole sequence).

    python benchmarks/decoding.py                  # tiny LLM, VQ target, 256 tokens, batch 8
    python benchmarks/decoding.py --tokens 64 --llm debug

Prints seconds per image batch for both paths and the speed-up (goal: >= 5x at 256 tokens), measured in the same run
on one thread, and checks that both paths pick the same tokens.
"""

from __future__ import annotations

import argparse
import time

import torch

from uvlm.data.tokenizer import build_tokenizer
from uvlm.model.config import LLMConfig, TemplateConfig, UnifiedConfig
from uvlm.model.generate import generate_images
from uvlm.model.unified import UnifiedVLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--llm", default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--codes", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = build_tokenizer(extra_words=TemplateConfig().words())
    codebook = torch.nn.functional.normalize(torch.randn(args.codes, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    cfg = UnifiedConfig(encoder="vq", input_dim=8, target="vq", num_output_tokens=args.tokens,
                        llm=LLMConfig(preset=args.llm))
    model = UnifiedVLM(cfg, tok, codebook=codebook).eval()
    prompts = ["Can you draw a smart watch, showing the time 02:07:00, with sunny weather displayed?"] * args.batch
    times = {}
    outs = {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        outs[use_cache] = generate_images(model, prompts, use_cache=use_cache)
        times[use_cache] = time.perf_counter() - t0
    same = bool(torch.equal(outs[True], outs[False]))
    print(f"{args.tokens} tokens x batch {args.batch}, LLM {args.llm}: KV cache {times[True]:.2f} s, "
          f"full recompute {times[False]:.2f} s, speed-up {times[False] / times[True]:.1f}x, identical tokens: {same}")


if __name__ == "__main__":
    main()
