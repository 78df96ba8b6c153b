"""The training loop: ``accelerate`` (CPU or GPU, DDP, mixed precision where it helps), exact resume, periodic
evaluation, atomic checkpoints.

One optimiser step consumes one *global batch* of ``optim.batch_size`` samples (consecutive in the seeded order,
:class:`~uvlm.train.data.SampleOrder`), split over ``processes x grad_accumulation`` micro-batches, each run as
``runtime.length_groups`` passes over length-sorted parts. Its loss is the token-weighted mean over the whole
global batch::

    loss = sum(text CE over every answer token) / N_text + alpha * sum(vision loss over every image token) / N_image

with ``N_text`` / ``N_image`` counted over the global batch (one small all-reduce). ``alpha`` is ``model.alpha``, or
under ``balance.rule = "grad-norm"`` the weight :class:`~uvlm.train.balance.LossBalance` sets from measured
decoder-block gradient norms. Each micro-batch backpropagates
its share of that sum, so the gradient does not depend on how the batch is split: 2 processes, or 1 process with 2
accumulation steps, follow the same trajectory as 1 process with the whole batch (up to float rounding).

Evaluation is given, not imported: ``train(..., evaluator=factory)`` calls ``factory(config, sources, out)`` once
the vision sources are built and then the returned ``evaluate(model, step, final)`` at each due evaluation
(:func:`uvlm.eval.vqa.vqa_evaluator` is the VQA score of the test split; the command line and the sweep runner pass
it). Without an evaluator the run trains and checkpoints but evaluates nothing.

Entry point: :func:`train`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from uvlm.errors import UserError, require
from uvlm.train.build import build_model, build_run_tokenizer
from uvlm.train.checkpoint import (check_model_config, find_checkpoint, latest_checkpoint, list_checkpoints,
                                   load_training_state, load_weights, read_state, remove_orphans, rng_state,
                                   save_checkpoint, set_rng_state, write_run_metadata)
from uvlm.train.balance import LossBalance, split_backward
from uvlm.train.config import RunConfig, resolve_model_config
from uvlm.train.data import Counts, TrainData, length_groups, load_sources, total_steps
from uvlm.train.metrics import MetricsLogger, format_line


class TrainingDiverged(UserError):
    """The loss or the gradient became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    out_dir: Path
    steps: int
    """Optimiser steps done in total (including before a resume)."""
    state: dict[str, Any]
    """The final training state (as in a checkpoint's ``state.json``, without file hashes)."""
    losses: list[float] = field(default_factory=list)
    """The loss of every step run by this call."""
    last_eval: dict[str, Any] | None = None
    """The last evaluation record (``metrics.jsonl`` ``eval`` line), if any."""


StepCallback = Callable[[int, dict[str, Any]], None]
"""``callback(step, record)`` after every optimiser step (after any log, evaluation and checkpoint of that step)."""

Evaluate = Callable[[Any, int, bool], dict[str, Any]]
"""``evaluate(model, step, final)`` -> a score report's ``to_dict()`` (``scores``, ``counts``, ``unparsed``, keyed
by metric columns with ``total`` among them), plus ``columns`` (the ones worth a console line) and ``predictions``
(the answers file, relative to the run folder)."""

EvaluatorFactory = Callable[[RunConfig, Any, Path], Evaluate]
"""``factory(config, sources, out)`` -> the run's :data:`Evaluate` (``config`` resolved, ``sources`` built)."""


def make_accelerator(config: RunConfig):
    """An ``Accelerator`` on CPU (gloo DDP under ``torchrun``) or GPU; mixed precision only on GPUs."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    rt = config.runtime
    cpu = rt.device == "cpu" or (rt.device == "auto" and not torch.cuda.is_available())
    require(cpu or torch.cuda.is_available(), "runtime.device is cuda but no GPU is available: use auto or cpu")
    mp = rt.mixed_precision
    if mp == "auto":
        mp = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    require(not (cpu and mp == "fp16"), "fp16 mixed precision needs a GPU: use runtime.mixed_precision no (bf16 is "
                                        "slower than fp32 on these CPUs)")
    if cpu:
        torch.set_num_threads(rt.threads)
    # find_unused_parameters: a micro-batch without generation rows does not touch the generation head
    return Accelerator(cpu=cpu, mixed_precision=mp,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def build_optimizer(model, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW with the groups ``llm`` (lr_llm) and ``vision`` (lr_vision: adapters + head), each split into decayed
    (2+ dims) and non-decayed parameters."""
    o = config.optim
    groups = []
    for name, params in model.parameter_groups().items():
        lr = o.lr_llm if name == "llm" else o.lr_vision
        for decay in (True, False):
            ps = [p for p in params if (p.ndim >= 2) == decay]
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": o.weight_decay if decay else 0.0,
                               "name": f"{name}{'' if decay else '_no_decay'}"})
    require(groups, "the model has no trainable parameters: check the LoRA settings")
    return torch.optim.AdamW(groups, lr=o.lr_llm, betas=tuple(o.betas), weight_decay=o.weight_decay)


