"""Tables in the docs that come from committed results, and the check that they still do.

A block in a Markdown file::

    <!-- committed: results/cpu/calibration -->
    | arm | seeds | ... |
    <!-- /committed -->

is the table :func:`table` makes from ``results/cpu/calibration/records.json`` (the sweep's records, committed with
the results; see ``uvlm run --results``), followed by the verdict when the folder holds one. ``python -m
uvlm.experiments.doctables FILE.md`` rewrites every such block from the committed files; the test suite checks that
the docs equal what the files give, so a number in the docs cannot drift from the results it cites.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from uvlm.experiments.results import get_path
from uvlm.experiments.stats import summarize

BLOCK = re.compile(r"(<!-- committed: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /committed -->)", re.S)
#: Columns of a docs table: header, metric path, decimals.
COLUMNS = (("time", "vqa.time", 1), ("weather", "vqa.weather", 1), ("position", "vqa.position", 1),
           ("battery", "vqa.battery", 1), ("total", "vqa.total", 1),
           ("draws weather (icon)", "feature_probe.icon", 2), ("draws weather (pooled)", "feature_probe.weather", 2),
           ("text gap %", "conditioning.gap", 1))


def table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per group (in record order): finished seeds, then mean ± std over seeds and the per-seed weather."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("status") == "done":
            groups.setdefault(r["group"], []).append(r)
    used = [c for c in COLUMNS if any(get_path(r.get("final") or {}, c[1]) is not None
                                      for rs in groups.values() for r in rs)]
    lines = ["| arm | seeds | " + " | ".join(c[0] for c in used) + " | weather per seed |",
             "|---|---:|" + "---:|" * len(used) + "---|"]
    for g, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        cells = []
        for _, path, digits in used:
            s = summarize([get_path(r.get("final") or {}, path) for r in rs])
            cells.append("-" if s.n == 0 else f"{s.mean:.{digits}f}" + ("" if s.n < 2 else f" ± {s.std:.{digits}f}"))
        per_seed = " / ".join(f"{get_path(r['final'], 'vqa.weather'):.1f}" for r in rs
                              if get_path(r.get("final") or {}, "vqa.weather") is not None) or "-"
        lines.append(f"| {g} | {len(rs)} | " + " | ".join(cells) + f" | {per_seed} |")
    return "\n".join(lines)


def render(folder: Path) -> str:
    """The block body for a committed recipe folder: its table, then its verdict if it has one."""
    records = json.loads((folder / "records.json").read_text())["records"]
    out = table(records) + "\n"
    if (folder / "verdict.md").is_file():
        out += "\n" + (folder / "verdict.md").read_text().rstrip() + "\n"
    return out


def blocks(text: str, root: Path) -> list[tuple[str, str, str]]:
    """``(path, body in the docs, body from the committed files)`` for every block of ``text``."""
    return [(m["path"], m["body"], render(root / m["path"])) for m in BLOCK.finditer(text)]


def rewrite(path: Path, root: Path) -> int:
    """Rewrite every block of the Markdown file ``path`` from the committed files under ``root``; blocks changed."""
    text = path.read_text()
    changed = 0

    def sub(m: re.Match) -> str:
        nonlocal changed
        body = render(root / m["path"])
        changed += body != m["body"]
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(sub, text)
    if new != text:
        path.write_text(new)
    return changed


if __name__ == "__main__":  # python -m uvlm.experiments.doctables docs/results.md [REPO_ROOT]
    doc = Path(sys.argv[1])
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.cwd()
    print(f"{rewrite(doc, base)} block(s) of {doc} rewritten from the committed results")
