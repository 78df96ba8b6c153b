"""Recipes: the paper's experiments as checked-in TOML files, expanded into concrete runs for a preset.

A recipe (``src/uvlm/experiments/recipes/NAME.toml``) names the models to train, the data they see in the paper's
units, optional sweep axes, what to evaluate at the end and how to report it. It ``extends`` a base file
(``base.toml``), whose keys it overrides. A *preset* (``presets.toml``: ``cpu``, ``cpu-pretrained``, ``paper``) says at
what scale and with which models a recipe runs: a data scale that multiplies every sample count, run-config
overrides (LLM, LoRA, vision sources, batch, learning rates) and evaluation sizes.

:func:`expand` turns ``(recipe, preset, seeds)`` into :class:`PlannedRun` objects, each a full
:class:`~uvlm.train.config.RunConfig` with an id (a hash of the config) that names its folder, so a sweep can skip
runs that already finished and a changed recipe cannot silently reuse stale results.

Axes (``[axes]``, each a list; runs are the product of variants and axis values):

- ``understanding``: understanding samples (VQA + caption, half each), paper units.
- ``generation``: generation samples, paper units.
- ``bias_share``: the biased attribute's VQA share relative to its unbiased share (0: never asked, 1: unbiased).
- ``bias``: the bias itself, ``ATTR[:VQA_SHARE[:CAPTION_SHARE]]`` or ``"none"`` (unbiased): e.g. a biased run and its
  unbiased control in one recipe.
- ``alpha``: the vision-loss weight of mixed runs, a number (``0`` is the no-vision-gradient control) or ``"auto"``
  (the gradient-norm balance, :class:`~uvlm.train.config.BalanceConfig`). Runs that train one loss only do not depend
  on it: they are expanded once, without the label.
- ``epochs``: passes over the training data (``optim.epochs``).
- ``adapter``: the adapter kind (``linear``, ``mlp``).
- ``batch``: the global batch size (``optim.batch_size``): at a fixed number of samples, more optimizer steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from itertools import product
from typing import Any

from uvlm.errors import UserError, require

#: The unbiased share of each VQA attribute (five attributes asked with equal probability).
UNBIASED_VQA_SHARE = 0.2
AXES = ("understanding", "generation", "bias_share", "bias", "alpha", "epochs", "adapter", "batch")
#: Axes a mode does not depend on: its runs drop them (one run, no label). A bias changes only understanding data,
#: so generation-only runs train on the unbiased split; alpha weighs two losses, so only mixed runs have it; an
#: understanding-only run does not see the generation samples (nor a generation-only run the understanding ones).
IGNORED_AXES = {"understanding": ("alpha", "generation"), "generation": ("alpha", "bias", "bias_share", "understanding"),
                "mixed": ()}
_RECIPE_KEYS = {"extends", "name", "version", "title", "reproduces", "command", "variants", "data", "axes", "evaluate",
                "report", "expected", "notes", "controls", "verdict", "run"}
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


def _read_toml(name: str) -> dict[str, Any]:
    res = resources.files("uvlm.experiments").joinpath("recipes", f"{name}.toml")
    if not res.is_file():
        raise UserError(f"unknown recipe {name!r}: use one of {', '.join(recipe_names())}")
    try:
        return tomllib.loads(res.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe file {name}.toml is not valid TOML ({e}): fix the file") from None


def recipe_names() -> list[str]:
    """Every runnable recipe (files in ``recipes/`` except the ``base`` and ``presets`` files)."""
    folder = resources.files("uvlm.experiments").joinpath("recipes")
    return sorted(p.name[:-5] for p in folder.iterdir()
                  if p.name.endswith(".toml") and p.name[:-5] not in ("base", "presets"))


def preset_names() -> list[str]:
    return sorted(_presets())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file (after ``extends``)."""

    name: str
    version: int
    title: str
    reproduces: str
    command: str
    variants: tuple[str, ...]
    data: dict[str, Any]
    """Paper-unit data: ``understanding`` and ``generation`` sample counts, ``bias`` (``ATTR[:SHARE]`` or empty)."""
    axes: dict[str, tuple[Any, ...]]
    evaluate: dict[str, Any]
    """``generation`` (FID + faithfulness at the end of runs with a generation target), ``probe`` (Figure 7 probe),
    ``conditioning`` (the text-conditioning gap of runs with a generation target), ``feature_probe`` (N: does a run
    with a SigLIP or VQ target draw the requested weather? a probe fitted on real features, applied to the tokens it
    generates for N test instructions that name the weather; no decoder needed)."""
    report: Any
    """The :class:`~uvlm.experiments.report.ReportSpec` built from the ``[report]`` table."""
    expected: dict[str, dict[str, Any]]
    """Per preset: ``minutes`` (wall time on the machine named in ``machine``) and ``result`` (what it shows)."""
    notes: str = ""
    controls: tuple[dict[str, Any], ...] = ()
    """Extra runs outside the product of variants and axes, each a ``variant`` plus axis values (e.g. the unbiased
    understanding-only control of a transfer study: ``{variant = "SigLIP_u", bias = "none"}``)."""
    verdict: str = ""
    """The pre-registered finding this recipe judges (a key of :data:`uvlm.experiments.verdicts.VERDICTS`), or
    empty: the sweep prints and writes its verdict with the tables."""
    run: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per preset, run-config overrides this recipe adds to the preset's own (a ``[run.PRESET]`` table; for example
    the checkpoint of a vision source only its variants use, so the preset's other recipes keep their run ids)."""


