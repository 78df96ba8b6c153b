"""The quickstart: the paired knowledge-transfer study (paper section 4.2, Table A5) on a CPU, with its verdict.

Weather is asked in only 5% of the VQA questions and never stated in captions; generation instructions are
unbiased. An understanding-only model (``SigLIP_u``) sees few weather questions; a unified model
(``SigLIP-SigLIP``) also learns to *draw* the weather. Does drawing it help answer it?

The quickstart is the ``transfer-study`` recipe (:mod:`uvlm.experiments.recipe`) at the calibrated ``cpu`` preset,
restricted to a few of its arms, run by the sweep runner (:mod:`uvlm.experiments.sweep`): the arms of one seed share
their initial weights and their understanding samples in the same order; runs go to separate processes, one thread
each, up to the core count; finished runs are skipped and interrupted runs resume from their last checkpoint.

Outputs in ``out``: ``runs/`` (the run folders), ``transfer-study/`` (the sweep's tables, report and
``verdict.md``), ``table.md`` (Table A5 layout: ours as mean ± std over seeds beside the paper's numbers, then the
pre-registered F3 verdict with the paired interval), ``results.json`` (every run's final scores and curves, the
verdict), ``curves.png`` / ``curves.pdf`` (weather accuracy against understanding samples seen, per arm, mean and
min-max band over seeds, with chance and the paper's end points).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uvlm.errors import UserError, require
from uvlm.experiments.paper import COLUMNS, TABLE_A5
from uvlm.io import write_json_atomic, write_text_atomic

#: Training samples/s of one single-thread process at the quickstart's defaults (16 pooled image tokens, the cpu
#: preset's 4 length groups), measured on the 2-core development machines with two runs in parallel (74-77 on the
#: Xeon, 60 on the AMD EPYC of 2026-12-02). ``debug``: measured before length groups (a lower bound). Only for the
#: estimate.
SAMPLES_PER_S = {"tiny": 60.0, "debug": 186.0}
#: Minutes to train the tiny SigLIP tower on one core the first time (then cached): 14.6 CPU minutes on the Xeon,
#: 17.5 on the AMD EPYC.
SIGLIP_TRAIN_MINUTES = 18.0
#: The arms of the ``transfer-study`` recipe, by row name: what ``--arms`` chooses from.
ARMS = ("SigLIP_u", "SigLIP-SigLIP alpha=1", "SigLIP-SigLIP alpha=auto", "SigLIP-SigLIP alpha=0", "SigLIP_u bias=none")


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart runs. The defaults are the README's main job."""

    arms: tuple[str, ...] = ("SigLIP_u", "SigLIP-SigLIP alpha=auto", "SigLIP_u bias=none")
    """Arms of the ``transfer-study`` recipe (see :data:`ARMS`): the understanding-only baseline, the unified model
    (``alpha=1``: the paper's weight; ``alpha=auto``: the gradient-norm balance), the ``alpha=0`` control (same
    samples and steps, no vision gradient) and the unbiased control (``SigLIP_u bias=none``)."""
    seeds: int = 3
    """Training seeds per arm (weight init and data order; the dataset is the same)."""
    samples: int = 6000
    """Training samples per understanding task (VQA, caption); the generation instructions are the cpu preset's
    multiple of it (8x: 48,000 at the default 6,000, as calibrated)."""
    llm: str = "tiny"
    """LLM size preset (``debug``, ``tiny``)."""
    evals: int = 0
    """Evaluations over training (the curves' points); 0: the cpu preset's (so the runs are the recipe's)."""
    questions: int = 300
    """Test questions per evaluation along the curve."""
    final_questions: int = 1000
    """Test questions of the final evaluation (all 1,000 of the test split)."""
    workers: int = 0
    """Parallel runs; 0: one per core."""
    source: str = "tiny"
    """Vision source: ``tiny`` (trained here and cached) or a local SigLIP folder."""
    out: str = "runs/quickstart"
    """Output folder."""
    results: str = ""
    """Folder of committed results (see ``uvlm run --results``): finished runs found there are not trained again."""

    def __post_init__(self) -> None:
        require(self.seeds >= 1, f"--seeds must be at least 1, got {self.seeds}")
        require(self.samples >= 32, f"--samples must be at least the batch size 32, got {self.samples}")
        require(self.evals >= 0, f"--evals must be 0 (the preset's) or more, got {self.evals}")
        require(self.questions >= 1 and self.final_questions >= 1, "--questions and --final-questions must be >= 1")
        require(len(self.arms) >= 1, "--arms needs at least one arm")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise UserError(f"unknown arm {bad[0]!r}: use some of {', '.join(repr(a) for a in ARMS)}")

    def n_workers(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(self.workers or cores, len(self.arms) * self.seeds))


