"""Training the LLaVA-1.5 extension the LLaVA way, in two stages (the paper's section 4.3), and loading the result.

- **Stage 1** (``stage=1``): the LLM and the vision tower are frozen; LLaVA's projector (the understanding adapter),
  the new generation adapter and the generation head train, on LLaVA's pretraining JSON (558K) plus reversed
  ShareGPT4V captions (paper: 150K).
- **Stage 2** (``stage=2``, ``init`` = a stage-1 run folder): the paper's text, "we unfreeze the vision encoder and
  update all other parameters", on LLaVA's instruction mix (665K) plus further reversed captions (paper: 200K,
  disjoint from stage 1's when both stages read the same caption file with the same ``generation_seed``). Full
  fine-tuning by default (the paper: no LoRA); ``lora.enabled`` adapts the LLM with ``peft`` LoRA instead.
  ``train_vision=False`` keeps the tower frozen, as LLaVA-1.5's own stage 2 does.

Optimisation defaults are LLaVA-1.5's scripts (:func:`stage_optim`): stage 1 lr 1e-3, global batch 256; stage 2 lr
2e-5, batch 128 (LoRA: 2e-4 for the LLM, 2e-5 for the rest); one epoch, 3% warmup, cosine, no weight decay.

The step is uvlm's: AdamW with the ``llm`` and ``vision`` groups (:func:`uvlm.train.loop.build_optimizer`), the
``transformers`` schedule, ``accelerate`` (CPU, GPU, bf16 on GPUs), the token-weighted loss over the global batch
(``text CE / N_text + alpha * vision loss / N_image``) and the seeded, evenly interleaved sample order of
:class:`uvlm.train.data.SampleOrder`. Images are read and encoded live (stage 2 trains the tower).

A run folder describes itself::

    OUT/llava_run.json          format, stage, the extension (base checkpoint, target), the stage config, the data
                                read (files, SHA-256, counts, the generation subset), the stage-1 run it started from
    OUT/tokenizer/              the tokenizer with the vision tokens
    OUT/image_processor/        LLaVA's image processor
    OUT/metrics.jsonl           one line per log interval
    OUT/checkpoints/latest
    OUT/checkpoints/step-NNNNNN/trainable.safetensors   the weights this stage trained (stage 1: projector,
                                generation adapter and head; stage 2: everything it trained)
                                adapter/                with LoRA, the LLM's adapter as peft writes it
                                state.json              step, data position, counts, file hashes

:func:`load_llava_run` rebuilds the model from the base checkpoint, then applies each stage's weights in order. Resume
of an interrupted stage is not implemented: a killed stage is started again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from uvlm.data.llava_json import (file_digest, generation_subsets, open_image, read_llava_json,
                                  read_reversed_captions)
from uvlm.errors import UserError, check_keys, check_types, require
from uvlm.io import atomic_path, read_json, write_json_atomic, write_text_atomic
from uvlm.model.llava import LlavaExtensionConfig, LlavaUnifiedVLM, build_llava_unified, generation_example, \
    understanding_example
from uvlm.train.config import LoRAConfig, OptimConfig, RuntimeConfig

FORMAT = "uvlm-llava-run"
META = "llava_run.json"

#: The paper's generation samples per stage (of ShareGPT4V-PT's 1.2M captions).
PAPER_GENERATION = {1: 150_000, 2: 200_000}


def stage_optim(stage: int, lora: bool = False) -> OptimConfig:
    """LLaVA-1.5's optimisation of a stage (``scripts/v1_5/pretrain.sh``, ``finetune.sh``, ``finetune_lora.sh``)."""
    if stage == 1:
        return OptimConfig(batch_size=256, lr_llm=1e-3, lr_vision=1e-3, epochs=1.0, warmup_ratio=0.03,
                           schedule="cosine", weight_decay=0.0, max_grad_norm=1.0)
    if lora:
        return OptimConfig(batch_size=128, lr_llm=2e-4, lr_vision=2e-5, epochs=1.0, warmup_ratio=0.03,
                           schedule="cosine", weight_decay=0.0, max_grad_norm=1.0)
    return OptimConfig(batch_size=128, lr_llm=2e-5, lr_vision=2e-5, epochs=1.0, warmup_ratio=0.03,
                       schedule="cosine", weight_decay=0.0, max_grad_norm=1.0)


