"""Rendering speed: images/s per core at several resolutions, and the speed-up of N worker processes.

    python benchmarks/render_speed.py                 # 64, 96, 224 px; 1 and 2 workers
    python benchmarks/render_speed.py --sizes 64 --seconds 5

Targets: >= 2,000 images/s per core at 64 px; 2 workers >= 1.8x one worker (measured in the same run, since these
machines are noisy). "render" is attributes + drawing; "+png" adds PNG encoding as in a materialized split.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import time

from uvlm.data import SmartWatch, SplitConfig


def _rate(resolution: int, seconds: float, png: bool, start: int = 0) -> tuple[int, float]:
    sw = SmartWatch(SplitConfig.train(resolution=resolution, n_vqa=10**9, n_caption=0, n_generation=0))
    sw.image(start)  # warm up caches
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(start + n, start + n + 64):
            im = sw.image(i)
            if png:
                im.save(io.BytesIO(), format="PNG", compress_level=6)
        n += 64
    return n, time.perf_counter() - t0


def _worker(args: tuple[int, float, bool, int]) -> tuple[int, float]:
    os.environ["OMP_NUM_THREADS"] = "1"
    return _rate(*args)


def parallel_rate(resolution: int, seconds: float, png: bool, workers: int) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_worker, [(resolution, 0.2, png, 10**6 * (k + 1)) for k in range(workers)])  # start-up outside timing
        res = pool.map(_worker, [(resolution, seconds, png, 10**7 * (k + 1)) for k in range(workers)])
    return sum(n / t for n, t in res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"{'px':>4} {'render img/s/core':>18} {'+png img/s/core':>16} {f'{args.workers} workers +png':>18} {'speed-up':>9}")
    for res in args.sizes:
        n, t = _rate(res, args.seconds, png=False)
        one = n / t
        n, t = _rate(res, args.seconds, png=True)
        one_png = n / t
        # reference for the speed-up: 1 worker process, measured right now with the same harness
        ref = parallel_rate(res, args.seconds, True, 1)
        par = parallel_rate(res, args.seconds, True, args.workers)
        print(f"{res:>4} {one:>18.0f} {one_png:>16.0f} {par:>18.0f} {par / ref:>8.2f}x")


if __name__ == "__main__":
    main()