def build_scheduler(optimizer, config: RunConfig, steps: int):
    """``transformers.get_scheduler``: linear warmup over ``warmup_ratio`` of the steps, then the schedule."""
    from transformers import get_scheduler

    o = config.optim
    warmup = math.ceil(o.warmup_ratio * steps) if o.warmup_ratio > 0 else 0
    return get_scheduler(o.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def train(config: RunConfig, out: str | Path | None = None, resume: bool = False, quiet: bool = False,
          callback: StepCallback | None = None, checkpoint: str | int | None = None,
          evaluator: EvaluatorFactory | None = None) -> TrainResult:
    """Train ``config`` into the run folder ``out`` (default ``config.default_out_dir``).

    With ``resume`` the run continues from the folder's latest checkpoint (the checkpoint must come from the same
    model config); the result equals that of an uninterrupted run. ``checkpoint`` (a step or ``step-NNNNNN``) resumes
    from that checkpoint instead, e.g. when the latest is damaged; later checkpoints are replaced as training reaches
    them again. Leftovers of killed checkpoint writes are removed once the checkpoint has loaded. Without ``resume``,
    a folder that already holds checkpoints is an error. ``quiet`` silences the console line and the progress bar
    (``metrics.jsonl`` is always written). ``evaluator`` builds the periodic evaluation (module docstring); without
    it nothing is evaluated.
    """
    from accelerate.utils import gather_object, set_seed

    out = Path(out or config.default_out_dir)
    accelerator = make_accelerator(config)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    o = config.optim
    require(o.batch_size % (world * o.grad_accumulation) == 0,
            f"optim.batch_size {o.batch_size} does not split into {world} process(es) x {o.grad_accumulation} "
            f"accumulation step(s): make it a multiple of {world * o.grad_accumulation}")
    micro = o.batch_size // (world * o.grad_accumulation)

    ckpt = None
    if resume:
        require((out / "config.json").is_file(), f"cannot resume: {str(out)!r} is not a run folder (no config.json)"
                                                 f": pass the --out folder of an earlier 'uvlm train'")
        if checkpoint is not None:
            ckpt = find_checkpoint(out, checkpoint)
        else:
            ckpt = latest_checkpoint(out)
            require(ckpt is not None, f"cannot resume: run {str(out)!r} has no complete checkpoint yet: start it "
                                      f"again without --resume (after removing the folder)")
    else:
        require(not list_checkpoints(out), f"run folder {str(out)!r} already has checkpoints: resume it with "
                                           f"--resume or choose another --out")

    # ----- model, data, optimiser ------------------------------------------------------------------------------------
    sources = load_sources(config)
    config = replace(config, model=resolve_model_config(config, sources.understanding, sources.generation),
                     out_dir=str(out))
    if resume:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)
    else:
        tokenizer = build_run_tokenizer(config)
    model = build_model(config, config.model, tokenizer, sources)
    data = TrainData(config, sources, model.sequences)
    evaluate = evaluator(config, sources, out) if evaluator is not None else None
    steps = total_steps(config, len(data.order))
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps)

    start, position, counts, best = 0, 0, Counts(), {}
    if resume:
        state = read_state(ckpt)
        check_model_config(state, config.model, config.lora.enabled, ckpt)
        load_weights(ckpt, model, config.lora.enabled)
        rng_states = load_training_state(ckpt, optimizer, scheduler)
        start, position = int(state["step"]), int(state["position"])
        counts, best = Counts(**state["counts"]), dict(state.get("best") or {})
        require(start <= steps, f"the checkpoint is at step {start}, beyond this run's {steps} steps: raise --steps")
        if main:
            remove_orphans(out)
    if main:
        write_run_metadata(out, config, tokenizer, sources)
    with accelerator.main_process_first():
        def progress(done: int, total: int) -> None:
            if main and not quiet:
                print(f"vision features of the training images: chunk {done}/{total}", file=sys.stderr, flush=True)
        data.prepare(progress)
    if resume:
        set_rng_state(rng_states[rank] if len(rng_states) == world else rng_states[0])
    else:
        set_seed(config.seed, device_specific=True)

    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    balance = LossBalance(config.balance, float(unwrapped.alpha), (state.get("balance") if resume else None))
    blocks = unwrapped.decoder_block_parameters() if balance.adaptive else []
    model.train()
    logger = MetricsLogger(out, steps, start, enabled=main, tensorboard=config.log.tensorboard, quiet=quiet)
    if start == 0:
        logger.echo(f"training {config.variant} ({config.mode}): {steps} steps of {o.batch_size} samples "
                    f"({len(data.order)} samples/epoch) on {world} process(es), "
                    f"{sum(p.numel() for p in unwrapped.parameters() if p.requires_grad):,} trainable parameters"
                    f" -> {out}")
    else:
        logger.echo(f"resuming {config.variant} at step {start}/{steps} from {ckpt}")

    losses: list[float] = []
    window = {"loss": 0.0, "text": 0.0, "vision": 0.0, "n": 0, "samples": 0, "tokens": 0, "time": 0.0}
    session = {"time": 0.0, "steps": 0}
    last_eval: dict[str, Any] | None = None
    record: dict[str, Any] = {}
    try:
        for step in range(start + 1, steps + 1):
            t0 = time.perf_counter()
            items = data.order.take(position, o.batch_size)
            batches, local = [], Counts()
            for a in range(o.grad_accumulation):
                lo = (a * world + rank) * micro
                examples, c = data.examples(items[lo:lo + micro])
                local.add(c)
                for group in length_groups(examples, config.runtime.length_groups):
                    batches.append(unwrapped.sequences.collate(group).to(accelerator.device))
            # global token counts of this step (the denominators of the loss)
            n_local = torch.tensor([[b.num_answer_tokens, b.num_image_tokens] for b in batches], dtype=torch.float64)
            n_global = accelerator.reduce(n_local.sum(0).to(accelerator.device), reduction="sum").cpu()
            n_text, n_img = max(float(n_global[0]), 1.0), max(float(n_global[1]), 1.0)
            sums = torch.zeros(2, dtype=torch.float64)
            alpha = balance.weight()  # the vision-loss weight of this step
            measure = balance.due(step)  # backpropagate the two losses apart to measure their gradients
            split = torch.zeros(2, dtype=torch.float64)
            g_text = g_vision = None
            for a, batch in enumerate(batches):
                # a measuring step under DDP accumulates local gradients and all-reduces them by hand below
                sync = a == len(batches) - 1 and not (measure and world > 1)
                with (contextlib.nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
                    res = model(batch)
                    w_text, w_img = float(n_local[a, 0]) / n_text, float(n_local[a, 1]) / n_img
                    # x world: DDP averages gradients over processes, we want their sum
                    text_part, vision_part = res.text_loss * (w_text * world), res.vision_loss * (w_img * world)
                    if measure:
                        gt, gv = split_backward(accelerator.backward, text_part, vision_part, alpha, blocks)
                        g_text = gt if g_text is None else g_text + gt
                        g_vision = gv if g_vision is None else g_vision + gv
                    else:
                        accelerator.backward(text_part + alpha * vision_part)
                sums += torch.tensor([res.text_loss.item() * w_text, res.vision_loss.item() * w_img],
                                     dtype=torch.float64)
            if measure:
                if world > 1:
                    for p in model.parameters():
                        if p.grad is not None:
                            torch.distributed.all_reduce(p.grad)
                            p.grad.div_(world)
                split = torch.stack([g_text.square().sum(), g_vision.square().sum()]).to(accelerator.device)
                split = accelerator.reduce(split, reduction="sum").cpu().sqrt() / world
                balance.update(float(split[0]), float(split[1]))
            text_loss, vision_loss = (float(v) for v in accelerator.reduce(sums.to(accelerator.device),
                                                                           reduction="sum").cpu())
            step_loss = text_loss + alpha * vision_loss
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), o.max_grad_norm or float("inf"))
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                good = latest_checkpoint(out)
                raise TrainingDiverged(
                    f"training diverged at step {step}: loss {step_loss}, gradient norm {grad_norm}; the last good "
                    f"checkpoint is {good if good else '(none)'}: lower optim.lr_llm / lr_vision or raise warmup")
            lrs = {g.get("name"): float(g["lr"]) for g in optimizer.param_groups}  # the rates this step uses
            optimizer.step()
            unwrapped.after_optimizer_step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_counts = Counts.from_list(accelerator.reduce(
                torch.tensor(local.as_list(), dtype=torch.long, device=accelerator.device), reduction="sum").tolist())
            counts.add(step_counts)
            prev_position, position = position, position + o.batch_size
            losses.append(step_loss)
            dt = time.perf_counter() - t0
            session["time"] += dt
            session["steps"] += 1
            for k, v in (("loss", step_loss), ("text", text_loss), ("vision", vision_loss), ("n", 1),
                         ("samples", o.batch_size), ("tokens", step_counts.tokens), ("time", dt)):
                window[k] += v
            logger.advance(1, {"loss": f"{step_loss:.4f}"})

            # ----- log ------------------------------------------------------------------------------------------
            seen = {**counts.to_dict(), "samples": position, "tokens": counts.tokens}
            record = {"kind": "train", "step": step, "position": position, "epoch": position / len(data.order),
                      "loss": step_loss, "text_loss": text_loss,
                      "vision_loss": vision_loss if config.model.target is not None else None,
                      "grad_norm": grad_norm, "world_size": world, **seen}
            if config.model.target is not None:
                record["alpha"] = alpha
            if measure:  # decoder-block gradient norms of the text loss and the unweighted vision loss
                record["block_grad_norms"] = {"text": float(split[0]), "vision": float(split[1])}
            if step % config.log.interval == 0 or step == steps:
                n, wt = window["n"], max(window["time"], 1e-9)
                eta = session["time"] / session["steps"] * (steps - step)
                record.update(loss=window["loss"] / n, text_loss=window["text"] / n,
                              vision_loss=(window["vision"] / n) if config.model.target is not None else None,
                              samples_per_s=window["samples"] / wt, tokens_per_s=window["tokens"] / wt, eta_s=eta,
                              lr_llm=lrs.get("llm", lrs.get("llm_no_decay", 0.0)),
                              lr_vision=lrs.get("vision", lrs.get("vision_no_decay")),
                              steps_in_window=n)
                logger.write(record)
                logger.echo(format_line(record, steps))
                window = {k: 0.0 if isinstance(v, float) else 0 for k, v in window.items()}

            # ----- evaluate -------------------------------------------------------------------------------------
            if evaluate is not None and _eval_due(config, step, steps, prev_position, position):
                if main:
                    last_eval = _evaluate(evaluate, unwrapped, step, seen, logger, final=step == steps)
                    total = last_eval["vqa"]["total"]
                    if total is not None and total >= best.get("vqa_total", -1.0):
                        best = {"vqa_total": total, "step": step}
                best = gather_object([best])[0] if world > 1 else best
                accelerator.wait_for_everyone()

            # ----- checkpoint -----------------------------------------------------------------------------------
            c = config.checkpoint
            if (c.every and step % c.every == 0) or (c.at_end and step == steps):
                states = gather_object([rng_state()]) if world > 1 else [rng_state()]
                if main:
                    state = {"step": step, "position": position, "counts": counts.to_dict(), "best": best,
                             "balance": balance.state_dict(),
                             "total_steps": steps, "world_size": world, "seen": seen,
                             "model_config": config.model.to_dict(), "variant": config.variant}
                    path = save_checkpoint(out, step, unwrapped, optimizer.optimizer if hasattr(
                        optimizer, "optimizer") else optimizer, scheduler, _json(state), states,
                        lora=config.lora.enabled, keep=c.keep)
                    logger.echo(f"saved checkpoint {path}")
                accelerator.wait_for_everyone()
            if callback is not None:
                callback(step, record)
    finally:
        logger.close()
    final = {"step": steps, "position": position, "counts": counts.to_dict(), "best": best}
    accelerator.wait_for_everyone()
    return TrainResult(out, steps, final, losses, last_eval)