@dataclass(frozen=True)
class LlavaDataConfig:
    """The local data of one stage."""

    understanding: str
    """LLaVA JSON: ``blip_laion_cc_sbu_558k.json`` (stage 1) or ``llava_v1_5_mix665k.json`` (stage 2)."""
    images: str | None = None
    """Folder the understanding records' ``image`` paths are relative to."""
    generation: str | None = None
    """ShareGPT4V-PT caption JSON, reversed into generation samples (``None``: understanding only)."""
    generation_images: str | None = None
    """Folder the caption records' images are relative to (default: ``images``)."""
    understanding_samples: int | None = None
    """Use only the first this many understanding records (``None``: all)."""
    generation_samples: int | None = None
    """Generation samples of this stage (``None``: the paper's, 150K in stage 1 and 200K in stage 2)."""
    generation_seed: int = 0
    """Seed of the permutation the stages' disjoint generation subsets are cut from."""

    def __post_init__(self) -> None:
        require(isinstance(self.understanding, str) and self.understanding,
                "the stage needs its understanding data: pass --understanding FILE.json")
        for name in ("understanding_samples", "generation_samples"):
            v = getattr(self, name)
            require(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
                    f"data.{name} must be a positive integer, got {v!r}")


@dataclass(frozen=True)
class LlavaStageConfig:
    """One stage of the LLaVA extension."""

    stage: int
    """1 or 2."""
    data: LlavaDataConfig
    extension: LlavaExtensionConfig | None = None
    """Stage 1: the base checkpoint and the target. Stage 2 takes its stage-1 run's (leave ``None``)."""
    init: str | None = None
    """Stage 2: the stage-1 run folder it starts from."""
    train_vision: bool = True
    """Stage 2: train the vision tower (the paper's text); ``False``: frozen, as in LLaVA-1.5's own recipe."""
    optim: OptimConfig | None = None
    """``None``: :func:`stage_optim` (LLaVA-1.5's)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """Stage 2 only: LoRA on the LLM instead of full fine-tuning."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    """Seed of the data order and of dropout."""
    log_interval: int = 10
    checkpoint_every: int = 0
    """Save every this many steps (0: only at the end)."""

    def __post_init__(self) -> None:
        require(self.stage in (1, 2), f"stage must be 1 or 2, got {self.stage!r}")
        if self.stage == 1:
            require(self.extension is not None, "stage 1 needs the LLaVA base checkpoint: pass --base DIR")
            require(self.init is None, "stage 1 starts from the base checkpoint: drop --init")
            require(not self.lora.enabled, "stage 1 freezes the LLM: LoRA applies to stage 2 only")
        else:
            require(self.init is not None, "stage 2 starts from a stage-1 run: pass --init STAGE1_RUN")
            require(self.extension is None, "stage 2 takes its base and target from the stage-1 run: drop --base, "
                                            "--target and --vq")
        require(isinstance(self.seed, int) and self.seed >= 0, f"seed must be a non-negative integer, got {self.seed!r}")
        require(isinstance(self.log_interval, int) and self.log_interval > 0, "log_interval must be positive")
        require(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0,
                "checkpoint_every must be a non-negative integer")

    @property
    def resolved_optim(self) -> OptimConfig:
        return self.optim if self.optim is not None else stage_optim(self.stage, self.lora.enabled)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["optim"] = self.resolved_optim
        return json.loads(json.dumps({k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                                      for k, v in d.items()}))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlavaStageConfig":
        check_keys(cls, d, "llava stage config")
        d = dict(d)
        require("stage" in d and "data" in d, "a llava stage config needs 'stage' and 'data'")
        check_keys(LlavaDataConfig, d["data"], "data")
        check_types(LlavaDataConfig, d["data"], "data", prefix="data.")
        d["data"] = LlavaDataConfig(**d["data"])
        if d.get("extension") is not None:
            d["extension"] = LlavaExtensionConfig.from_dict(d["extension"])
        for k, c in (("optim", OptimConfig), ("lora", LoRAConfig), ("runtime", RuntimeConfig)):
            if d.get(k) is not None:
                check_keys(c, d[k], k)
                check_types(c, d[k], k, prefix=f"{k}.")
                d[k] = c(**{n: tuple(v) if isinstance(v, list) else v for n, v in d[k].items()})
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"bad llava stage config: {e}") from None


# ----- which parameters train ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LoRAHolder:
    lora: LoRAConfig


def set_trainable(model: LlavaUnifiedVLM, stage: int, train_vision: bool = True,
                  lora: LoRAConfig | None = None) -> None:
    """Set ``requires_grad`` as the stage says (and wrap the LLM with LoRA in stage 2 when ``lora.enabled``)."""
    model.requires_grad_(False)
    if stage == 1:
        for part in (model.und_adapter, model.gen_adapter, model.target):
            if part is not None:
                part.requires_grad_(True)
        return
    model.requires_grad_(True)
    if model.target_tower is not None:
        model.target_tower.requires_grad_(False)
    if not train_vision:
        model.vision_tower.requires_grad_(False)
    for p in model.unused_tower_parameters():  # layers after the feature layer never get a gradient
        p.requires_grad_(False)
    if lora is not None and lora.enabled:
        from uvlm.train.build import apply_lora

        apply_lora(model, _LoRAHolder(lora))


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ----- run folders --------------------------------------------------------------------------------------------------
def read_run_meta(run_dir: str | os.PathLike, want_stage: int | None = None) -> dict[str, Any]:
    """``llava_run.json`` of a run folder; with ``want_stage``, a run of another stage is an error."""
    run_dir = Path(run_dir).expanduser()
    what = f"a stage-{want_stage} output" if want_stage else "a LLaVA extension run"
    require(run_dir.is_dir() and (run_dir / META).is_file(),
            f"{str(run_dir)!r} is not {what} (no {META}): pass the --out folder of 'uvlm llava train"
            f"{f' --stage {want_stage}' if want_stage else ''}'")
    meta = read_json(run_dir / META, "LLaVA run record", "train the stage again")
    require(isinstance(meta, dict) and meta.get("format") == FORMAT, f"{run_dir / META} is not a LLaVA run record")
    if want_stage is not None:
        require(meta.get("stage") == want_stage,
                f"{str(run_dir)!r} is a stage-{meta.get('stage')} run, not {what}: pass the --out folder of "
                f"'uvlm llava train --stage {want_stage}'")
    return meta


def _checkpoint(run_dir: Path, which=None) -> Path:
    from uvlm.train.checkpoint import find_checkpoint

    return find_checkpoint(run_dir, which)


def save_stage_checkpoint(out: Path, step: int, model, state: dict[str, Any], lora: bool) -> Path:
    """``checkpoints/step-NNNNNN`` with the trained weights (and peft's adapter under LoRA), written atomically."""
    from safetensors.torch import save_file

    from uvlm.io import sha256_file
    from uvlm.train.build import trainable_state
    from uvlm.train.checkpoint import CHECKPOINTS, LATEST, checkpoint_name

    root = out / CHECKPOINTS
    final = root / checkpoint_name(step)
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        if lora:
            model.llm.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        state = {**state, "step": step, "lora": lora, "files": {f: sha256_file(tmp / f) for f in files}}
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    write_text_atomic(root / LATEST, final.name + "\n")
    return final


def _load_stage_weights(run_dir: Path, which, model) -> Path:
    from uvlm.train.checkpoint import load_weights, read_state

    ckpt = _checkpoint(run_dir, which)
    read_state(ckpt)  # file hashes
    load_weights(ckpt, model, lora=True)  # exactly the trainable names of the stage, strictly
    return ckpt


@dataclass
class LlavaRun:
    """A trained stage, ready for inference."""

    model: LlavaUnifiedVLM
    vq: Any | None
    """The VQ source of a ``vq`` target (its decoder turns generated ids into pixels)."""
    meta: dict[str, Any]
    checkpoint: Path


def _chain(run_dir: Path, which) -> list[tuple[Path, Any, dict[str, Any]]]:
    """``[(run, checkpoint, meta)]`` from stage 1 to ``run_dir``."""
    meta = read_run_meta(run_dir)
    if meta["stage"] == 1:
        return [(run_dir, which, meta)]
    init = Path(meta["init"]["run"])
    return _chain(init, meta["init"]["checkpoint"]) + [(run_dir, which, meta)]


def load_llava_run(run_dir: str | os.PathLike, checkpoint: str | int | None = None) -> LlavaRun:
    """The model of a stage-1 or stage-2 run folder: the base checkpoint, then each stage's trained weights."""
    run_dir = Path(run_dir).expanduser()
    chain = _chain(run_dir, checkpoint)
    ext = LlavaExtensionConfig.from_dict(chain[0][2]["extension"])
    model, vq = build_llava_unified(ext)
    ckpt = run_dir
    for run, which, meta in chain:
        cfg = meta["config"]
        set_trainable(model, meta["stage"], cfg.get("train_vision", True),
                      LoRAConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["lora"].items()}))
        ckpt = _load_stage_weights(run, which, model)
    model.requires_grad_(False)
    model.eval()
    return LlavaRun(model, vq, chain[-1][2], ckpt)


