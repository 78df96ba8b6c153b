"""Training logs: ``metrics.jsonl`` (one JSON object per line), TensorBoard events, a console line and a progress bar.

Every line of ``metrics.jsonl`` has ``kind`` (``train`` or ``eval``), ``step`` and the samples/tokens seen so far, so
curves can be drawn against optimiser steps, understanding samples seen, or tokens seen.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from uvlm.io import write_text_atomic


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1:02:05``; ``59`` -> ``0:59``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_line(rec: dict[str, Any], total_steps: int) -> str:
    """One dense console line of a ``train`` record."""
    parts = [f"step {rec['step']}/{total_steps}", f"loss {rec['loss']:.4f}", f"text {rec['text_loss']:.4f}"]
    if rec.get("vision_loss") is not None:
        parts.append(f"vision {rec['vision_loss']:.4f}")
    parts += [f"und {rec['understanding_samples']}", f"gen {rec['generation_samples']}",
              f"{rec['samples_per_s']:.1f} samples/s", f"{rec['tokens_per_s']:.0f} tok/s",
              f"lr {rec['lr_llm']:.2e}", f"ETA {format_duration(rec['eta_s'])}"]
    return " | ".join(parts)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` after ``step`` (a resumed run rewrites them), atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a killed run
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (optionally only one ``kind``)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
    return out


class MetricsLogger:
    """Writes records to ``metrics.jsonl``, TensorBoard and the console (main process only: pass ``enabled``)."""

    def __init__(self, out: Path, total_steps: int, start_step: int, enabled: bool = True,
                 tensorboard: bool = True, quiet: bool = False):
        self.out = out
        self.total = total_steps
        self.enabled = enabled
        self.quiet = quiet
        self.writer = None
        self.bar = None
        if not enabled:
            return
        truncate_metrics(out / "metrics.jsonl", start_step)
        self.file = open(out / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step or None)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, leave=False,
                        disable=quiet or not sys.stderr.isatty())

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record; scalars go to TensorBoard under ``{kind}/{key}``."""
        if not self.enabled:
            return
        rec = {"time": round(time.time(), 3), **rec}
        self.file.write(json.dumps(rec, sort_keys=True) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time"):
                    self.writer.add_scalar(f"{rec['kind']}/{k}", v, rec["step"])
            self.writer.flush()

    def echo(self, text: str) -> None:
        """Print a line to stderr without breaking the progress bar."""
        if not self.enabled or self.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def advance(self, n: int = 1, postfix: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.file.close()
        if self.writer is not None:
            self.writer.close()


__all__ = ["MetricsLogger", "format_line", "format_duration", "truncate_metrics", "read_metrics"]
