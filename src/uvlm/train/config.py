"""Typed configuration of a training run, its JSON form, and the paper's named variants.

A :class:`RunConfig` says everything a run needs: the data (a registered dataset and its train and test splits), the vision sources
(understanding encoder kind, generation target kind), the model (:class:`~uvlm.model.config.UnifiedConfig`), the
training mode, the optimiser, LoRA, evaluation, logging, checkpoints and runtime settings. It round-trips through
JSON (``to_dict`` / ``from_dict``; unknown keys are errors), and :func:`variant_config` builds the paper's models by
name (``SigLIP-SigLIP``, ``VQ_u``, ``VQ*-VQ-D`` ...).

The model's tensor shapes (``input_dim``, ``target_dim``, ``num_output_tokens``) are not chosen by the user: they come
from the vision sources when the run starts (:func:`resolve_model_config`), and the run folder's ``config.json``
records the resolved values.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from uvlm.data.config import SplitConfig
from uvlm.data.datasets import DATASETS, DEFAULT_DATASET, dataset_class, dataset_of_config
from uvlm.errors import UserError, check_keys, check_types, require
from uvlm.model.config import ENCODER_NAMES, ENCODERS, LLMConfig, UnifiedConfig

#: Training modes: ``mixed`` (understanding + generation samples), ``understanding`` (VQA + caption only, the
#: ``_u`` models), ``generation`` (generation only, the ``_g`` models).
MODES: tuple[str, ...] = ("mixed", "understanding", "generation")

#: Vision source kinds for the understanding input (the model's understanding encoders). Generation targets are the
#: registered target classes (:func:`uvlm.model.targets.target_names`).
UNDERSTANDING_KINDS: tuple[str, ...] = ENCODERS

#: Learning-rate schedules (``transformers.get_scheduler`` names).
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant_with_warmup")

#: LLM linear layers LoRA adapts by default (every linear layer of a Llama block, as in the paper).
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


#: Upper bounds of the sizes a config may ask for: beyond them a run cannot fit in any memory (or would never end), so
#: the value is a typo. A bound is checked when the config is read, before anything is built.
MAX_THREADS = 256
MAX_STEPS = 10**9
MAX_BATCH = 10**6
MAX_EPOCHS = 10_000
MAX_LORA_RANK = 65_536
MAX_QUESTIONS = 10**7
MAX_POOL = 64


def _positive_int(name: str, v: Any, allow_zero: bool = False, maximum: int | None = None) -> None:
    ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    if maximum is None:
        require(ok, f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    else:
        require(ok and v <= maximum, f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer (at "
                                     f"most {maximum:,}), got {v!r}")


def _number(name: str, v: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    """``v`` is a finite number in the interval (inclusive unless ``*_open``)."""
    import math

    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    require(ok, f"{name} must be a number in {interval}, got {v!r}")


@dataclass(frozen=True)
class DataConfig:
    """The dataset and its train and test splits (SmartWatch by default). Each vision source reads the images at its
    own resolution (an image does not depend on the resolution otherwise, so every resolution shows the same watch or
    face); ``resolution`` in these splits is replaced by the source's at run time and the resolved ``config.json``
    records it."""

    dataset: str = DEFAULT_DATASET
    """The registered dataset (:data:`uvlm.data.datasets.DATASETS`): ``smartwatch``. The splits are its split
    configs. Left out of the JSON form when it is the default (run ids unchanged)."""
    train: Any = field(default_factory=lambda: SplitConfig.train())
    """The training split (60K VQA + 60K caption + 60K generation by default; may carry a ``bias``)."""
    test: Any = field(default_factory=lambda: SplitConfig.test())
    """The test split (1,000 single-question VQA + 500 generation samples, on their own images)."""
    feature_chunk: int = 2048
    """Images per file of the on-disk feature cache (part of the cache key; small values suit tiny test runs)."""

    def __post_init__(self) -> None:
        require(isinstance(self.dataset, str) and self.dataset in DATASETS,
                f"unknown data.dataset {self.dataset!r}: use one of {', '.join(DATASETS)}")
        for k in ("train", "test"):
            split = getattr(self, k)
            require(dataset_of_config(split) == self.dataset,
                    f"data.{k} is a {dataset_of_config(split)} split but data.dataset is {self.dataset!r}: give "
                    f"{self.dataset} splits or change data.dataset")
        _positive_int("data.feature_chunk", self.feature_chunk, maximum=10**7)

    @property
    def dataset_class(self) -> type:
        return dataset_class(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        d = {"train": self.train.to_dict(), "test": self.test.to_dict(), "feature_chunk": self.feature_chunk}
        return d if self.dataset == DEFAULT_DATASET else {"dataset": self.dataset, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataConfig":
        check_types(cls, d, "data")
        d = dict(d)
        name = d.get("dataset", DEFAULT_DATASET)
        require(name in DATASETS, f"unknown data.dataset {name!r}: use one of {', '.join(DATASETS)}")
        ds = dataset_class(name)
        if ds.name != DEFAULT_DATASET:
            missing = [k for k in ("train", "test") if k not in d]
            require(not missing, f"data.dataset {ds.name!r} needs data.{' and data.'.join(missing)}: give both "
                                 f"splits (they name the dataset's files)")
        for k in ("train", "test"):
            if k in d:
                check_keys(ds.config_class, d[k], f"data.{k}")
                d[k] = ds.config_from_dict(d[k])
        return cls(**d)


@dataclass(frozen=True)
class VisionConfig:
    """Which frozen vision models feed the LLM and define the generation target."""

    understanding: str = "siglip"
    """Understanding encoder kind, one of :data:`UNDERSTANDING_KINDS`."""
    generation: str | None = "siglip"
    """The generation target, ``None`` for an understanding-only model: always ``model.target``, which
    :class:`RunConfig` copies here (the JSON form keeps the key; a config file that gives both must agree)."""
    source: str = "tiny"
    """``tiny`` (the small towers trained here and cached) or a local folder of full-scale checkpoints; passed to
    :func:`uvlm.vision.presets.vision_source`."""
    siglip_source: str | None = None
    """Overrides ``source`` for the SigLIP tower (a local Hugging Face SigLIP folder), e.g. in SigLIP-VQ models."""
    vq_source: str | None = None
    """Overrides ``source`` for the VQ tokenizer (LlamaGen's ``vq_ds16_*.pt`` or a uvlm ``vq`` folder)."""
    pool: int = 1
    """Average-pool the SigLIP patch grid ``pool x pool`` before the LLM, for understanding inputs and generation
    targets alike (2: the tiny tower's 64 tokens become 16). VQ code grids are never pooled. 1: off (the paper)."""
    sources: dict[str, str] = field(default_factory=dict, hash=False)
    """Sources of the other vision-source kinds that generation targets bring (``{"kl-vae": "tiny"}`` or a local
    checkpoint file); such a kind without an entry is ``tiny`` when ``source`` is. Left out of the JSON form when
    empty."""

    def source_for(self, kind: str) -> str | None:
        """The source of one vision-source kind: its own override, else ``source`` (for a kind outside the
        understanding encoders only when ``source`` is ``tiny``); ``None``: none configured."""
        own = {"siglip": self.siglip_source, "vq": self.vq_source}.get(kind) or self.sources.get(kind)
        if own:
            return own
        return self.source if kind in UNDERSTANDING_KINDS or self.source == "tiny" else None

    def __post_init__(self) -> None:
        require(self.understanding in UNDERSTANDING_KINDS,
                f"unknown understanding encoder {self.understanding!r}: use one of {', '.join(UNDERSTANDING_KINDS)}")
        require(self.generation is None or isinstance(self.generation, str),
                f"vision.generation must be a target name or null, got {self.generation!r}")
        require(isinstance(self.source, str) and self.source != "", "vision.source must be 'tiny' or a local folder")
        _positive_int("vision.pool", self.pool, maximum=MAX_POOL)
        require(isinstance(self.sources, dict) and all(isinstance(k, str) and isinstance(v, str) and v
                                                       for k, v in self.sources.items()),
                f"vision.sources must map source kinds to non-empty source names, got {self.sources!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["sources"]:
            del d["sources"]  # runs without further sources keep their form (and their run ids)
        return d


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser (AdamW), its schedule and the batch."""

    batch_size: int = 32
    """Global batch: samples per optimiser step, summed over processes and accumulation steps (paper: 393)."""
    grad_accumulation: int = 1
    """Micro-batches per optimiser step on each process; ``batch_size`` must divide by processes x this."""
    steps: int | None = None
    """Optimiser steps; ``None``: ``epochs`` passes over the training samples (the last partial batch is dropped)."""
    epochs: float = 1.0
    """Passes over the training samples when ``steps`` is ``None`` (paper: one epoch)."""
    lr_llm: float = 1e-3
    """Peak learning rate of the LLM parameters (LoRA weights when LoRA is on). Paper, with LoRA: 2e-4. The CPU default
    trains a tiny Llama from scratch, which takes a higher rate."""
    lr_vision: float = 1e-3
    """Peak learning rate of the adapters and the generation head (paper: 1e-4)."""
    weight_decay: float = 0.0
    """AdamW weight decay of parameters with 2+ dimensions (biases and norms never decay). LLaVA: 0."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_ratio: float = 0.03
    """Linear warmup over this fraction of the steps (at least one step when above 0). LLaVA-1.5: 0.03."""
    schedule: str = "cosine"
    """Learning-rate schedule after warmup, one of :data:`SCHEDULES`."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (``None``: no clipping)."""

    def __post_init__(self) -> None:
        _positive_int("optim.batch_size", self.batch_size, maximum=MAX_BATCH)
        _positive_int("optim.grad_accumulation", self.grad_accumulation, maximum=MAX_BATCH)
        if self.steps is not None:
            _positive_int("optim.steps", self.steps, maximum=MAX_STEPS)
        _number("optim.epochs", self.epochs, 0, MAX_EPOCHS, lo_open=True)
        for n in ("lr_llm", "lr_vision"):
            _number(f"optim.{n}", getattr(self, n), 0, 10)
        _number("optim.weight_decay", self.weight_decay, 0, 100)
        _number("optim.warmup_ratio", self.warmup_ratio, 0, 1, hi_open=True)
        require(isinstance(self.betas, tuple) and len(self.betas) == 2,
                f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        for b in self.betas:
            _number("optim.betas", b, 0, 1, hi_open=True)
        require(isinstance(self.schedule, str) and self.schedule in SCHEDULES,
                f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.max_grad_norm is not None:
            _number("optim.max_grad_norm", self.max_grad_norm, 0, 1e12, lo_open=True)


#: Loss-balance rules: ``fixed`` (``loss = text + alpha x vision``, the paper) or ``grad-norm`` (alpha rescaled so
#: that the two losses' gradients on the LLM's decoder blocks have equal running norms).
BALANCE_RULES: tuple[str, ...] = ("fixed", "grad-norm")


@dataclass(frozen=True)
class BalanceConfig:
    """How the text and vision losses of a mixed run are weighed against each other.

    ``fixed`` keeps ``model.alpha`` (the paper's rule). ``grad-norm`` is the automatic balance, fixed before any result
    was seen: every ``every`` optimiser steps (and at the first), the step's text loss and vision loss are
    backpropagated separately; the norms of their gradients on the LLM's decoder blocks (the transformer layers: the
    weights both tasks share; not the embeddings, the LM head or the final norm, which only the text loss reaches)
    update running means (``momentum``, bias-corrected); the vision loss is then weighted by
    ``alpha x mean_text / mean_vision`` (clipped to ``[1 / max_scale, max_scale]`` times alpha). The measuring step
    trains like any other (its gradient is the same sum); it costs one more backward pass."""

    rule: str = "fixed"
    """One of :data:`BALANCE_RULES`."""
    every: int = 10
    """Measure the gradient norms every this many optimiser steps (``grad-norm``)."""
    momentum: float = 0.9
    """Running-mean momentum of the measured norms (``grad-norm``)."""
    max_scale: float = 1000.0
    """Bound on the factor applied to alpha (``grad-norm``)."""

    def __post_init__(self) -> None:
        require(self.rule in BALANCE_RULES, f"unknown balance rule {self.rule!r}: use one of {', '.join(BALANCE_RULES)}")
        _positive_int("balance.every", self.every, maximum=MAX_STEPS)
        require(isinstance(self.momentum, (int, float)) and not isinstance(self.momentum, bool)
                and 0 <= self.momentum < 1, f"balance.momentum must be in [0, 1), got {self.momentum!r}")
        require(isinstance(self.max_scale, (int, float)) and not isinstance(self.max_scale, bool)
                and self.max_scale >= 1, f"balance.max_scale must be >= 1, got {self.max_scale!r}")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adaptation of the LLM with ``peft`` (the paper's setting). Off by default: the CPU default trains a
    tiny LLM fully. When on, only the LoRA weights, the adapters, the generation head and the embedding rows of the
    new vision tokens (``<image>``, ``<boi>``, ``<eoi>``) train."""

    enabled: bool = False
    """Wrap the LLM with LoRA."""
    r: int = 128
    """LoRA rank (paper: 128)."""
    alpha: int = 256
    """LoRA alpha (paper: 256)."""
    dropout: float = 0.05
    """Dropout on the LoRA input (LLaVA-1.5: 0.05)."""
    target_modules: tuple[str, ...] = LORA_TARGETS
    """Names of the LLM's linear layers to adapt."""
    train_new_tokens: bool = True
    """Also train the embedding rows of the added vision tokens (``peft``'s ``trainable_token_indices``)."""

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), f"lora.enabled must be true or false, got {self.enabled!r}")
        _positive_int("lora.r", self.r, maximum=MAX_LORA_RANK)
        _number("lora.alpha", self.alpha, 0, 1e9, lo_open=True)
        _number("lora.dropout", self.dropout, 0, 1, hi_open=True)
        require(isinstance(self.target_modules, tuple) and len(self.target_modules) > 0
                and all(isinstance(m, str) and m for m in self.target_modules),
                "lora.target_modules must be a non-empty list of module names such as q_proj")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic VQA evaluation on the test split (the paper's curves are over training)."""

    every: int = 0
    """Evaluate every this many ``unit``s (0: only at the end)."""
    unit: str = "steps"
    """``steps`` (optimiser steps) or ``samples`` (training samples seen)."""
    questions: int = 200
    """How many test VQA questions (the first ones of the test split; paper: 1,000)."""
    at_end: bool = True
    """Evaluate after the last step."""
    final_questions: int | None = None
    """Questions of the evaluation after the last step (``None``: ``questions``; the paper's figure: 1,000). More
    questions at the end than along the curve buy a precise final score cheaply."""
    batch_size: int = 64
    """Questions answered per forward pass."""
    max_new_tokens: int = 16
    """Answer length limit in tokens (SmartWatch answers are a few tokens)."""

    def __post_init__(self) -> None:
        _positive_int("eval.every", self.every, allow_zero=True, maximum=10**12)
        require(self.unit in ("steps", "samples"), f"eval.unit must be steps or samples, got {self.unit!r}")
        _positive_int("eval.questions", self.questions, allow_zero=True, maximum=MAX_QUESTIONS)
        if self.final_questions is not None:
            _positive_int("eval.final_questions", self.final_questions, maximum=MAX_QUESTIONS)
        _positive_int("eval.batch_size", self.batch_size, maximum=MAX_BATCH)
        _positive_int("eval.max_new_tokens", self.max_new_tokens, maximum=4096)


@dataclass(frozen=True)
class LogConfig:
    """Console, ``metrics.jsonl`` and TensorBoard logging."""

    interval: int = 10
    """Log every this many optimiser steps (and after the last one)."""
    tensorboard: bool = True
    """Also write TensorBoard events to ``OUT/tensorboard`` (when ``tensorboard`` is installed)."""

    def __post_init__(self) -> None:
        _positive_int("log.interval", self.interval)


@dataclass(frozen=True)
class CheckpointConfig:
    """When to write checkpoints (``OUT/checkpoints/step-NNNNNN``)."""

    every: int = 0
    """Save every this many optimiser steps (0: only at the end)."""
    at_end: bool = True
    """Save after the last step."""
    keep: int | None = None
    """Keep only the newest this many checkpoints (``None``: keep all, e.g. to draw curves later)."""

    def __post_init__(self) -> None:
        _positive_int("checkpoint.every", self.every, allow_zero=True, maximum=MAX_STEPS)
        if self.keep is not None:
            _positive_int("checkpoint.keep", self.keep, maximum=MAX_STEPS)


@dataclass(frozen=True)
class RuntimeConfig:
    """Hardware settings; they do not change the numbers (beyond float rounding)."""

    threads: int = 1
    """``torch.set_num_threads`` on CPU. One thread per process is fastest here: run experiments in parallel
    processes instead."""
    device: str = "auto"
    """``auto`` (GPU if available), ``cpu`` or ``cuda``."""
    mixed_precision: str = "auto"
    """``auto`` (bf16 on a GPU that supports it, off on CPU where it is slower), ``no``, ``bf16`` or ``fp16``."""
    length_groups: int = 1
    """Sort each micro-batch by sequence length and run it as this many forward/backward passes of similar length:
    less padding, the same gradient up to float rounding (the loss is token-weighted over the global batch). On the
    CPU default (sequences of 28-85 positions) 4 groups make a step ~20% faster; on a GPU, 1 keeps kernels large."""

    def __post_init__(self) -> None:
        _positive_int("runtime.threads", self.threads, maximum=MAX_THREADS)
        _positive_int("runtime.length_groups", self.length_groups, maximum=MAX_BATCH)
        require(self.device in ("auto", "cpu", "cuda"), f"runtime.device must be auto, cpu or cuda, got {self.device!r}")
        require(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
                f"runtime.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")


@dataclass(frozen=True)
class RunConfig:
    """One training run. ``uvlm train --config FILE.json`` reads this as JSON (see :meth:`to_dict`)."""

    variant: str = "SigLIP-SigLIP"
    """The paper's name of the model (informational; :func:`variant_config` sets the fields it implies)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Train and test splits."""
    vision: VisionConfig = field(default_factory=VisionConfig)
    """Vision sources."""
    model: UnifiedConfig = field(default_factory=lambda: UnifiedConfig(target_dim=768))
    """The unified VLM. ``encoder``/``target`` must match ``vision``; the tensor sizes are filled in from the vision
    sources at run time."""
    mode: str = "mixed"
    """One of :data:`MODES`: which samples train (``mixed`` both, ``understanding`` VQA + caption, ``generation``
    generation only)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and batch."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA (off by default)."""
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    """How the text and vision losses are weighed (``fixed``: ``model.alpha``, the paper)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Periodic evaluation."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Hardware settings."""
    seed: int = 0
    """Seed of the data order and of every random draw during training (dropout)."""
    out_dir: str | None = None
    """The run folder (``None``: ``runs/<variant>-seed<seed>``)."""

    def __post_init__(self) -> None:
        require(self.mode in MODES, f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        _positive_int("seed", self.seed, allow_zero=True, maximum=2**32 - 1)
        require(self.model.encoder == self.vision.understanding,
                f"model.encoder {self.model.encoder!r} differs from vision.understanding "
                f"{self.vision.understanding!r}: set both to the same kind (or use --variant)")
        if self.vision.generation != self.model.target:  # derived: the model's target names the generation side
            object.__setattr__(self, "vision", replace(self.vision, generation=self.model.target))
        target = self.model.target_class()
        if target is not None and target.source_kind is not None:
            kind = target.source_kind
            require(self.vision.source_for(kind) is not None,
                    f"the {self.model.target} target needs a {kind} source and none is configured for vision.source "
                    f"{self.vision.source!r}: set vision.sources {{\"{kind}\": \"tiny\" or a local checkpoint}}")
        require(self.mode == "understanding" or self.model.target is not None,
                f"mode {self.mode!r} trains generation but the model has no generation target: use mode "
                f"'understanding' or set vision.generation")
        if self.mode == "understanding":
            require(self.data.train.n_vqa + self.data.train.n_caption > 0,
                    "mode 'understanding' needs VQA or caption samples: set data.train.n_vqa / n_caption")
        require(self.balance.rule == "fixed" or self.mode == "mixed",
                f"balance.rule {self.balance.rule!r} weighs two losses but mode {self.mode!r} trains one: use "
                f"balance.rule fixed")
        require(self.balance.rule == "fixed" or self.model.alpha is None or self.model.alpha > 0,
                "balance.rule grad-norm rescales alpha, which is 0: set model.alpha > 0 (or null) or use rule fixed")
        if self.mode == "generation":
            require(self.data.train.n_generation > 0,
                    "mode 'generation' needs generation samples: set data.train.n_generation")

    # ----- JSON ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["data"] = self.data.to_dict()
        d["model"] = self.model.to_dict()
        d["vision"] = self.vision.to_dict()
        for k in ("optim", "lora", "balance", "eval", "log", "checkpoint", "runtime"):
            d[k] = asdict(d[k])
        return _jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Build from a (possibly partial) dict: missing keys keep their defaults, unknown keys are errors."""
        check_types(cls, d, "run config", prefix="")
        if "variant" in d:
            parse_variant(d["variant"])  # a name of the registry, else a UserError listing them
        d = dict(d)
        _derive_generation(d)
        sub = {"vision": VisionConfig, "optim": OptimConfig, "lora": LoRAConfig, "balance": BalanceConfig,
               "eval": EvalConfig,
               "log": LogConfig, "checkpoint": CheckpointConfig, "runtime": RuntimeConfig}
        for k, c in sub.items():
            if k in d:
                check_types(c, d[k], k)
                v = dict(d[k])
                for f in fields(c):  # JSON lists back to tuples
                    if f.name in v and isinstance(v[f.name], list):
                        v[f.name] = tuple(v[f.name])
                d[k] = c(**v)
        if "data" in d:
            d["data"] = DataConfig.from_dict(d["data"])
        if "model" in d:
            m = d["model"]
            check_keys(UnifiedConfig, m, "model")
            d["model"] = UnifiedConfig.from_dict(m)
        try:
            return cls(**d)
        except TypeError as e:  # a wrong type that the checks above did not catch
            raise UserError(f"bad run config: {e}") from None

    def with_(self, **kw: Any) -> "RunConfig":
        return replace(self, **kw)

    @property
    def default_out_dir(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "", self.variant.replace("*", "star")) or "run"
        return self.out_dir or f"runs/{safe}-seed{self.seed}"


def _derive_generation(d: dict[str, Any]) -> None:
    """``vision.generation`` of a JSON run config follows ``model.target`` (given alone, it sets ``model.target``;
    given both, they must agree)."""
    vision, model = d.get("vision"), d.get("model")
    gen_given = isinstance(vision, dict) and "generation" in vision
    target_given = isinstance(model, dict) and "target" in model
    if gen_given and target_given:
        require(vision["generation"] == model["target"],
                f"model.target {model['target']!r} differs from vision.generation {vision['generation']!r}: set both "
                f"to the same kind, or only model.target (or use --variant)")
    elif gen_given:
        d["model"] = {**(model if isinstance(model, dict) else {}), "target": vision["generation"]}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x):
        return _jsonable(asdict(x))
    return x


# ----- named variants ------------------------------------------------------------------------------------------------
def _targets() -> list[type]:
    from uvlm.model.targets import TARGETS, target_names

    return [TARGETS[n] for n in target_names()]


def _kinds() -> dict[str, str]:
    """Lower-case name part -> encoder or target name (``llmembeds`` -> ``llm-embeds``)."""
    kinds = {name.lower(): kind for kind, name in ENCODER_NAMES.items()}
    for t in _targets():
        kinds.setdefault(t.display.lower(), t.name)
    return kinds


def variant_names() -> list[str]:
    """Every name :func:`variant_config` accepts, in a readable order: per encoder (plain and ``*``), each target
    (with its ``-D`` form when it lives in an encoder's space), then ``_u``; last the ``_g`` models of the targets in
    an encoder's space."""
    names = []
    targets = _targets()
    for enc in ENCODER_NAMES.values():
        for star in ("", "*"):
            for t in targets:
                names.append(f"{enc}{star}-{t.display}")
                if t.shares_encoder_space():
                    names.append(f"{enc}{star}-{t.display}-D")
            names.append(f"{enc}{star}_u")
    names += [f"{t.display}_g" for t in targets if t.shares_encoder_space()]
    return names


def parse_variant(name: str) -> dict[str, Any]:
    """``name`` -> ``{encoder, target, mode, detach, affine}``; an unknown name is a :class:`UserError` listing all."""
    canon = {n.lower(): n for n in variant_names()}
    key = str(name).strip().lower()
    if key not in canon:
        raise UserError(f"unknown variant {name!r}: use one of {', '.join(variant_names())}")
    kinds = _kinds()
    n = canon[key].lower()
    if n.endswith("_g"):
        kind = kinds[n[:-2]]
        return dict(name=canon[key], encoder=kind, target=kind, mode="generation", detach=False, affine=False)
    if n.endswith("_u"):
        enc = n[:-2]
        return dict(name=canon[key], encoder=kinds[enc.rstrip("*")], target=None, mode="understanding",
                    detach=False, affine=enc.endswith("*"))
    detach = n.endswith("-d")
    if detach:
        n = n[:-2]
    enc, tgt = n.split("-", 1)
    return dict(name=canon[key], encoder=kinds[enc.rstrip("*")], target=kinds[tgt], mode="mixed", detach=detach,
                affine=enc.endswith("*"))


def variant_config(name: str, base: RunConfig | None = None) -> RunConfig:
    """The paper's model ``name`` (see :func:`variant_names`) on top of ``base`` (default :class:`RunConfig`).

    Sets ``variant``, ``mode``, ``vision.understanding`` / ``vision.generation`` and ``model.encoder`` / ``target`` /
    ``detach`` / ``affine``; keeps everything else of ``base`` (sizes, optimiser, data ...). ``_g`` models use the
    target's own space as their (unused) understanding encoder, so the generation feedback shares the adapter as in
    the matching unified model.
    """
    base = base or RunConfig()
    v = parse_variant(name)
    model = replace(base.model, encoder=v["encoder"], target=v["target"], detach=v["detach"], affine=v["affine"])
    if v["target"] is None:  # no vision loss to weigh: an understanding-only config does not depend on alpha
        model = replace(model, alpha=None)
    vision = replace(base.vision, understanding=v["encoder"])  # vision.generation follows model.target
    return replace(base, variant=v["name"], mode=v["mode"], vision=vision, model=model)


def paper_optim() -> tuple[OptimConfig, LoRAConfig]:
    """The paper's optimisation (appendix C): LoRA r128/alpha256, LLM lr 2e-4, adapters and head 1e-4, one epoch,
    global batch 393."""
    return (OptimConfig(batch_size=393, lr_llm=2e-4, lr_vision=1e-4, epochs=1.0),
            LoRAConfig(enabled=True, r=128, alpha=256))


def resolve_model_config(config: RunConfig, und_source, gen_source) -> UnifiedConfig:
    """Fill the model's tensor sizes from the vision sources: ``input_dim`` from the understanding source, and what
    the target takes from its source (:meth:`uvlm.model.targets.Target.model_sizes`: ``num_output_tokens``, and
    ``target_dim`` where it has one)."""
    m = config.model
    require(und_source.kind == m.encoder,
            f"the understanding source is {und_source.kind!r} but model.encoder is {m.encoder!r}")
    kw: dict[str, Any] = dict(input_dim=int(und_source.input_dim))
    target = m.target_class()
    if target is not None:
        src = und_source if target.source_kind is None else gen_source
        require(src is not None, "the model has a generation target but no generation source was given")
        sizes = dict(target.model_sizes(und_source, src))
        if "target_options" in sizes:  # sizes a target records among its settings
            sizes["target_options"] = {**m.target_options, **sizes["target_options"]}
        kw.update(sizes)
    return replace(m, **kw)


__all__ = ["RunConfig", "DataConfig", "VisionConfig", "OptimConfig", "LoRAConfig", "BalanceConfig", "BALANCE_RULES", "EvalConfig", "LogConfig",
           "CheckpointConfig", "RuntimeConfig", "MODES", "variant_config", "variant_names", "parse_variant",
           "paper_optim", "resolve_model_config", "LLMConfig"]
