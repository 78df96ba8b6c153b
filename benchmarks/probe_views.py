"""Where does the weather probe lose the weather? The tiny vision sources' own tokens at the icon, four views.

The Figure 7 probe reads the weather from the LLM input vectors at the weather icon, averaged over the cells the
icon covers. This script reads the *sources'* input vectors directly (no model: a linear adapter only mixes their
dimensions) and compares the views of :func:`uvlm.eval.probe.probe_views`: the mean over the icon's cells, the
cells side by side, the one centre cell, and (VQ) a bag of the cells' code ids. If a view other than the mean reads
the weather where the mean does not, the probe's summary, not the codes, is what loses it.

    python benchmarks/probe_views.py                       # tiny SigLIP (8x8 and pooled 4x4) and tiny VQ (16x16)
    python benchmarks/probe_views.py --sources vq --train 4000 --test 1000

Uses the cached tiny artifacts (``uvlm vision train``); it never trains one.
"""

from __future__ import annotations

import argparse
import sys
import time


def _source(name: str):
    from uvlm.errors import UserError
    from uvlm.vision.artifacts import cached
    from uvlm.vision.presets import vision_source
    from uvlm.vision.sources import PooledSource

    kind, _, pool = name.partition(":")
    if kind == "vq":
        from uvlm.vision.vq_train import KIND, VQTrainConfig

        if cached(KIND, VQTrainConfig().cache_key()) is None:
            raise UserError("the tiny VQ is not trained yet: run 'uvlm vision train --what vq' first")
    src = vision_source(kind, "tiny")
    return PooledSource(src, int(pool)) if pool else src


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", nargs="+", default=["siglip", "siglip:2", "vq"],
                   help="siglip, siglip:K (KxK-pooled) or vq (default: siglip siglip:2 vq)")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=500)
    a = p.parse_args(argv)
    import torch

    from uvlm.errors import UserError
    from uvlm.eval.probe import VIEWS, probe_views, token_grid

    torch.set_num_threads(1)
    try:
        print(f"| source | grid | " + " | ".join(VIEWS) + " | seconds |")
        print("|---|---|" + "---:|" * (len(VIEWS) + 1))
        for name in a.sources:
            t0 = time.perf_counter()
            src = _source(name)
            r = probe_views(src, n_train=a.train, n_test=a.test)
            g = token_grid(src.num_tokens)
            cells = " | ".join(f"{100 * r[v]['accuracy']:.1f} ({r[v]['dims']}d)" if v in r else "-" for v in VIEWS)
            print(f"| {name} | {g}x{g} | {cells} | {time.perf_counter() - t0:.0f} |", flush=True)
    except UserError as e:
        print(f"probe_views: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