def recipe_and_preset(q: QuickstartConfig):
    """The quickstart as a sweep: the ``transfer-study`` recipe at the ``cpu`` preset rescaled to ``q.samples`` per
    task (the same run configs as ``uvlm run transfer-study`` at the default size)."""
    from dataclasses import replace as _replace

    from uvlm.experiments.recipe import load_preset, load_recipe

    recipe = load_recipe("transfer-study")
    preset = load_preset("cpu")
    run = json.loads(json.dumps(preset.run))
    run["vision"] = {**run.get("vision", {}), "source": q.source}
    run["model"] = {**run.get("model", {}), "llm": {"preset": q.llm}}
    run["eval"] = {**run.get("eval", {}), "questions": q.questions, "final_questions": q.final_questions}
    rate = SAMPLES_PER_S.get(q.llm, SAMPLES_PER_S["tiny"])
    default = q.samples == round(60_000 * preset.data_scale)
    scale = preset.data_scale if default else q.samples / 60_000
    # another size is another preset: its tables never mix with the cpu preset's (committed) ones
    preset = _replace(preset, name="cpu" if default else "quickstart", data_scale=scale, run=run,
                      evals=q.evals or preset.evals,
                      samples_per_s={"siglip": rate, "vq": preset.samples_per_s.get("vq", rate)})
    return recipe, preset


def run_configs(q: QuickstartConfig) -> list[tuple[str, int, Any]]:
    """``(arm, seed, RunConfig)`` of every quickstart run."""
    from uvlm.experiments.recipe import expand

    recipe, preset = recipe_and_preset(q)
    return [(r.group, r.seed, r.config) for r in expand(recipe, preset, q.seeds) if r.group in q.arms]


def summarize(records: list[dict[str, Any]], arms: tuple[str, ...]) -> dict[str, Any]:
    """Mean, std and min/max over seeds of each arm's final scores (and of its text-conditioning gap and the feature
    probe of its drawings, for arms that generate)."""
    summary: dict[str, Any] = {}
    for v in arms:
        mine = [r for r in records if r["arm"] == v and r.get("final")]
        finals = [r["final"]["vqa"] for r in mine if r["final"].get("vqa")]
        columns = {col: [f[col] for f in finals if f.get(col) is not None] for col in COLUMNS}
        columns["conditioning_gap"] = [r["final"]["conditioning"]["gap"] for r in mine
                                       if r["final"].get("conditioning")]
        columns["draws_weather"] = [r["final"]["feature_probe"]["icon"] for r in mine
                                    if (r["final"].get("feature_probe") or {}).get("icon") is not None]
        summary[v] = {col: _spread(vals) for col, vals in columns.items() if vals}
    return summary


def _spread(values: list[float]) -> dict[str, float | int]:
    """Mean, sample std (0 for one value), min, max and count."""
    vals = np.array(values, dtype=float)
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "min": float(vals.min()), "max": float(vals.max()), "n": int(len(vals))}


def format_conditioning(summary: dict[str, Any]) -> str:
    """One line per arm that generates: does it listen to the instruction, and does it draw the weather?"""
    lines = []
    for v, row in summary.items():
        g, d = row.get("conditioning_gap"), row.get("draws_weather")
        if g:
            lines.append(f"{v}: vision loss {g['mean']:+.1f}% (seeds {g['min']:+.1f} to {g['max']:+.1f}) when the "
                         f"instructions are shuffled (0: its drawings ignore the instruction; uvlm eval --conditioning)")
        if d:
            lines.append(f"{v}: the icon probe reads the requested weather in its drawings at {d['mean']:.2f} "
                         f"(seeds {d['min']:.2f} to {d['max']:.2f}; the precondition of transfer is >= 0.9)")
    return "\n".join(lines)


def _paper_row(arm: str, paper: dict[str, tuple[float, ...]]) -> tuple[float, ...] | None:
    variant, _, rest = arm.partition(" ")
    return paper.get(variant) if rest in ("", "alpha=1") else None


