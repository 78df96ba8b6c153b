"""Evaluation throughput: 1,000 VQA answers + 500 image generations, with and without the KV cache.

    python benchmarks/eval_throughput.py RUN_DIR                # a trained run folder (uvlm train / uvlm run)
    python benchmarks/eval_throughput.py RUN_DIR --questions 200 --generations 100

Answers come from ``transformers`` ``generate`` (``use_cache`` on/off); images from
:func:`uvlm.model.generate.generate_images` (one token per step against a KV cache, or the whole sequence recomputed
every step as the authors' evaluation does). Decoding tokens to pixels is timed separately. One thread; both paths
are measured in the same run, and the script checks that they give the same answers and tokens.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a trained run folder")
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--generations", type=int, default=500)
    ap.add_argument("--batch", type=int, default=50, help="generations per batch (VQA uses the run's eval batch)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from uvlm.data import SmartWatch
    from uvlm.eval.vqa import vqa_questions
    from uvlm.model.generate import answer, generate_images
    from uvlm.train.checkpoint import load_run
    from uvlm.train.data import feature_cache

    loaded = load_run(args.run)
    model, cfg, src = loaded.model, loaded.config, loaded.sources.understanding
    test = cfg.data.test.with_(resolution=int(src.resolution))
    n_q = min(args.questions, test.n_vqa)
    _, asks = vqa_questions(test, n_q)
    cache = feature_cache(src, test, cfg.data.feature_chunk)
    cache.ensure(test.n_images)
    print(f"run {args.run}: {cfg.variant}, LLM {cfg.model.llm.preset}, {src.num_tokens} input tokens per image")

    if cfg.mode != "generation":
        res = {}
        for use_cache in (True, False):
            t0, out = time.perf_counter(), []
            for b in range(0, len(asks), cfg.eval.batch_size):
                chunk = asks[b:b + cfg.eval.batch_size]
                feats = src.to_inputs(cache.get([i for i, _ in chunk]))
                out += answer(model, feats, [q for _, q in chunk], max_new_tokens=cfg.eval.max_new_tokens,
                              use_cache=use_cache)
            res[use_cache] = (time.perf_counter() - t0, out)
        (tc, a), (tn, b) = res[True], res[False]
        print(f"VQA, {len(asks)} questions: KV cache {len(asks) / tc:.1f} q/s ({tc:.1f} s), recompute "
              f"{len(asks) / tn:.1f} q/s ({tn:.1f} s), speed-up {tn / tc:.2f}x, same answers: {a == b}")

    if model.target is not None:
        gen_src = loaded.sources.generation
        sw = SmartWatch(test.with_(n_vqa=0))
        prompts = [sw.sample("generation", i, with_image=False).instruction
                   for i in range(min(args.generations, test.n_generation))]
        res = {}
        for use_cache in (True, False):
            t0, toks = time.perf_counter(), []
            for b in range(0, len(prompts), args.batch):
                toks.append(generate_images(model, prompts[b:b + args.batch], use_cache=use_cache))
            res[use_cache] = (time.perf_counter() - t0, torch.cat(toks))
        (tc, a), (tn, b) = res[True], res[False]
        same = torch.equal(a, b) if a.dtype == torch.long else bool(torch.allclose(a, b, atol=1e-4))
        t0 = time.perf_counter()
        for k in range(0, len(a), args.batch):
            gen_src.decode(a[k:k + args.batch])
        td = time.perf_counter() - t0
        n = len(prompts)
        print(f"generation, {n} images x {model.config.num_output_tokens} tokens: KV cache {n / tc:.2f} img/s "
              f"({tc:.1f} s), recompute {n / tn:.2f} img/s ({tn:.1f} s), speed-up {tn / tc:.2f}x, same tokens: "
              f"{same}; decoding to pixels {n / td:.1f} img/s")


if __name__ == "__main__":
    main()
