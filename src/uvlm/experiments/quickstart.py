"""The quickstart: knowledge transfer on weather-biased SmartWatch (paper section 4.2, Table A5), on a CPU.

Weather is asked in only 5% of the VQA questions and never stated in captions; generation instructions are
unbiased. An understanding-only model (``SigLIP_u``) sees few weather questions; a unified model
(``SigLIP-SigLIP``) also learns to *draw* the weather. Does drawing it help answer it?

Runs (variant x seed) go to separate processes, one thread each (two single-thread processes beat one
two-thread process on these CPUs), up to the core count. Finished runs are skipped and interrupted runs resume
from their last checkpoint, so the command can be stopped and restarted. The frozen encoder's features are
computed once, before the runs start, and shared through the feature cache.

Outputs in ``out``: ``table.md`` (Table A5 layout: ours as mean ± std over seeds beside the paper's numbers),
``results.json`` (every run's final scores and curves), ``curves.png`` / ``curves.pdf`` (weather accuracy against
understanding samples seen, per variant, mean and min-max band over seeds).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from uvlm.data.config import Bias
from uvlm.errors import require
from uvlm.experiments.paper import COLUMNS, TABLE_A5
from uvlm.io import write_json_atomic, write_text_atomic

#: Training throughput of one single-thread process with the tiny LLM, samples/s, measured on the 2-core
#: development machine with two runs in parallel (see benchmarks/train_speed.py); used only for the estimate.
SAMPLES_PER_S = {"tiny": 34.0, "debug": 120.0}
#: Speed-up of 2x2 token pooling (16 instead of 64 image tokens) over the full grid, measured the same way.
POOL_SPEEDUP = {1: 1.0, 2: 1.55}
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
        Bias.parse(self.bias)

    def n_workers(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(self.workers or cores, len(self.variants) * self.seeds))


@dataclass
class Plan:
    """The runs and the expected wall time."""

    runs: list[tuple[str, int, Any]] = field(default_factory=list)  # (variant, seed, RunConfig)
    samples_total: int = 0
    minutes: float = 0.0
    vision_minutes: float = 0.0


def run_configs(q: QuickstartConfig) -> list[tuple[str, int, Any]]:
    from uvlm.data.config import SplitConfig
    from uvlm.train.config import RunConfig, variant_config

    base = RunConfig()
    bias = Bias.parse(q.bias)
    train = SplitConfig.train(n_vqa=q.samples, n_caption=q.samples, n_generation=q.samples, bias=bias)
    runs = []
    for variant in q.variants:
        cfg = variant_config(variant, base)
        n_items = 2 * q.samples if cfg.mode == "understanding" else (q.samples if cfg.mode == "generation" else 3 * q.samples)
        steps = max(1, n_items // q.batch_size)
        every = max(1, math.ceil(steps / q.evals))
        for seed in range(q.seeds):
            c = replace(
                cfg,
                seed=seed,
                data=replace(cfg.data, train=train),
                vision=replace(cfg.vision, source=q.source, pool=q.pool),
                model=replace(cfg.model, seed=seed, llm=replace(cfg.model.llm, preset=q.llm)),
                optim=replace(cfg.optim, batch_size=q.batch_size, lr_llm=q.lr, lr_vision=q.lr, steps=None),
                eval=replace(cfg.eval, every=every, unit="steps", questions=q.questions, at_end=True),
                checkpoint=replace(cfg.checkpoint, every=every, at_end=True, keep=1),
                log=replace(cfg.log, interval=max(1, every // 2), tensorboard=False),
            )
            runs.append((variant, seed, c))
    return runs


def plan(q: QuickstartConfig) -> Plan:
    from uvlm.vision.artifacts import cached
    from uvlm.vision.siglip_train import SiglipTrainConfig

    p = Plan(runs=run_configs(q))
    per_run = [sum(_n_items(c.to_dict())) for _, _, c in p.runs]
    p.samples_total = sum(per_run)
    rate = SAMPLES_PER_S.get(q.llm, SAMPLES_PER_S["tiny"]) * POOL_SPEEDUP.get(q.pool, POOL_SPEEDUP[2])
    workers = q.n_workers()
    # longest-first scheduling on `workers` slots
    slots = [0.0] * workers
    for n in sorted(per_run, reverse=True):
        slots[slots.index(min(slots))] += n / rate
    eval_s = q.evals * q.questions / 150.0  # greedy answering with the KV cache, a few hundred questions/s
    p.minutes = (max(slots) + eval_s * math.ceil(len(per_run) / workers)) / 60.0
    if q.source == "tiny" and cached("siglip", SiglipTrainConfig().to_dict()) is None:
        p.vision_minutes = SIGLIP_TRAIN_MINUTES
    return p


def _run_one(args: tuple[str, int, dict[str, Any], str]) -> dict[str, Any]:
    """One run in its own process: train (or resume, or skip if finished); return its final record."""
    variant, seed, cfg_dict, out = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from uvlm.train.checkpoint import list_checkpoints
    from uvlm.train.config import RunConfig
    from uvlm.train.loop import train

    out_dir = Path(out)
    done = out_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.time()
    result = train(RunConfig.from_dict(cfg_dict), out_dir, resume=bool(list_checkpoints(out_dir)), quiet=True)
    record = {"variant": variant, "seed": seed, "run": str(out_dir), "steps": result.steps,
              "minutes": (time.time() - t0) / 60.0, "final": result.last_eval}
    write_json_atomic(done, record)
    return record


def _progress(runs: list[tuple[str, int, Path, int]]) -> str:
    parts = []
    for variant, seed, out, steps in runs:
        step = 0
        m = out / "metrics.jsonl"
        if m.is_file():
            for line in m.read_text().splitlines()[-3:]:
                try:
                    step = max(step, int(json.loads(line).get("step", 0)))
                except (ValueError, json.JSONDecodeError):
                    pass
        if (out / "result.json").is_file():
            step = steps
        parts.append(f"{variant}/s{seed} {100 * step // max(1, steps):3d}%")
    return " | ".join(parts)


def curves(run_dir: Path) -> list[dict[str, Any]]:
    """The eval records of one run: understanding samples seen and the VQA scores."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "eval":
            out.append({"step": r["step"], "understanding_samples": r["understanding_samples"],
                        "generation_samples": r["generation_samples"], "vqa": r["vqa"]})
    return out