def load_recipe(name: str) -> Recipe:
    """Read ``recipes/NAME.toml`` and everything it extends; unknown keys and bad values are :class:`UserError`."""
    raw = _read_toml(name)
    chain = [raw]
    while "extends" in chain[-1]:
        parent = chain[-1]["extends"]
        require(len(chain) < 8 and parent != name, f"recipe {name!r} extends itself: fix its 'extends'")
        chain.append(_read_toml(parent))
    d: dict[str, Any] = {}
    for layer in reversed(chain):
        d = _merge(d, {k: v for k, v in layer.items() if k != "extends"})
    unknown = sorted(set(d) - _RECIPE_KEYS)
    require(not unknown, f"recipe {name!r} has unknown key(s) {', '.join(unknown)}: use {', '.join(sorted(_RECIPE_KEYS))}")
    for k in ("name", "version", "title", "reproduces", "command", "variants"):
        require(k in d, f"recipe {name!r} lacks {k!r}: add it to recipes/{name}.toml")
    require(d["name"] == name, f"recipe file {name}.toml names itself {d['name']!r}: make them equal")
    from uvlm.train.config import parse_variant

    for v in d["variants"]:
        parse_variant(v)
    axes = d.get("axes", {})
    bad = sorted(set(axes) - set(AXES))
    require(not bad, f"recipe {name!r} has unknown axis {', '.join(bad)}: use {', '.join(AXES)}")
    for k, vals in axes.items():
        require(isinstance(vals, list) and vals, f"recipe {name!r}: axis {k!r} must be a non-empty list")
    data = d.get("data", {})
    require(set(data) <= {"understanding", "generation", "bias"},
            f"recipe {name!r}: [data] takes understanding, generation and bias")
    from uvlm.experiments.report import ReportSpec

    rep = dict(d.get("report", {}))
    rep["table"] = rep.get("table") or None  # "" in a file: no paper table
    report = ReportSpec.from_recipe(rep)
    controls = d.get("controls", [])
    require(isinstance(controls, list) and all(isinstance(c, dict) and "variant" in c for c in controls),
            f"recipe {name!r}: controls must be a list of tables, each with a variant")
    for c in controls:
        parse_variant(c["variant"])
        bad = sorted(set(c) - {"variant", *AXES})
        require(not bad, f"recipe {name!r}: control {c} has unknown key(s) {', '.join(bad)}: use variant and "
                         f"{', '.join(AXES)}")
    run = d.get("run", {})
    require(isinstance(run, dict) and all(isinstance(v, dict) for v in run.values()),
            f"recipe {name!r}: [run.PRESET] tables hold run-config overrides per preset")
    verdict = str(d.get("verdict", ""))
    if verdict:
        from uvlm.experiments.verdicts import VERDICTS

        require(verdict in VERDICTS, f"recipe {name!r}: unknown verdict {verdict!r}: use one of {', '.join(VERDICTS)}")
    return Recipe(name=name, version=int(d["version"]), title=d["title"], reproduces=d["reproduces"],
                  command=d["command"], variants=tuple(d["variants"]), data=data,
                  axes={k: tuple(v) for k, v in axes.items()}, evaluate=d.get("evaluate", {}), report=report,
                  expected=d.get("expected", {}), notes=d.get("notes", ""),
                  controls=tuple(dict(c) for c in controls), verdict=verdict, run=dict(run))