# ----- data ---------------------------------------------------------------------------------------------------------
class StageData:
    """The stage's records, its generation subset, and items -> examples (images read and processed on demand)."""

    def __init__(self, config: LlavaStageConfig, ext: LlavaExtensionConfig, previous: dict[str, Any] | None):
        d = config.data
        self.model: LlavaUnifiedVLM | None = None
        self.vq = None
        self.records = read_llava_json(d.understanding, d.images)
        if d.understanding_samples is not None:
            require(d.understanding_samples <= len(self.records),
                    f"data.understanding_samples {d.understanding_samples:,} exceeds the {len(self.records):,} "
                    f"records of {d.understanding}: lower it")
            self.records = self.records[:d.understanding_samples]
        self.summary: dict[str, Any] = {
            "understanding": {"file": str(Path(d.understanding).expanduser().resolve()),
                              "sha256": file_digest(Path(d.understanding).expanduser()),
                              "count": len(self.records),
                              "with_image": sum(r.image is not None for r in self.records)}}
        self.captions, self.subset = [], []
        if d.generation is not None:
            require(ext.target is not None, "the model is understanding-only (no generation target) but "
                                              "generation data was given: drop --generation or pick a target")
            root = d.generation_images or d.images
            require(root is not None, "the caption records need their image folder: pass --generation-images")
            self.captions = read_reversed_captions(d.generation, root)
            digest = file_digest(Path(d.generation).expanduser())
            n = d.generation_samples or PAPER_GENERATION[config.stage]
            offset = 0
            prev = (previous or {}).get("generation")
            if prev and prev["sha256"] == digest and prev["seed"] == d.generation_seed:
                offset = prev["offset"] + prev["count"]  # after stage 1's subset: disjoint
            sizes = [offset, n] if offset else [n]
            self.subset = [int(i) for i in generation_subsets(len(self.captions), sizes, d.generation_seed)[-1]]
            self.summary["generation"] = {"file": str(Path(d.generation).expanduser().resolve()), "sha256": digest,
                                          "records": len(self.captions), "seed": d.generation_seed,
                                          "offset": offset, "count": n}
        else:
            require(ext.target is None, f"the {ext.name} model trains generation: pass --generation "
                                          f"(ShareGPT4V captions) or use --target none")

    def bind(self, model: LlavaUnifiedVLM, vq) -> None:
        """The model (and VQ source) the examples are built for."""
        self.model, self.vq = model, vq

    def items(self):
        return [("u", i) for i in range(len(self.records))], [("g", i) for i in self.subset]

    def examples(self, items) -> list:
        m = self.model
        und = [(k, self.records[i]) for k, (t, i) in enumerate(items) if t == "u"]
        gen = [(k, self.captions[i]) for k, (t, i) in enumerate(items) if t == "g"]
        out: dict[int, Any] = {}
        with_image = [(k, r) for k, r in und if r.image is not None]
        pixels = m.preprocess([open_image(r.image) for _, r in with_image]) if with_image else None
        px = {k: pixels[j] for j, (k, _) in enumerate(with_image)}
        for k, r in und:
            out[k] = understanding_example(m, list(r.turns), px.get(k))
        if gen:
            images = [open_image(r.image) for _, r in gen]
            if m.extension.target == "clip":
                targets = m.preprocess(images)
            else:
                targets = self._vq_ids(images)
            for j, (k, r) in enumerate(gen):
                out[k] = generation_example(m, r.caption, targets[j])
        return [out[k] for k in range(len(items))]

    def _vq_ids(self, images) -> torch.Tensor:
        from PIL import Image

        from uvlm.model.llava import expand_to_square

        r = int(self.vq.resolution)
        ims = [expand_to_square(im, (0.5, 0.5, 0.5)).resize((r, r), Image.Resampling.BICUBIC) for im in images]
        with torch.no_grad():
            return self.vq.to_targets(self.vq.encode_cached(ims))