def summarize(records: list[dict[str, Any]], variants: tuple[str, ...]) -> dict[str, Any]:
    """Mean, std and min/max over seeds of each variant's final scores."""
    summary: dict[str, Any] = {}
    for v in variants:
        finals = [r["final"]["vqa"] for r in records if r["variant"] == v and r.get("final")]
        row = {}
        for col in COLUMNS:
            vals = np.array([f[col] for f in finals if f.get(col) is not None], dtype=float)
            if len(vals):
                row[col] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                            "min": float(vals.min()), "max": float(vals.max()), "n": int(len(vals))}
        summary[v] = row
    return summary


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
    out = Path(q.out)
    p = plan(q)
    workers = q.n_workers()
    log(f"quickstart: {', '.join(q.variants)} on {q.bias}-biased SmartWatch ({q.samples:,} samples per task), "
        f"{q.seeds} seeds, {len(p.runs)} runs, {workers} in parallel (one thread each), LLM preset {q.llm}")
    extra = f" + about {p.vision_minutes:.0f} min to train the tiny SigLIP tower once" if p.vision_minutes else ""
    log(f"expected wall time: about {p.minutes:.0f} min on a 2-core CPU{extra}; results -> {out}")

    # the output folder belongs to one configuration: finished runs are only reused for the same one
    stamp = out / "quickstart.json"
    mine = json.loads(json.dumps(asdict(q)))
    mine.pop("workers")  # how many run at once does not change the results
    if stamp.is_file():
        theirs = json.loads(stamp.read_text())
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k) and k != "out")
        require(not changed, f"{out} holds quickstart runs of another configuration (differs in "
                             f"{', '.join(changed)}): pass a new --out, or remove {out}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stamp, mine)

    t0 = time.time()
    # the frozen encoder and its features for the training and test images, once, before the runs
    from uvlm.train.data import feature_cache, load_sources

    cfg0 = p.runs[0][2]
    sources = load_sources(cfg0)
    for src in {id(s): s for s in (sources.understanding, sources.generation) if s is not None}.values():
        for split in (cfg0.data.train, cfg0.data.test):
            split = replace(split, resolution=src.resolution)
            feature_cache(src, split, cfg0.data.feature_chunk).ensure(split.n_images)
    log(f"vision features ready ({(time.time() - t0) / 60:.1f} min)")

    jobs = [(v, s, c.to_dict(), str(out / f"{v}-seed{s}")) for v, s, c in p.runs]
    jobs.sort(key=lambda j: -(j[2]["data"]["train"]["n_generation"] if j[2]["mode"] != "understanding" else 0))
    steps = {j[3]: max(1, (sum(_n_items(j[2]))) // q.batch_size) for j in jobs}
    track = [(v, s, Path(o), steps[o]) for v, s, _, o in jobs]
    records, failures = [], []

    def collect(job, get_result) -> None:
        v, s, _, o = job
        try:
            rec = get_result()
            rec["curve"] = curves(Path(o))
            records.append(rec)
        except Exception as e:  # a failed run is recorded; the others carry on
            failures.append({"variant": v, "seed": s, "error": f"{type(e).__name__}: {e}"})
            log(f"run {v} seed {s} failed: {type(e).__name__}: {e}")

    if workers == 1:  # in this process, one run after the other
        for job in jobs:
            collect(job, lambda job=job: _run_one(job))
            log(f"[{(time.time() - t0) / 60:5.1f} min] {_progress(track)}")
    else:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, j): j for j in jobs}
            pending, last = set(futures), 0.0
            while pending:
                done, pending = cf.wait(pending, timeout=5.0)
                for f in done:
                    collect(futures[f], f.result)
                if time.time() - last > 30 or not pending:
                    last = time.time()
                    log(f"[{(time.time() - t0) / 60:5.1f} min] {_progress(track)}")

    summary = summarize(records, q.variants)
    table = format_table(summary)
    result = {"config": asdict(q), "wall_minutes": (time.time() - t0) / 60.0, "summary": summary,
              "runs": sorted(records, key=lambda r: (r["variant"], r["seed"])), "failures": failures,
              "paper": {v: TABLE_A5.get(v) for v in q.variants}}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "table.md", table + "\n")
    plot_curves(result["runs"], q.variants, out)
    log("")
    log(table)
    log("")
    log(f"wall time {result['wall_minutes']:.1f} min; curves: {out / 'curves.png'}; all numbers: {out / 'results.json'}")
    return result


def _n_items(cfg: dict[str, Any]) -> tuple[int, int]:
    t = cfg["data"]["train"]
    und = t["n_vqa"] + t["n_caption"] if cfg["mode"] != "generation" else 0
    gen = t["n_generation"] if cfg["mode"] != "understanding" else 0
    return und, gen

