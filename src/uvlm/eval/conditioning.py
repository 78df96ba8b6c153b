"""Does the generation head listen to the instruction? The teacher-forced text-conditioning gap, and the gradient
balance between the text and vision losses that decides it.

A model can lower its vision loss a long way by learning an unconditional prior over images (the next token from
the previous ones) while ignoring the instruction. Pixel metrics then sit at chance, and it is not clear whether the
drawing or the model is to blame. This measure needs no decoder and no sampling:

1. take ``n`` test generation samples and their ground-truth target tokens;
2. compute the teacher-forced per-token vision loss (the training loss) with each sample's **own** instruction, and
   again with the instructions **shuffled** among the samples (the image tokens stay put);
3. ``gap = shuffled - own``. A model that ignores the text has a gap of 0 (up to float noise); one that draws what
   it is told has a positive gap.

The gap is also reported at the weather icon's token cells for the samples whose instruction names the weather
(``icon``): the cells through which a unified model could carry the weather from generation to understanding.

    >>> from uvlm.train.checkpoint import load_run
    >>> text_conditioning(load_run("runs/SigLIP-SigLIP"))["gap"]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from uvlm.data.config import SplitConfig
from uvlm.data.datasets import open_dataset
from uvlm.errors import require


@torch.no_grad()
def per_token_vision_loss(model, instructions: list[str], targets: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Teacher-forced vision loss ``(B, N_out)`` of ``targets`` ``(B, N_out[, D])`` drawn after ``instructions``."""
    require(len(instructions) == targets.shape[0],
            f"{len(instructions)} instructions for {targets.shape[0]} target rows: give one instruction per row")
    require(getattr(model, "target", None) is not None,
            "the text-conditioning gap needs a model with a generation target, not an understanding-only model")
    out = []
    for b in range(0, len(instructions), batch_size):
        rows = targets[b:b + batch_size]
        batch = model.sequences.collate([model.sequences.generation(i, t)
                                         for i, t in zip(instructions[b:b + batch_size], rows)])
        batch = batch.to(model.device)
        emb, loss_targets = model.input_embeddings(batch)
        hidden = model.decode(emb, batch.attention_mask).last_hidden_state
        loss = model.vision_token_losses(hidden, batch.generation_mask, loss_targets)
        out.append(loss.reshape(rows.shape[0], -1).float().cpu())
    return torch.cat(out)


def _summary(own: np.ndarray, shuffled: np.ndarray) -> dict[str, float]:
    o, s = float(own.mean()), float(shuffled.mean())
    return {"own": o, "shuffled": s, "gap": s - o, "relative_gap": (s - o) / s if s else 0.0, "tokens": int(own.size)}