def format_table(summary: dict[str, Any], paper: dict[str, tuple[float, ...]] = TABLE_A5) -> str:
    head = "| model | " + " | ".join(f"{c} (ours) | {c} (paper)" for c in COLUMNS) + " |"
    sep = "|---|" + "---:|---:|" * len(COLUMNS)
    lines = [head, sep]
    for v, row in summary.items():
        cells = []
        pub = _paper_row(v, paper)
        for k, col in enumerate(COLUMNS):
            st = row.get(col)
            ours = f"{st['mean']:.1f} ± {st['std']:.1f}" if st else "-"
            cells.append(f"{ours} | {pub[k]:.1f}" if pub else f"{ours} | -")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(records: list[dict[str, Any]], arms: tuple[str, ...], out: Path, attribute: str = "weather",
                paper: dict[str, tuple[float, ...]] = TABLE_A5) -> None:
    """Weather against understanding samples seen, per arm (mean line, min-max band), with chance and the paper's
    end points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x_end = 0.0
    col = COLUMNS.index(attribute)
    for v in arms:
        runs = [r["curve"] for r in records if r["arm"] == v and r.get("curve")]
        if not runs:
            continue
        n = min(len(c) for c in runs)
        x = np.mean([[p["understanding_samples"] for p in c[:n]] for c in runs], axis=0)
        y = np.array([[p["vqa"][attribute] for p in c[:n]] for c in runs])
        line, = ax.plot(x, y.mean(0), marker="o", label=f"{v} (n={len(runs)})")
        ax.fill_between(x, y.min(0), y.max(0), alpha=0.2, color=line.get_color())
        x_end = max(x_end, float(x[-1]))
        pub = _paper_row(v, paper)
        if pub:
            ax.plot([x[-1]], [pub[col]], marker="*", markersize=13, color=line.get_color(), linestyle="none",
                    label=f"paper {v.split()[0]}: {pub[col]:.1f}")
    if attribute == "weather":
        ax.axhline(100 / 3, color="grey", linestyle=":", label="chance (3 classes)")
    ax.set_xlabel("understanding samples seen")
    ax.set_ylabel(f"{attribute} VQA score (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
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
    from uvlm.experiments.verdicts import format_verdict, transfer
    from uvlm.vision.artifacts import cached
    from uvlm.vision.siglip_train import SiglipTrainConfig

    out = Path(q.out)
    recipe, preset = recipe_and_preset(q)
    log(f"quickstart: {', '.join(q.arms)} on weather-biased SmartWatch ({q.samples:,} samples per task), "
        f"{q.seeds} seeds, {len(q.arms) * q.seeds} runs, {q.n_workers()} in parallel (one thread each), "
        f"LLM preset {q.llm}")
    if q.source == "tiny" and cached("siglip", SiglipTrainConfig().to_dict()) is None:
        log(f"the tiny SigLIP tower is not cached yet: training it first adds about {SIGLIP_TRAIN_MINUTES:.0f} min")
    only = tuple(a.replace("[", "[[]") for a in q.arms)  # exact row names as shell patterns
    sweep = run_sweep(recipe, preset, SweepOptions(preset=preset.name, seeds=q.seeds, root=str(out), workers=q.workers,
                                                   only=only, results=q.results), log=log)
    records = [{"arm": r["group"], "labels": r["labels"], "seed": r["seed"], "status": r["status"],
                "run": str(out / "runs" / r["dir"]), "minutes": (r["wall_seconds"] or 0.0) / 60.0,
                "final": r["final"], "curve": r["curve"]}
               for r in sweep["records"] if r["status"] == "done" and r["group"] in q.arms]
    failures = [{"arm": r["group"], "seed": r["seed"], "error": r["error"]}
                for r in sweep["records"] if r["status"] == "failed" and r["group"] in q.arms]
    summary = summarize(records, q.arms)
    verdict = transfer(records)
    table = format_table(summary)
    # every invocation appends its wall time to the sweep's timing.jsonl: a rerun that trains nothing adds its seconds
    # and keeps the minutes of the invocations that did the work
    timing = Path(sweep["folder"]) / "timing.jsonl"
    invocations = [json.loads(line) for line in timing.read_text().splitlines() if line.strip()] if timing.is_file() else []
    result = {"config": asdict(q), "wall_minutes": sweep["wall_minutes"],
              "wall_minutes_all_invocations": round(sum(i.get("wall_minutes", 0.0) for i in invocations), 2),
              "invocations": len(invocations), "summary": summary, "verdict": verdict,
              "runs": sorted(records, key=lambda r: (r["arm"], r["seed"])), "failures": failures,
              "paper": {v: _paper_row(v, TABLE_A5) for v in q.arms}}
    write_json_atomic(out / "results.json", result)
    gap = format_conditioning(summary)
    text = format_verdict(verdict)
    write_text_atomic(out / "table.md", table + "\n" + (f"\n{gap}\n" if gap else "") + f"\n{text}\n")
    plot_curves(result["runs"], q.arms, out)
    log("")
    log(table)
    if gap:
        log(gap)
    log("")
    log(text)
    log("")
    log(f"wall time {result['wall_minutes']:.1f} min ({result['wall_minutes_all_invocations']:.1f} min over "
        f"{result['invocations']} invocation(s) of this folder); curves: {out / 'curves.png'}; all numbers: "
        f"{out / 'results.json'}")
    return result
