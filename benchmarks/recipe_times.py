"""Wall time of each recipe's sweeps on this machine, against the runner's own estimate.

    python benchmarks/recipe_times.py [--root runs/cpu]

Reads ``ROOT/<recipe>/timing.jsonl`` (one line per ``uvlm run`` invocation, written by the sweep runner) and each
run's ``result.json`` (training seconds per run), and prints per recipe: runs, runs trained in each invocation, wall
minutes, the estimate made before it started, and the sum of per-run training minutes (the CPU time a one-core
machine would need). Measured wall times are what the recipe files' ``expected`` blocks quote.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/cpu")
    args = ap.parse_args()
    root = Path(args.root)
    for folder in sorted(p for p in root.iterdir() if (p / "timing.jsonl").is_file()):
        records = json.loads((folder / "records.json").read_text())["records"] if (folder / "records.json").is_file() else []
        cpu = sum(r.get("wall_seconds") or 0.0 for r in records) / 60.0
        print(f"{folder.name}: {len(records)} runs, {cpu:.1f} run-minutes of training in all")
        for line in (folder / "timing.jsonl").read_text().splitlines():
            t = json.loads(line)
            est = t.get("estimated_minutes")
            ratio = f", measured/estimate {t['wall_minutes'] / est:.2f}" if est else ""
            only = f" (only {' '.join(t['only'])})" if t.get("only") else ""
            print(f"    {t['finished']}: {t['trained_now']}/{t['runs']} runs trained{only} in {t['wall_minutes']:.1f} "
                  f"min wall on {t['workers']} workers ({t['cores']} cores), estimated {est} min{ratio}")


if __name__ == "__main__":
    main()