# ----- presets ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A scale at which recipes run (``presets.toml``)."""

    name: str
    description: str
    data_scale: float
    """Every paper sample count is multiplied by this (rounded to whole samples)."""
    run: dict[str, Any]
    """Run-config overrides (a partial :class:`~uvlm.train.config.RunConfig` dict)."""
    evals: int
    """Evaluations over training per run (the curves' points)."""
    generation_eval: int
    """Test generations per run for FID and faithfulness (paper: 500)."""
    probe: tuple[int, int]
    """Probe train / test images (paper: 4,000 / 1,000)."""
    paths: dict[str, str] = field(default_factory=dict)
    """Placeholders the run overrides use (``{llm}`` ...) and what each must point to; given with ``--path``."""
    samples_per_s: dict[str, float] = field(default_factory=dict)
    """Measured training speed per image-token kind on one core (``siglip``, ``vq``): for the runtime estimate."""
    generation_scale: float = 1.0
    """The recipe's generation sample count is multiplied by this on top of ``data_scale`` for runs that train on
    generation samples (a preset calibrated to need more generation data than the paper's ratio). Counts named by a
    ``generation`` axis or control are kept as given."""


def _presets() -> dict[str, dict[str, Any]]:
    return _read_toml("presets")


def load_preset(name: str) -> Preset:
    presets = _presets()
    require(name in presets, f"unknown preset {name!r}: use one of {', '.join(sorted(presets))}")
    p = presets[name]
    return Preset(name=name, description=p.get("description", ""), data_scale=float(p["data_scale"]),
                  run=p.get("run", {}), evals=int(p.get("evals", 6)), generation_eval=int(p.get("generation_eval", 500)),
                  probe=tuple(p.get("probe", (4000, 1000))), paths=p.get("paths", {}),
                  samples_per_s=p.get("samples_per_s", {}), generation_scale=float(p.get("generation_scale", 1.0)))


def _fill(x: Any, paths: dict[str, str], missing: set[str]) -> Any:
    if isinstance(x, dict):
        return {k: _fill(v, paths, missing) for k, v in x.items()}
    if isinstance(x, list):
        return [_fill(v, paths, missing) for v in x]
    if isinstance(x, str):
        for key in _PLACEHOLDER.findall(x):
            if key in paths:
                x = x.replace("{" + key + "}", paths[key])
            else:
                missing.add(key)
        return x
    return x


# ----- expansion ------------------------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    """One run of a sweep."""

    id: str
    """Hash of the run config (without its output folder): the trained model's identity. Recipes that train the same
    config share the run; what each evaluates at the end is kept apart (``evaluate``)."""
    group: str
    """Row name in the results: the variant, plus axis values when the recipe has axes."""
    labels: dict[str, Any]
    seed: int
    config: Any
    """The :class:`~uvlm.train.config.RunConfig`."""
    evaluate: dict[str, Any]

    @property
    def folder(self) -> str:
        """``<variant>-seed<k>-<id>``: named by the trained model, not by the recipe's row label, so recipes (and
        axis points) that train the same config share one folder."""
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.labels["variant"].replace("*", "star")).strip("_")
        return f"{slug}-seed{self.seed}-{self.id[:8]}"


EXECUTION_ONLY = (("runtime", "length_groups"),)
"""Run-config keys that change how a run executes, not what it trains (beyond float rounding): left out of the run's
id, so a sweep run again with another value reuses the runs it has."""


def config_id(config_dict: dict[str, Any]) -> str:
    d = dict(config_dict)
    d.pop("out_dir", None)
    for section, key in EXECUTION_ONLY:
        if isinstance(d.get(section), dict):
            d[section] = {k: v for k, v in d[section].items() if k != key}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _count(paper: float, scale: float) -> int:
    return int(round(paper * scale))


