"""The quickstart: knowledge transfer on weather-biased SmartWatch (paper section 4.2, Table A5), on a CPU.

Weather is asked in only 5% of the VQA questions and never stated in captions; generation instructions are
unbiased. An understanding-only model (``SigLIP_u``) sees few weather questions; a unified model
(``SigLIP-SigLIP``) also learns to *draw* the weather. Does drawing it help answer it?

The quickstart is the ``transfer-weather`` recipe (:mod:`uvlm.experiments.recipe`) restricted to these two models and
rescaled, run by the sweep runner (:mod:`uvlm.experiments.sweep`): runs (variant x seed) go to separate processes,
one thread each (two single-thread processes beat one two-thread process on these CPUs), up to the core count;
finished runs are skipped and interrupted runs resume from their last checkpoint, so the command can be stopped and
restarted; a changed configuration trains new runs beside the old ones (run folders are named by config hash).

Outputs in ``out``: ``runs/`` (the run folders), ``transfer-weather/`` (the sweep's tables and report), ``table.md`` (Table A5 layout: ours as mean ± std over seeds beside the paper's numbers),
``results.json`` (every run's final scores and curves), ``curves.png`` / ``curves.pdf`` (weather accuracy against
understanding samples seen, per variant, mean and min-max band over seeds).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uvlm.data.config import Bias
from uvlm.errors import require
from uvlm.experiments.paper import COLUMNS, TABLE_A5
from uvlm.io import write_json_atomic, write_text_atomic

#: Training samples/s of one single-thread process at the quickstart's defaults (16 pooled image tokens, the cpu
#: preset's 4 length groups), measured on the 2-core development machine with two runs in parallel: 74-77 for the tiny
#: LLM in the quickstart's own runs. ``debug``: measured before length groups (a lower bound). Only for the estimate.
SAMPLES_PER_S = {"tiny": 75.0, "debug": 186.0}
#: Speed relative to the 2x2-pooled default: the full 8x8 grid (64 image tokens) trains 1.55x slower per sample.
POOL_SPEED = {1: 1 / 1.55, 2: 1.0}
#: Minutes to train the tiny SigLIP tower on one core the first time (then cached): 14.6 CPU minutes measured.
SIGLIP_TRAIN_MINUTES = 15.0


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart runs. The defaults are the README's main job."""

    variants: tuple[str, ...] = ("SigLIP_u", "SigLIP-SigLIP")
    """Models to compare (names as in the paper's tables)."""
    seeds: int = 3
    """Training seeds per variant (weight init and data order; the dataset is the same)."""
    samples: int = 6400
    """Training samples per task (VQA, caption, generation). Understanding-only runs see 2x this, unified 3x."""
    bias: str = "weather"
    """The biased attribute and shares, ``ATTR[:VQA_SHARE[:CAPTION_SHARE]]`` (see ``uvlm data generate --bias``)."""
    llm: str = "tiny"
    """LLM size preset (``debug``, ``tiny``)."""
    batch_size: int = 32
    """Global batch size."""
    lr: float = 1e-3
    """Peak learning rate of the LLM, adapters and head (warmup then cosine decay)."""
    alpha: float = 0.0
    """Weight of the vision loss in the unified models (loss = text + alpha x vision); 0: the target's default (1.0
    for SigLIP, as in the paper). Understanding-only runs do not depend on it."""
    evals: int = 8
    """Evaluations over training (the curves' points)."""
    questions: int = 300
    """Test questions per evaluation (of the 1,000 in the test split)."""
    workers: int = 0
    """Parallel runs; 0: one per core."""
    source: str = "tiny"
    """Vision source: ``tiny`` (trained here and cached) or a local SigLIP folder."""
    pool: int = 2
    """Average-pool the SigLIP patch grid ``pool x pool`` (2: 16 tokens per image instead of 64; 1: off)."""
    out: str = "runs/quickstart"
    """Output folder."""

    def __post_init__(self) -> None:
        require(self.seeds >= 1, f"--seeds must be at least 1, got {self.seeds}")
        require(self.samples >= self.batch_size, f"--samples must be at least the batch size {self.batch_size}")
        require(self.evals >= 1, f"--evals must be at least 1, got {self.evals}")
        require(self.alpha >= 0, f"--alpha must be 0 or more (0: the target's default), got {self.alpha}")
        Bias.parse(self.bias)

    def n_workers(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(self.workers or cores, len(self.variants) * self.seeds))