def text_conditioning(loaded_run, n: int = 128, seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """The text-conditioning gap of a run on the first ``n`` generation samples of its test split.

    Returns ``own``, ``shuffled``, ``gap`` (shuffled - own), ``relative_gap`` (gap / shuffled) and ``tokens`` over all
    image tokens, and the same under ``icon`` for the weather icon's cells of the samples that mention the weather
    (absent when the token grid is not square or no sample mentions the weather). ``seed`` fixes the shuffle.
    """
    from uvlm.eval.probe import icon_cells

    model, sources, config = loaded_run.model, loaded_run.sources, loaded_run.config
    source = sources.generation  # the understanding source itself for llm-embeds targets
    require(getattr(model, "target", None) is not None and source is not None,
            f"run {config.variant!r} is an understanding-only model: the text-conditioning gap needs a run with a "
            f"generation target")
    require(n >= 2, f"the text-conditioning gap needs at least 2 samples to shuffle, got n={n}")
    split: SplitConfig = config.data.test.with_(resolution=int(source.resolution))
    require(split.n_generation >= n, f"the test split has {split.n_generation} generation samples, fewer than n={n}: "
                                     f"lower n")
    samples = list(open_dataset(split).stream("generation", stop=n, with_image=True))
    targets = sources.generation_targets(source.encode_cached([s.image for s in samples]), config.model.target)
    # a derangement-free shuffle is not needed: a sample keeping its own instruction only shrinks the gap
    order = np.random.default_rng(seed).permutation(n)
    instructions = [s.instruction for s in samples]
    own = per_token_vision_loss(model, instructions, targets, batch_size).numpy()
    shuffled = per_token_vision_loss(model, [instructions[i] for i in order], targets, batch_size).numpy()
    result: dict[str, Any] = {"n": n, "seed": seed, **_summary(own, shuffled)}
    side = math.isqrt(own.shape[1])
    named = [k for k, s in enumerate(samples) if "weather" in s.mentioned]
    if side * side == own.shape[1] and named:
        mask = np.zeros_like(own, dtype=bool)
        for k in named:
            mask[k, icon_cells(samples[k].attributes, int(source.resolution), side)] = True
        result["icon"] = {**_summary(own[mask], shuffled[mask]), "samples": len(named)}
    return result


def gradient_balance(loaded_run, n: int = 96, batches: int = 4) -> dict[str, Any]:
    """How much of the training gradient comes from each loss: the gradient norms of the text loss and of
    ``alpha x`` the vision loss on ``batches`` batches of ``n`` samples of the run's training order (consecutive
    slices from its start; mixed batches for a mixed run), per parameter group:

    - ``blocks``: the LLM's decoder blocks, the weights both losses share. This is the ratio that matters.
    - ``embeddings``: the rest of the LLM (token embeddings, LM head, final norm), which only the text loss reaches
      (the vision loss reaches the input embeddings of the vision tokens only).
    - ``vision``: the adapters and the generation head.

    Each group reports the per-batch norms and ratios and ``ratio`` (mean text norm / mean vision norm over the
    batches). With Adam, a loss whose gradient on shared weights is many times smaller than the other's moves them
    little: ``blocks.ratio`` (text / vision) says whether the generation task is heard at all. ``alpha`` is the run's
    configured weight (a ``grad-norm`` run's learned weight is in its checkpoint's ``balance`` state). The model is
    left unchanged (its gradients are cleared).
    """
    from torch.nn.utils import get_total_norm

    from uvlm.train.data import TrainData

    model, config = loaded_run.model, loaded_run.config
    require(getattr(model, "target", None) is not None and config.mode == "mixed",
            f"run {config.variant!r} trains one loss only ({config.mode}): the gradient balance needs a mixed run")
    require(n >= 2, f"the gradient balance needs at least 2 samples, got n={n}")
    require(batches >= 1, f"the gradient balance needs at least 1 batch, got {batches}")
    data = TrainData(config, loaded_run.sources, model.sequences)
    blocks = model.decoder_block_parameters()
    ids = {id(p) for p in blocks}
    parts = model.parameter_groups()
    groups = {"blocks": blocks, "embeddings": [p for p in parts["llm"] if id(p) not in ids], "vision": parts["vision"]}
    alpha = float(model.alpha)
    was_training = model.training
    model.train()
    per: dict[str, dict[str, list[float]]] = {g: {"text": [], "vision": []} for g in groups}
    losses = {"text": [], "vision": []}
    try:
        for k in range(batches):
            examples, _ = data.examples(data.order.take(k * n, n))
            batch = model.sequences.collate(examples).to(model.device)
            out = model(batch)
            losses["text"].append(float(out.text_loss.detach()))
            losses["vision"].append(float(out.vision_loss.detach()))
            for name, loss in (("text", out.text_loss), ("vision", alpha * out.vision_loss)):
                model.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    loss.backward(retain_graph=name == "text")
                for g, ps in groups.items():
                    grads = [p.grad for p in ps if p.grad is not None]
                    per[g][name].append(float(get_total_norm(grads)) if grads else 0.0)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    result: dict[str, Any] = {"n": n, "batches": batches, "alpha": alpha,
                              "text_loss": float(np.mean(losses["text"])),
                              "vision_loss": float(np.mean(losses["vision"]))}
    for g, d in per.items():
        t, v = float(np.mean(d["text"])), float(np.mean(d["vision"]))
        result[g] = {"text": t, "vision": v, "ratio": t / v if v else float("inf"),
                     "per_batch": [{"text": a, "vision": b, "ratio": a / b if b else float("inf")}
                                   for a, b in zip(d["text"], d["vision"])]}
    return result


__all__ = ["per_token_vision_loss", "text_conditioning", "gradient_balance"]
