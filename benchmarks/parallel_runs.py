"""Parallel training runs: aggregate throughput of 2 single-thread processes vs 1 (goal >= 1.8x), and one process
with 2 threads for comparison. The same short training job (tiny LLM, 64 fake-feature tokens, batch 32) runs each way
in the same run.

    python benchmarks/parallel_runs.py --seconds 40
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch


def _job(args: tuple[int, float]) -> float:
    threads, seconds = args
    torch.set_num_threads(threads)
    from uvlm.data.tokenizer import build_tokenizer
    from uvlm.model.config import LLMConfig, TemplateConfig, UnifiedConfig
    from uvlm.model.unified import UnifiedVLM

    tok = build_tokenizer(extra_words=TemplateConfig().words())
    cfg = UnifiedConfig(encoder="siglip", input_dim=128, target=None, num_output_tokens=64, llm=LLMConfig(preset="tiny"))
    model = UnifiedVLM(cfg, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    from uvlm.data import SmartWatch, SplitConfig

    sw = SmartWatch(SplitConfig.train(n_vqa=32, n_caption=0, n_generation=0))
    samples = [sw.sample("vqa", i, with_image=False) for i in range(32)]
    feats = torch.randn(32, 64, 128, generator=g)
    batch = model.sequences.collate([model.sequences.example(s, features=f) for s, f in zip(samples, feats)])
    n, t0 = 0, None
    while True:
        loss = model(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if t0 is None:
            t0 = time.perf_counter()  # after one warm-up step
            continue
        n += 32
        if time.perf_counter() - t0 > seconds:
            return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        one = pool.map(_job, [(1, args.seconds)])[0]
    with ctx.Pool(1) as pool:
        two_threads = pool.map(_job, [(2, args.seconds)])[0]
    with ctx.Pool(2) as pool:
        two = sum(pool.map(_job, [(1, args.seconds)] * 2))
    print(f"1 process x 1 thread: {one:.1f} samples/s")
    print(f"1 process x 2 threads: {two_threads:.1f} samples/s ({two_threads / one:.2f}x)")
    print(f"2 processes x 1 thread: {two:.1f} samples/s aggregate ({two / one:.2f}x)")


if __name__ == "__main__":
    main()
