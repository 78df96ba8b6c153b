"""How much of a SmartWatch survives a trip through a vision model: PSNR, and attributes read back by the reader.

    python benchmarks/reconstruction.py --kind vq          # the tiny VQ tokenizer: encode ids, decode
    python benchmarks/reconstruction.py --kind siglip      # the tiny SigLIP tower + its pixel decoder

Renders held-out images, reconstructs them, and reads every attribute back with the SmartWatch reader from the
originals and from the reconstructions (the reader and the artifacts come from the cache; missing ones are
trained first). "time within 1 min" counts hour exact and minute off by at most one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from uvlm.data import SmartWatch, SplitConfig
from uvlm.vision.base import to_float_batch, to_pil

FIELDS = ("hour", "minute", "second", "weather", "weather_position", "battery_position", "battery")


def accuracy(read: list[dict], truth: list) -> dict[str, float]:
    out = {}
    for f in FIELDS:
        t = [(getattr(a, f) % 12) if f == "hour" else getattr(a, f) for a in truth]
        p = [(r[f] % 12) if f == "hour" else r[f] for r in read]
        out[f] = float(np.mean([x == y for x, y in zip(p, t)]))
    out["time within 1 min"] = float(np.mean([
        r["hour"] % 12 == a.hour % 12 and min(abs(r["minute"] - a.minute), 60 - abs(r["minute"] - a.minute)) <= 1
        for r, a in zip(read, truth)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("vq", "siglip"), default="vq")
    ap.add_argument("--source", default="tiny", help="tiny (cached artifact) or a local checkpoint")
    ap.add_argument("--images", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from uvlm.vision.presets import vision_source
    from uvlm.vision.reader import load_reader, train_reader

    src = vision_source(args.kind, args.source)
    reader = load_reader(train_reader()).eval()
    sw = SmartWatch(SplitConfig(name="reconstruction-check", resolution=src.resolution, n_vqa=args.images,
                                n_caption=0, n_generation=0))
    samples = [sw.sample("vqa", i) for i in range(args.images)]
    originals = [s.image for s in samples]
    t0 = time.perf_counter()
    recon = []
    with torch.no_grad():
        for b in range(0, len(originals), 50):
            tokens = src.encode_cached(originals[b:b + 50])
            recon += to_pil(src.decode(tokens))
    seconds = time.perf_counter() - t0
    x, y = to_float_batch(originals, src.resolution), to_float_batch(recon, src.resolution)
    psnr = float((10 * torch.log10(1.0 / ((x - y) ** 2).mean(dim=(1, 2, 3)))).mean())
    truth = [s.attributes for s in samples]
    a_orig = accuracy(reader.read(originals), truth)
    a_rec = accuracy(reader.read(recon), truth)
    print(f"{args.kind} ({args.source}): {src.num_tokens} tokens/image, PSNR {psnr:.2f} dB over {len(samples)} held-out "
          f"images, {len(samples) / seconds:.0f} images/s encode+decode")
    print(f"{'attribute':<20} {'originals':>10} {'reconstructions':>16}")
    for k in a_orig:
        print(f"{k:<20} {100 * a_orig[k]:>9.1f}% {100 * a_rec[k]:>15.1f}%")
    grid = to_pil(torch.cat([x[:8], y[:8]]))
    from PIL import Image

    sheet = Image.new("RGB", (8 * src.resolution, 2 * src.resolution))
    for k, im in enumerate(grid):
        sheet.paste(im, ((k % 8) * src.resolution, (k // 8) * src.resolution))
    sheet.save(f"/tmp/reconstruction-{args.kind}.png")


if __name__ == "__main__":
    main()
