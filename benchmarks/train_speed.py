"""Training speed of the CPU default: samples/s, tokens/s and achieved FLOP/s against a measured matmul peak.

    python benchmarks/train_speed.py [--preset tiny] [--batch 32] [--steps 8] [--length-groups 4] [--profile]

Setup: the ``tiny`` Llama preset (full training, AdamW, fp32, one thread), SigLIP-SigLIP with 16 image tokens of 128
dims per image (the cpu preset's pooled tiny tower; ``--tokens 64`` is the unpooled grid), a mixed batch of 32
SmartWatch samples (VQA, caption, generation; 28-85 positions each with 16 image tokens), features drawn at random
(the frozen encoder is not part of a training step: its outputs are cached). Each step is exactly what
:func:`uvlm.train.loop.train` does per micro-batch: build the examples, sort them by length into ``--length-groups``
parts (``runtime.length_groups``; the cpu preset's 4), collate each, forward and backward each, one AdamW step.
``--length-groups 1`` measures one padded batch.

FLOPs of a step: ``6 x params x tokens`` for every matmul the step runs (decoder linears on every real position; the
LM head only on answer positions, the vision head on predicted image positions, the adapters on image positions,
as :class:`~uvlm.model.unified.UnifiedVLM` computes them), plus attention ``12 x layers x hidden x L^2`` per
sequence. Peak: ``torch.mm`` of 2048^3 float32 on one thread, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def matmul_peak(n: int = 2048, repeats: int = 3) -> float:
    """Best-of-``repeats`` FLOP/s of one ``torch.mm`` of two ``n x n`` float32 matrices."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def step_flops(model, batch) -> float:
    """Matmul + attention FLOPs (forward + backward) of one training step on ``batch``."""
    cfg = model.llm.config
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    body = sum(p.numel() for n, p in model.llm.model.layers.named_parameters() if p.ndim == 2)
    real = int(batch.attention_mask.sum())
    answers = batch.num_answer_tokens
    n_und, n_gen = int(batch.understanding_mask.sum()), int(batch.generation_mask.sum())
    head = model.target.head.weight.numel() if model.target is not None else 0
    adapter = sum(p.numel() for p in model.und_adapter.parameters() if p.ndim == 2)
    matmul = 6 * (body * real + cfg.vocab_size * h * answers + head * n_gen + adapter * (n_und + n_gen))
    lengths = batch.attention_mask.sum(1).double()
    attention = float(12 * layers * h * (lengths ** 2).sum())
    return matmul + attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=16, help="image tokens per image (the CPU default: 8x8 pooled 2x2)")
    ap.add_argument("--dim", type=int, default=128, help="vision feature width (the tiny SigLIP tower's)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--length-groups", type=int, default=4, help="length-sorted passes per batch (1: one padded batch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fast only on CPUs with AMX/AVX512-BF16)")
    ap.add_argument("--profile", action="store_true", help="also print where the time of one step goes")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the LLM body (inductor, dynamic shapes); compile time is left out of the rates")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from uvlm.data.config import SplitConfig
    from uvlm.data.smartwatch import SmartWatch
    from uvlm.data.tokenizer import build_tokenizer
    from uvlm.model.config import LLMConfig, TemplateConfig, UnifiedConfig
    from uvlm.model.unified import UnifiedVLM
    from uvlm.train.data import length_groups

    cfg = UnifiedConfig(encoder="siglip", input_dim=args.dim, target="siglip", target_dim=args.dim,
                        num_output_tokens=args.tokens, llm=LLMConfig(preset=args.preset))
    model = UnifiedVLM(cfg, build_tokenizer(extra_words=TemplateConfig().words()))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    n = args.batch * (args.steps + 1)
    sw = SmartWatch(SplitConfig.train(n_vqa=n, n_caption=n, n_generation=n))
    g = torch.Generator().manual_seed(0)

    def batch_at(s: int):
        examples = []
        for k in range(args.batch):
            i = s * args.batch + k
            task = ("vqa", "caption", "generation")[i % 3]
            sample = sw.sample(task, i, with_image=False)
            x = torch.randn(args.tokens, args.dim, generator=g)
            examples.append(model.sequences.example(sample, features=x, targets=x))
        return [model.sequences.collate(g) for g in length_groups(examples, args.length_groups)]

    def step(batches):
        for batch in batches:  # unweighted sum of the parts' losses: the same matmuls as the loop's weighted sum
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = model(batch)
            out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if args.compile:
        model.llm.get_decoder().compile(dynamic=True)
    t_compile = time.perf_counter()
    step(batch_at(0))  # warm-up (and compilation)
    if args.compile:
        step(batch_at(0))
    t_compile = time.perf_counter() - t_compile
    t_data = t_step = flops = tokens = positions = 0.0
    for s in range(1, args.steps + 1):
        t0 = time.perf_counter()
        batch = batch_at(s)
        t1 = time.perf_counter()
        step(batch)
        t2 = time.perf_counter()
        t_data += t1 - t0
        t_step += t2 - t1
        flops += sum(step_flops(model, b) for b in batch)
        tokens += sum(int(b.attention_mask.sum()) for b in batch)
        positions += sum(b.attention_mask.numel() for b in batch)
    peak = matmul_peak()
    samples = args.batch * args.steps
    total = t_data + t_step
    report = {
        "preset": args.preset, "params": sum(p.numel() for p in model.parameters()), "batch": args.batch,
        "tokens_per_sample": tokens / samples, "length_groups": args.length_groups,
        "real_positions": tokens / positions, "threads": args.threads, "bf16_autocast": args.bf16,
        "compiled": args.compile, "warmup_s": t_compile,
        "samples_per_s": samples / total, "tokens_per_s": tokens / total,
        "step_s": t_step / args.steps, "data_s_per_step": t_data / args.steps,
        "achieved_gflops": flops / t_step / 1e9, "peak_gflops_mm2048": peak / 1e9,
        "fraction_of_peak": flops / t_step / peak,
    }
    print(json.dumps(report, indent=2))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        batch = batch_at(1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(batch)
        events = prof.key_averages()
        total_us = sum(e.self_cpu_time_total for e in events)
        matmul = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm",
                                                                         "aten::_scaled_dot_product_flash_attention_for_cpu",
                                                                         "aten::_scaled_dot_product_flash_attention_for_cpu_backward"))
        print(f"profile: {total_us / 1e3:.0f} ms self CPU time, {100 * matmul / total_us:.0f}% in matmul/attention "
              f"kernels")
        print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