# ----- training -----------------------------------------------------------------------------------------------------
def _check_out(out: Path) -> None:
    require(not out.is_file(), f"--out {str(out)!r} is a file: give a folder")
    require(not out.exists() or not any(out.iterdir()),
            f"--out {str(out)!r} exists and is not empty: choose a new folder (a stage is not resumed)")


def train_stage(config: LlavaStageConfig, out: str | os.PathLike, quiet: bool = False) -> dict[str, Any]:
    """Train one stage into the run folder ``out``; returns ``{"steps", "losses", "checkpoint", "trainable"}``."""
    from accelerate.utils import set_seed

    from uvlm.train.data import SampleOrder
    from uvlm.train.loop import build_optimizer, build_scheduler, make_accelerator
    from uvlm.train.metrics import MetricsLogger

    out = Path(out).expanduser()
    _check_out(out)
    previous = None
    if config.stage == 2:
        init_dir = Path(config.init).expanduser()
        init_meta = read_run_meta(init_dir, want_stage=1)
        ext = LlavaExtensionConfig.from_dict(init_meta["extension"])
        init_ckpt = _checkpoint(init_dir)
        previous = init_meta.get("data")
    else:
        ext = config.extension
    data = StageData(config, ext, previous)  # read (and check) the data before loading the model
    model, vq = build_llava_unified(ext)
    data.bind(model, vq)
    if config.stage == 2:
        set_trainable(model, 1)
        _load_stage_weights(init_dir, init_ckpt.name, model)
        if config.train_vision:
            model.freeze_target_tower()  # clip targets stay in the loaded tower's space
    set_trainable(model, config.stage, config.train_vision, config.lora)
    und_items, gen_items = data.items()
    order = SampleOrder(und_items, gen_items, config.seed)
    o = config.resolved_optim
    holder = replace(_Holder(), optim=o, runtime=config.runtime)
    if o.steps is not None:
        steps = o.steps
    else:
        steps = int(o.epochs * len(order)) // o.batch_size
        require(steps > 0, f"{o.epochs} epoch(s) of {len(order):,} samples make no full batch of {o.batch_size}: "
                           f"lower --batch-size or set --steps")
    accelerator = make_accelerator(holder)
    world, rank = accelerator.num_processes, accelerator.process_index
    require(o.batch_size % (world * o.grad_accumulation) == 0,
            f"optim.batch_size {o.batch_size} does not split into {world} process(es) x {o.grad_accumulation} "
            f"accumulation step(s): make it a multiple of {world * o.grad_accumulation}")
    micro = o.batch_size // (world * o.grad_accumulation)
    set_seed(config.seed, device_specific=True)
    optimizer = build_optimizer(model, holder)
    scheduler = build_scheduler(optimizer, holder, steps)
    trainable = trainable_names(model)

    main = accelerator.is_main_process
    meta = {"format": FORMAT, "stage": config.stage, "name": ext.name, "extension": ext.to_dict(),
            "config": config.to_dict(), "data": data.summary, "steps": steps,
            "init": ({"run": str(init_dir.resolve()), "checkpoint": init_ckpt.name} if config.stage == 2 else None),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / META, meta)
        with atomic_path(out / "tokenizer") as tmp:
            model.tokenizer.save_pretrained(str(tmp))
        with atomic_path(out / "image_processor") as tmp:
            model.image_processor.save_pretrained(str(tmp))
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    model.train()
    if unwrapped.target_tower is not None:
        unwrapped.target_tower.eval()
    logger = MetricsLogger(out, steps, 0, enabled=main, tensorboard=False, quiet=quiet)
    logger.echo(f"llava stage {config.stage} ({ext.name}): {steps} steps of {o.batch_size} samples "
                f"({len(und_items):,} understanding + {len(gen_items):,} generation samples per epoch), "
                f"{meta['trainable_parameters']:,} trainable parameters -> {out}")
    losses: list[float] = []
    position = 0
    counts = {"understanding_samples": 0, "generation_samples": 0}
    ckpt = None
    try:
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            items = order.take(position, o.batch_size)
            batches = []
            for a in range(o.grad_accumulation):
                lo = (a * world + rank) * micro
                part = items[lo:lo + micro]
                batches.append(unwrapped.sequences.collate(data.examples(part)).to(accelerator.device))
            n_local = torch.tensor([[b.num_answer_tokens, b.num_image_tokens] for b in batches], dtype=torch.float64)
            n_global = accelerator.reduce(n_local.sum(0).to(accelerator.device), reduction="sum").cpu()
            n_text, n_img = max(float(n_global[0]), 1.0), max(float(n_global[1]), 1.0)
            sums = torch.zeros(2, dtype=torch.float64)
            for a, batch in enumerate(batches):
                sync = a == len(batches) - 1
                with (contextlib.nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
                    res = model(batch)
                    w_text, w_img = float(n_local[a, 0]) / n_text, float(n_local[a, 1]) / n_img
                    accelerator.backward(res.text_loss * (w_text * world)
                                         + unwrapped.alpha * res.vision_loss * (w_img * world))
                sums += torch.tensor([res.text_loss.item() * w_text, res.vision_loss.item() * w_img],
                                     dtype=torch.float64)
            text_loss, vision_loss = (float(v) for v in accelerator.reduce(sums.to(accelerator.device),
                                                                           reduction="sum").cpu())
            loss = text_loss + unwrapped.alpha * vision_loss
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), o.max_grad_norm or float("inf"))
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            require(math.isfinite(loss) and math.isfinite(grad_norm),
                    f"training diverged at step {step} (loss {loss}, gradient norm {grad_norm}): lower the "
                    f"learning rates or raise the warmup")
            lr = {g["name"]: float(g["lr"]) for g in optimizer.param_groups}
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position += o.batch_size
            for t, _ in items:
                counts["understanding_samples" if t == "u" else "generation_samples"] += 1
            losses.append(loss)
            logger.advance(1, {"loss": f"{loss:.4f}"})
            if step % config.log_interval == 0 or step == steps:
                rec = {"kind": "train", "step": step, "position": position, "loss": loss, "text_loss": text_loss,
                       "vision_loss": vision_loss if unwrapped.target is not None else None,
                       "grad_norm": grad_norm, "lr": lr, "seconds": time.perf_counter() - t0, **counts}
                logger.write(rec)
                logger.echo(f"step {step}/{steps}: loss {loss:.4f} (text {text_loss:.4f}, vision "
                            f"{vision_loss:.4f}), grad norm {grad_norm:.3f}")
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == steps:
                if main:
                    state = {"step": step, "position": position, "counts": counts, "total_steps": steps,
                             "stage": config.stage, "trainable": trainable}
                    ckpt = save_stage_checkpoint(out, step, unwrapped, state, config.lora.enabled)
                    logger.echo(f"saved checkpoint {ckpt}")
                accelerator.wait_for_everyone()
    finally:
        logger.close()
    return {"steps": steps, "losses": losses, "checkpoint": ckpt, "trainable": trainable}


@dataclass(frozen=True)
class _Holder:
    """What :func:`~uvlm.train.loop.make_accelerator`, ``build_optimizer`` and ``build_scheduler`` read of a run."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


__all__ = ["FORMAT", "META", "PAPER_GENERATION", "stage_optim", "LlavaDataConfig", "LlavaStageConfig",
           "set_trainable", "trainable_names", "read_run_meta", "save_stage_checkpoint", "LlavaRun",
           "load_llava_run", "StageData", "train_stage"]
