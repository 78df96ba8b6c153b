"""The per-token diffusion head's cost: training against a plain linear head, sampling against the step count.

    python benchmarks/diffusion_head.py                       # the tiny head (token 8, condition 256, width 256)
    python benchmarks/diffusion_head.py --width 1024 --token-dim 16 --cond-dim 1024 --tokens 1024   # MAR's head

Prints, on one thread, microseconds per token of one training step (loss, backward, Adam step) of the diffusion head
(``batch_mul`` noise draws per token) and of a linear head of the same input width trained with an MSE loss, and their
ratio, measured in the same run; then microseconds per token of sampling at several respaced step counts, with the
cost per token per step (sampling is linear in the steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from uvlm.model.diffusion import DiffusionHead, DiffusionHeadConfig


def per_token_us(fn, tokens: int, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats / tokens * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256, help="tokens per training batch (one 64 px image: 256)")
    ap.add_argument("--token-dim", type=int, default=8)
    ap.add_argument("--cond-dim", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch-mul", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--steps", default="10,25,50,100", help="sampling step counts, comma-separated")
    ap.add_argument("--sample-tokens", type=int, default=256, help="tokens sampled at once (one 64 px image: 256)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = DiffusionHeadConfig.tiny(token_dim=args.token_dim, cond_dim=args.cond_dim, width=args.width,
                                 depth=args.depth, batch_mul=args.batch_mul)
    head = DiffusionHead(c)
    linear = torch.nn.Linear(c.cond_dim, c.token_dim)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.tokens, c.token_dim, generator=g)
    z = torch.randn(args.tokens, c.cond_dim, generator=g)
    opt_d = torch.optim.Adam(head.parameters(), lr=1e-4)
    opt_l = torch.optim.Adam(linear.parameters(), lr=1e-4)

    def step_diffusion() -> None:
        loss = head.loss(x, z, generator=g)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()

    def step_linear() -> None:
        loss = torch.nn.functional.mse_loss(linear(z), x)
        opt_l.zero_grad()
        loss.backward()
        opt_l.step()

    d_us = per_token_us(step_diffusion, args.tokens, args.repeats)
    l_us = per_token_us(step_linear, args.tokens, args.repeats)
    n_params = sum(p.numel() for p in head.parameters())
    print(f"head: token {c.token_dim}, condition {c.cond_dim}, width {c.width}, depth {c.depth}, "
          f"{n_params / 1e6:.2f} M params, batch_mul {c.batch_mul}, {args.tokens} tokens per step, 1 thread")
    print(f"training step per token: diffusion head {d_us:.1f} us, linear head {l_us:.2f} us, "
          f"ratio {d_us / l_us:.0f}x")
    head.eval()
    zs = torch.randn(args.sample_tokens, c.cond_dim, generator=g)
    for steps in (int(s) for s in args.steps.split(",")):
        us = per_token_us(lambda: head.sample(zs, steps=steps, generator=torch.Generator().manual_seed(0)),
                          args.sample_tokens, max(1, args.repeats // 10))
        print(f"sampling {steps:4d} steps: {us:8.1f} us per token ({us / steps:.2f} us per token per step; "
              f"{us * 256 / 1e3:.0f} ms per 256-token image)")


if __name__ == "__main__":
    main()