def recipe_and_preset(q: QuickstartConfig):
    """The quickstart as a sweep: the ``transfer-weather`` recipe restricted to ``q.variants`` (without FID and
    faithfulness; with the text-conditioning gap of the unified runs), at the ``cpu`` preset rescaled to ``q.samples``
    per task."""
    from dataclasses import replace as _replace

    from uvlm.experiments.recipe import load_preset, load_recipe

    paper = load_recipe("transfer-weather")
    recipe = _replace(paper, variants=tuple(q.variants), data={**paper.data, "bias": q.bias},
                      evaluate={"generation": False, "probe": False, "conditioning": True})
    if Bias.parse(q.bias) != Bias.parse(paper.data["bias"]):
        recipe = _replace(recipe, reproduces=f"the transfer-weather setup with the bias {q.bias} instead of the "
                                             f"paper's (attribute:VQA share:caption share)")
    preset = load_preset("cpu")
    run = json.loads(json.dumps(preset.run))
    run["vision"] = {**run.get("vision", {}), "source": q.source, "pool": q.pool}
    run["model"] = {"llm": {"preset": q.llm}, **({"alpha": q.alpha} if q.alpha else {})}
    run["optim"] = {**run.get("optim", {}), "batch_size": q.batch_size, "lr_llm": q.lr, "lr_vision": q.lr}
    run["eval"] = {**run.get("eval", {}), "questions": q.questions}
    rate = SAMPLES_PER_S.get(q.llm, SAMPLES_PER_S["tiny"]) * POOL_SPEED.get(q.pool, POOL_SPEED[1])
    preset = _replace(preset, name="quickstart", data_scale=q.samples / 60_000, run=run, evals=q.evals,
                      samples_per_s={"siglip": rate, "vq": preset.samples_per_s.get("vq", rate)})
    return recipe, preset


def run_configs(q: QuickstartConfig) -> list[tuple[str, int, Any]]:
    """``(variant, seed, RunConfig)`` of every quickstart run."""
    from uvlm.experiments.recipe import expand

    recipe, preset = recipe_and_preset(q)
    return [(r.labels["variant"], r.seed, r.config) for r in expand(recipe, preset, q.seeds)]


def summarize(records: list[dict[str, Any]], variants: tuple[str, ...]) -> dict[str, Any]:
    """Mean, std and min/max over seeds of each variant's final scores (and of its text-conditioning gap)."""
    summary: dict[str, Any] = {}
    for v in variants:
        finals = [r["final"]["vqa"] for r in records if r["variant"] == v and r.get("final")]
        columns = {col: [f[col] for f in finals if f.get(col) is not None] for col in COLUMNS}
        columns["conditioning_gap"] = [r["final"]["conditioning"]["gap"] for r in records
                                       if r["variant"] == v and (r.get("final") or {}).get("conditioning")]
        summary[v] = {col: _spread(vals) for col, vals in columns.items() if vals}
    return summary


def _spread(values: list[float]) -> dict[str, float | int]:
    """Mean, sample std (0 for one value), min, max and count."""
    vals = np.array(values, dtype=float)
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "n": int(len(vals))}


def format_conditioning(summary: dict[str, Any]) -> str:
    """One line per unified variant: does its generation head listen to the instruction?"""
    lines = []
    for v, row in summary.items():
        g = row.get("conditioning_gap")
        if g:
            lines.append(f"{v}: vision loss {g['mean']:+.1f}% (seeds {g['min']:+.1f} to {g['max']:+.1f}) when the "
                         f"instructions are shuffled (0: its drawings ignore the instruction; uvlm eval --conditioning)")
    return "\n".join(lines)