def _eval_due(config: RunConfig, step: int, steps: int, prev_position: int, position: int) -> bool:
    e = config.eval
    if e.questions == 0 or config.mode == "generation":
        return False
    if e.at_end and step == steps:
        return True
    if not e.every:
        return False
    if e.unit == "steps":
        return step % e.every == 0
    return prev_position // e.every < position // e.every


def _evaluate(evaluate: Evaluate, model, step: int, seen: dict[str, int], logger: MetricsLogger,
              final: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    d = evaluate(model, step, final)
    rec = {"kind": "eval", "step": step, **seen, "vqa": d["scores"], "vqa_total": d["scores"]["total"],
           "questions": d["counts"]["total"], "unparsed": d["unparsed"]["total"],
           "predictions": d["predictions"], "seconds": time.perf_counter() - t0}
    logger.write(rec)
    columns = d.get("columns") or tuple(d["scores"])
    scores = " ".join(f"{k} {v:.1f}" for k, v in d["scores"].items() if v is not None and k in columns)
    logger.echo(f"eval step {step}: VQA {scores} ({rec['questions']} questions, "
                f"{seen['understanding_samples']} understanding samples seen)")
    return rec


def _json(x):
    import json

    return json.loads(json.dumps(x))


__all__ = ["train", "TrainResult", "TrainingDiverged", "Evaluate", "EvaluatorFactory", "make_accelerator",
           "build_optimizer", "build_scheduler"]