def expand(recipe: Recipe, preset: Preset, seeds: int, paths: dict[str, str] | None = None,
           strict_paths: bool = True) -> list[PlannedRun]:
    """The runs of ``recipe`` at ``preset`` for seeds ``0 .. seeds-1``.

    ``paths`` fills the preset's placeholders (``{llm}`` ...). With ``strict_paths`` a missing one is an error;
    without, placeholders stay in the configs (for ``--dry-run`` listings).
    """
    from uvlm.data.config import Bias, SplitConfig
    from uvlm.train.config import RunConfig, variant_config

    require(isinstance(seeds, int) and seeds >= 1, f"--seeds must be at least 1, got {seeds!r}")
    missing: set[str] = set()
    overrides = _fill(_merge(preset.run, recipe.run.get(preset.name, {})), paths or {}, missing)
    if missing and strict_paths:
        need = "; ".join(f"--path {k}=PATH ({preset.paths.get(k, 'a local checkpoint')})" for k in sorted(missing))
        raise UserError(f"preset {preset.name!r} needs local checkpoints: give {need}")
    try:
        base = RunConfig.from_dict(_merge({"variant": "SigLIP-SigLIP"}, overrides))
    except TypeError as e:
        raise UserError(f"preset {preset.name!r} has a bad run override: {e}") from None

    data = recipe.data
    axes = recipe.axes
    names = list(axes)
    runs: list[PlannedRun] = []
    seen_groups: set[str] = set()
    points: list[dict[str, Any]] = []
    for variant in recipe.variants:
        mode = variant_config(variant, base).mode
        for values in product(*[axes[n] for n in names]) if names else [()]:
            points.append({"variant": variant, **{n: v for n, v in zip(names, values) if n not in IGNORED_AXES[mode]}})
    for control in recipe.controls:
        mode = variant_config(control["variant"], base).mode
        points.append({k: v for k, v in control.items() if k not in IGNORED_AXES[mode]})
    for labels in points:
        variant = labels["variant"]
        mode = variant_config(variant, base).mode
        und = labels.get("understanding", data.get("understanding", 120_000))
        gen = labels.get("generation", data.get("generation", 60_000))
        n_und = _count(und, preset.data_scale)
        n_vqa, n_cap = (n_und + 1) // 2, n_und // 2
        # the preset's generation scale applies to the recipe's own generation data of runs that train on it; an
        # axis or control that names a generation count keeps it (so calibration points do not move with the preset)
        g_scale = 1.0 if "generation" in labels or mode == "understanding" else preset.generation_scale
        n_gen = _count(gen, preset.data_scale * g_scale)
        bias = None
        bias_text = str(labels.get("bias", data.get("bias") or ""))
        if bias_text and bias_text != "none" and mode != "generation":
            bias = Bias.parse(bias_text)
            if "bias_share" in labels:
                bias = Bias(bias.attribute, round(UNBIASED_VQA_SHARE * float(labels["bias_share"]), 6),
                            bias.caption_share)
        cfg = variant_config(variant, base)
        if cfg.mode == "understanding" and n_und == 0 or cfg.mode == "generation" and n_gen == 0:
            continue  # nothing to train at this axis point
        train_split = SplitConfig.train(n_vqa=n_vqa, n_caption=n_cap, n_generation=n_gen, bias=bias)
        cfg = _apply_axes(cfg, labels)
        n_items = {"understanding": n_und, "generation": n_gen, "mixed": n_und + n_gen}[cfg.mode]
        steps = planned_steps(cfg, n_items)
        every = max(1, math.ceil(steps / max(1, preset.evals)))
        cfg_dict = cfg.to_dict()
        cfg_dict["data"]["train"] = train_split.to_dict()
        cfg_dict["eval"].update(every=every, unit="steps", at_end=True)
        cfg_dict["checkpoint"].update(every=every, at_end=True, keep=1)
        cfg_dict["log"].update(interval=max(1, every // 2))
        group = variant + "".join(f" {k}={v}" for k, v in labels.items() if k != "variant")
        if group in seen_groups:
            continue
        seen_groups.add(group)
        evaluate = {
            "generation": preset.generation_eval if recipe.evaluate.get("generation") and cfg.mode != "understanding"
            and cfg.model.target_class().draws() else 0,
            "probe": list(preset.probe) if recipe.evaluate.get("probe") and cfg.mode != "generation" else None,
            "conditioning": bool(recipe.evaluate.get("conditioning")) and cfg.mode != "understanding",
            "feature_probe": (int(recipe.evaluate.get("feature_probe") or 0)
                              if cfg.mode != "understanding" and cfg.model.target is not None
                              and cfg.model.target_class().feature_probe else 0),
        }
        for seed in range(seeds):
            d = copy.deepcopy(cfg_dict)
            d["seed"] = seed
            d["model"]["seed"] = seed
            c = RunConfig.from_dict(d)
            cid = config_id(c.to_dict())
            runs.append(PlannedRun(id=cid, group=group, labels=labels, seed=seed, config=c, evaluate=evaluate))
    require(runs, f"recipe {recipe.name!r} expands to no runs at preset {preset.name!r}")
    return runs


def planned_steps(config, n_items: int) -> int:
    """Optimiser steps of a run over ``n_items`` training samples (at least one)."""
    o = config.optim
    return o.steps or max(1, int(o.epochs * n_items) // o.batch_size)


def _apply_axes(cfg, labels: dict[str, Any]):
    """The run config with the model/optimiser axes of ``labels`` applied (``alpha``, ``epochs``, ``adapter``,
    ``batch``)."""
    from dataclasses import replace

    from uvlm.train.config import BalanceConfig

    if "alpha" in labels:
        a = labels["alpha"]
        if a == "auto":
            cfg = replace(cfg, model=replace(cfg.model, alpha=None), balance=BalanceConfig(rule="grad-norm"))
        else:
            require(isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0,
                    f"axis alpha takes numbers >= 0 or 'auto', got {a!r}")
            cfg = replace(cfg, model=replace(cfg.model, alpha=float(a)))
    if "epochs" in labels:
        e = labels["epochs"]
        require(isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0,
                f"axis epochs takes positive numbers, got {e!r}")
        cfg = replace(cfg, optim=replace(cfg.optim, epochs=float(e), steps=None))
    if "adapter" in labels:
        cfg = replace(cfg, model=replace(cfg.model, adapter=str(labels["adapter"])))
    if "batch" in labels:
        b = labels["batch"]
        require(isinstance(b, int) and not isinstance(b, bool) and b > 0, f"axis batch takes positive integers, got {b!r}")
        cfg = replace(cfg, optim=replace(cfg.optim, batch_size=b))
    return cfg


#: Seconds per test VQA question of a periodic evaluation, by understanding input, on one thread (measured on the
#: development machine: 300 questions in 1.0-1.7 s with 16 pooled SigLIP tokens, 8.6-10.4 s with 256 VQ tokens).
EVAL_SECONDS_PER_QUESTION = {"siglip": 0.005, "vq": 0.032}
#: Seconds a run spends outside training steps and evaluations (process start, imports, model build, checkpoints).
RUN_START_SECONDS = 10.0


def estimate_minutes(runs: list[PlannedRun], preset: Preset, workers: int) -> float:
    """Wall minutes on ``workers`` single-thread processes, from the preset's measured training speeds."""
    rate_s = preset.samples_per_s.get("siglip", 0.0)  # presets measured on no machine here have no rates
    rate_v = preset.samples_per_s.get("vq", 0.0)
    if not rate_s or not rate_v:
        return float("nan")
    costs = []
    for r in runs:
        c = r.config
        t = c.data.train
        und = (t.n_vqa + t.n_caption) if c.mode != "generation" else 0
        gen = t.n_generation if c.mode != "understanding" else 0
        u_rate = rate_v if c.vision.understanding == "vq" else rate_s
        g_rate = rate_v if c.vision.generation == "vq" else rate_s
        ep = c.optim.epochs if c.optim.steps is None else c.optim.steps * c.optim.batch_size / max(1, und + gen)
        und, gen = und * ep, gen * ep
        steps = max(1, int(und + gen) // c.optim.batch_size)
        evals = math.ceil(steps / c.eval.every) if c.eval.every else 1
        per_question = EVAL_SECONDS_PER_QUESTION["vq" if c.vision.understanding == "vq" else "siglip"]
        questions = (evals - 1) * c.eval.questions + (c.eval.final_questions or c.eval.questions)
        secs = RUN_START_SECONDS + und / u_rate + gen / g_rate + questions * per_question
        secs += r.evaluate.get("generation", 0) * (0.2 if c.vision.generation == "vq" else 0.05)
        costs.append(secs)
    slots = [0.0] * max(1, workers)
    for s in sorted(costs, reverse=True):
        slots[slots.index(min(slots))] += s
    return max(slots) / 60.0


__all__ = ["Recipe", "Preset", "PlannedRun", "load_recipe", "load_preset", "recipe_names",
           "preset_names", "expand", "estimate_minutes", "config_id", "AXES", "UNBIASED_VQA_SHARE"]
