"""Legibility: can the rendered time and battery be read back from the pixels at a CPU resolution?

Trains the SmartWatch reader (``uvlm.vision.reader``) on freshly rendered images of the ``reader-train`` split and
prints its accuracy on held-out ``reader-test`` images for every attribute, the time within one minute, the
battery within one percent, the learning curve and the wall time. The goal is >= 95% exact accuracy for both the
minute and the battery level: then a model's generated images can be scored by reading them.

    python benchmarks/legibility.py                         # 64 px, at most 15 minutes on one thread
    python benchmarks/legibility.py --resolution 48 64 --steps 800 --minutes 8

``--minutes`` caps the training time of each run; the learning-rate schedule is laid out over ``--steps``, so a run
that hits the cap stops before its learning rate has decayed and reads less well than it would with more time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from uvlm.vision.reader import HEADS, ReaderConfig, fit_reader
from uvlm.vision.artifacts import save_artifact

GOAL = 0.95


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, nargs="+", default=[64], help="image side(s) in pixels (default: 64)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time cap per resolution (default: 15)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps of 64 new images each (default: 1500)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=ReaderConfig.lr)
    p.add_argument("--arch", choices=("cnn", "vit"), default="cnn")
    p.add_argument("--width", type=int, default=ReaderConfig.width)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-images", type=int, default=2000, help="held-out images for the final accuracies")
    p.add_argument("--eval-every", type=int, default=250, help="steps between learning-curve points (0: none)")
    p.add_argument("--save", default=None, help="also save the last trained reader to this folder")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    torch.set_num_threads(1)
    ok = True
    for res in args.resolution:
        cfg = ReaderConfig(resolution=res, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           arch=args.arch, width=args.width, eval_images=args.eval_images, eval_every=args.eval_every,
                           log_every=50, max_minutes=args.minutes)
        t0 = time.perf_counter()
        reader, rec = fit_reader(cfg)
        wall = (time.perf_counter() - t0) / 60
        m = rec["test"]
        print(f"\n== legibility at {res} px ({args.arch}, width {args.width}): {rec['steps_done']}/{cfg.steps} steps, "
              f"{rec['images_seen']} images, train {rec['train_minutes']:.1f} min, wall {wall:.1f} min"
              f"{' (stopped by --minutes)' if rec['stopped_early'] else ''}")
        print(f"held-out accuracy on {int(m['n_images'])} rendered images:")
        for h in HEADS:
            print(f"  {h:<17} {100 * m[f'acc/{h}']:6.2f}%")
        print(f"  {'time (h:m:s)':<17} {100 * m['time_exact']:6.2f}%   minute within 1: {100 * m['minute_within_1']:.2f}%"
              f"   minute MAE {m['minute_mae']:.3f}")
        print(f"  {'battery +-1':<17} {100 * m['battery_within_1']:6.2f}%   battery MAE {m['battery_mae']:.3f}")
        print(f"  {'all attributes':<17} {100 * m['all_exact']:6.2f}%")
        if rec["curve"]:
            print("learning curve (first 500 test images): minutes, images, minute acc, battery acc, all exact")
            for c in rec["curve"]:
                print(f"  {c['minutes']:5.1f} min {int(c['images']):>7} img  minute {100 * c['acc/minute']:6.2f}%  "
                      f"battery {100 * c['acc/battery']:6.2f}%  all {100 * c['all_exact']:6.2f}%")
        good = m["acc/minute"] >= GOAL and m["acc/battery"] >= GOAL
        ok &= good
        print(f"goal (minute and battery >= {100 * GOAL:.0f}%): {'met' if good else 'NOT met'}")
        if args.save:
            save_artifact(args.save, reader.state_dict(), {"kind": "reader", **cfg.to_dict()}, info=rec)
            print(f"saved {args.save}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