def format_table(summary: dict[str, Any], paper: dict[str, tuple[float, ...]] = TABLE_A5) -> str:
    head = "| model | " + " | ".join(f"{c} (ours) | {c} (paper)" for c in COLUMNS) + " |"
    sep = "|---|" + "---:|---:|" * len(COLUMNS)
    lines = [head, sep]
    for v, row in summary.items():
        cells = []
        for k, col in enumerate(COLUMNS):
            s = row.get(col)
            ours = f"{s['mean']:.1f} ± {s['std']:.1f}" if s else "-"
            pub = paper.get(v)
            cells.append(f"{ours} | {pub[k]:.1f}" if pub else f"{ours} | -")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(records: list[dict[str, Any]], variants: tuple[str, ...], out: Path, attribute: str = "weather") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for v in variants:
        runs = [r["curve"] for r in records if r["variant"] == v and r.get("curve")]
        if not runs:
            continue
        n = min(len(c) for c in runs)
        x = np.mean([[p["understanding_samples"] for p in c[:n]] for c in runs], axis=0)
        y = np.array([[p["vqa"][attribute] for p in c[:n]] for c in runs])
        ax.plot(x, y.mean(0), marker="o", label=f"{v} (n={len(runs)})")
        ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
    ax.set_xlabel("understanding samples seen")
    ax.set_ylabel(f"{attribute} VQA score (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{attribute}-biased SmartWatch: mean and min-max over seeds")
    fig.tight_layout()
    for ext in ("png", "pdf"):
        tmp = out / f".curves.tmp.{ext}"
        fig.savefig(tmp)
        os.replace(tmp, out / f"curves.{ext}")
    plt.close(fig)


def run_quickstart(q: QuickstartConfig, log=print) -> dict[str, Any]:
    """Run (or continue) the quickstart; write ``table.md``, ``results.json`` and the curves to ``q.out``."""
    from uvlm.experiments.sweep import SweepOptions, run_sweep
    from uvlm.vision.artifacts import cached
    from uvlm.vision.siglip_train import SiglipTrainConfig

    out = Path(q.out)
    recipe, preset = recipe_and_preset(q)
    log(f"quickstart: {', '.join(q.variants)} on {q.bias}-biased SmartWatch ({q.samples:,} samples per task), "
        f"{q.seeds} seeds, {len(q.variants) * q.seeds} runs, {q.n_workers()} in parallel (one thread each), "
        f"LLM preset {q.llm}")
    if q.source == "tiny" and cached("siglip", SiglipTrainConfig().to_dict()) is None:
        log(f"the tiny SigLIP tower is not cached yet: training it first adds about {SIGLIP_TRAIN_MINUTES:.0f} min")
    sweep = run_sweep(recipe, preset, SweepOptions(preset="cpu", seeds=q.seeds, root=str(out), workers=q.workers),
                      log=log)
    records = [{"variant": r["labels"]["variant"], "seed": r["seed"], "run": str(out / "runs" / r["dir"]),
                "minutes": (r["wall_seconds"] or 0.0) / 60.0, "final": r["final"], "curve": r["curve"]}
               for r in sweep["records"] if r["status"] == "done"]
    failures = [{"variant": r["labels"]["variant"], "seed": r["seed"], "error": r["error"]}
                for r in sweep["records"] if r["status"] != "done"]
    summary = summarize(records, q.variants)
    table = format_table(summary)
    result = {"config": asdict(q), "wall_minutes": sweep["wall_minutes"], "summary": summary,
              "runs": sorted(records, key=lambda r: (r["variant"], r["seed"])), "failures": failures,
              "paper": {v: TABLE_A5.get(v) for v in q.variants}}
    write_json_atomic(out / "results.json", result)
    gap = format_conditioning(summary)
    write_text_atomic(out / "table.md", table + "\n" + (f"\n{gap}\n" if gap else ""))
    plot_curves(result["runs"], q.variants, out)
    log("")
    log(table)
    if gap:
        log(gap)
    log("")
    log(f"wall time {result['wall_minutes']:.1f} min; curves: {out / 'curves.png'}; all numbers: {out / 'results.json'}")
    return result
