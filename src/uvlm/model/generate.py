"""Inference: answer questions about cached image features, and generate images' vision tokens from instructions.

Prompts are left-padded so every row's last position is real; position ids count real tokens only, so a padded row
computes exactly what it would alone.

- :func:`answer`: text answers with ``transformers``' own ``generate`` (``inputs_embeds`` path, KV cache), greedy or
  sampled (temperature, top-k); stops at ``</s>``.
- :func:`generate_images`: ``<s> USER: {instruction} ASSISTANT: <boi>``, then ``N_out`` vision tokens, each chosen by
  the target (argmax / temperature / top-k for VQ ids, direct regression for continuous targets, a diffusion draw for
  latent tokens) and fed back through the generation adapter. With ``use_cache`` it feeds one token per step against
  a ``DynamicCache``; without, it recomputes the whole sequence for every token (the paper's evaluation; for
  checking). With ``sampling.guidance != 1`` each row is decoded beside an unconditional row (the same prompt with an
  empty instruction) that is fed the same tokens; the target guides its draw with both.
"""

from __future__ import annotations

from typing import Sequence

import torch

from uvlm.errors import require
from uvlm.model.config import SamplingConfig
from uvlm.model.unified import UnifiedVLM


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad id lists -> ``input_ids`` ``(B, L)``, ``attention_mask`` ``(B, L)`` and ``position_ids`` ``(B, L)``
    (int64; positions count real tokens from 0, padding gets 0)."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    att = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, length - len(s):] = torch.tensor(list(s), dtype=torch.long)
            att[i, length - len(s):] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return ids, att, pos


@torch.no_grad()
def answer(model: UnifiedVLM, features: torch.Tensor, questions: Sequence[str],
           sampling: SamplingConfig | None = None, max_new_tokens: int = 24, use_cache: bool = True) -> list[str]:
    """Answer one question per image.

    Args:
        features: ``(B, N_in, D_in)`` float understanding features.
        questions: ``B`` questions.
        sampling: greedy by default.
        max_new_tokens: answer length limit (SmartWatch answers are a few tokens; captions about 40).

    Returns:
        ``B`` answers, decoded without special tokens and stripped.
    """
    from transformers import GenerationConfig

    sampling = sampling or SamplingConfig()
    require(features.ndim == 3 and features.shape[0] == len(questions),
            f"answer() needs features (B, N_in, D_in) and B questions, got {tuple(features.shape)} and "
            f"{len(questions)} questions")
    seq, ids_ = model.sequences, model.token_ids
    n = features.shape[1]
    prompts = [seq.answer_prompt(q, n) for q in questions]
    ids, att, _ = left_pad(prompts, ids_.pad)
    ids, att = ids.to(model.device), att.to(model.device)
    emb = model.text_embeddings(ids)
    # the image positions: right after each row's <s>
    start = ids.shape[1] - torch.tensor([len(p) for p in prompts], device=ids.device) + 1
    cols = torch.arange(ids.shape[1], device=ids.device)
    und = (cols >= start[:, None]) & (cols < start[:, None] + n)
    emb = emb.masked_scatter(und.unsqueeze(-1), model.embed_understanding(features.to(model.device)).to(emb.dtype))
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=not sampling.greedy, use_cache=use_cache,
                              eos_token_id=ids_.eos, pad_token_id=ids_.pad, bos_token_id=ids_.bos,
                              **({} if sampling.greedy else dict(temperature=sampling.temperature,
                                                                 top_k=sampling.top_k or None)))
    with torch.random.fork_rng(devices=[] if model.device.type == "cpu" else [model.device]):
        torch.manual_seed(sampling.seed)
        out = model.llm.generate(inputs_embeds=emb, attention_mask=att, generation_config=config)
    answers = []
    for row in out.tolist():
        if ids_.eos in row:
            row = row[:row.index(ids_.eos)]
        answers.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


@torch.no_grad()
def generate_images(model: UnifiedVLM, instructions: Sequence[str], sampling: SamplingConfig | None = None,
                    num_tokens: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Generate the vision tokens of one image per instruction.

    Args:
        instructions: ``B`` generation instructions.
        sampling: greedy by default; temperature and top-k apply to discrete targets, temperature, steps and guidance
            to diffusion targets.
        num_tokens: ``N_out`` (default ``config.num_output_tokens``).
        use_cache: feed one token per step against a KV cache (``False``: recompute everything each step).

    Returns:
        ``(B, N_out)`` int64 code ids for discrete targets, ``(B, N_out, feature_dim)`` float for continuous ones.
    """
    require(model.target is not None, "this model has no generation target: it cannot generate images")
    require(len(instructions) > 0, "generate_images() needs at least one instruction")
    from transformers import DynamicCache

    sampling = sampling or SamplingConfig()
    n = num_tokens or model.config.num_output_tokens
    target, dev = model.target, model.device
    guided = sampling.guidance != 1.0
    require(not guided or target.takes_guidance,
            f"the {target.name} target takes no classifier-free guidance: leave guidance at 1")
    b = len(instructions)
    prompts = [model.sequences.image_prompt(t) for t in instructions]
    if guided:  # the unconditional rows: the same prompt without the instruction
        prompts += [model.sequences.image_prompt("")] * b
    ids, att, pos = (t.to(dev) for t in left_pad(prompts, model.token_ids.pad))
    generator = torch.Generator(device=dev).manual_seed(sampling.seed)
    emb = model.text_embeddings(ids)
    cache = DynamicCache() if use_cache else None
    h = model.decode(emb, att, pos, past_key_values=cache, use_cache=use_cache).last_hidden_state[:, -1]
    tokens = []
    for k in range(n):
        out = model.vision_head(h)
        kw = {"position": k} if target.positional else {}
        if guided:
            tok = target.select(out[:b], sampling, generator, uncond=out[b:], **kw)
        else:
            tok = target.select(out, sampling, generator, **kw)  # (B,) ids or (B, D)
        tokens.append(tok)
        if k == n - 1:
            break
        fed = torch.cat([tok, tok]) if guided else tok
        e = model.embed_generated(target.vectors(fed.unsqueeze(1))).to(emb.dtype)  # (B, 1, H)
        att = torch.cat([att, att.new_ones(att.shape[0], 1)], dim=1)
        pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
        if use_cache:
            h = model.decode(e, att, pos[:, -1:], past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        else:
            emb = torch.cat([emb, e], dim=1)
            h = model.decode(emb, att, pos).last_hidden_state[:, -1]
    return torch.stack(tokens, dim=1)
