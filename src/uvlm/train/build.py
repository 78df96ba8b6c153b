"""Building a run's model: its tokenizer, the unified VLM (LoRA-wrapped when configured), and a trained run loaded
for inference (:func:`load_run`). Checkpoint files themselves are read and written by :mod:`uvlm.train.checkpoint`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uvlm.errors import UserError, require
from uvlm.model.config import UnifiedConfig
from uvlm.train.config import RunConfig


# ----- tokenizer and model ------------------------------------------------------------------------------------------
def build_run_tokenizer(config: RunConfig):
    """The tokenizer of a new run: the pretrained LLM's own (if its folder has one), else the word-level tokenizer
    with the template words and the dataset's words (:meth:`~uvlm.data.datasets.Dataset.vocabulary_words`)."""
    pre = config.model.llm.pretrained
    if pre is not None and any((Path(pre).expanduser() / f).is_file()
                               for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(Path(pre).expanduser()), local_files_only=True)
    from uvlm.data.tokenizer import build_tokenizer

    return build_tokenizer(extra_words=[*config.model.template.words(), *config.data.dataset_class.vocabulary_words()])


def build_model(config: RunConfig, model_config: UnifiedConfig, tokenizer, sources) -> torch.nn.Module:
    """The run's :class:`~uvlm.model.unified.UnifiedVLM` (fresh weights from ``model_config.seed``), LoRA-wrapped when
    ``config.lora.enabled``. ``sources`` gives the codebook to targets that need one (``vq``)."""
    from uvlm.model.unified import UnifiedVLM

    codebook = None
    target = model_config.target_class()
    if target is not None and target.needs_codebook:
        codebook = sources.generation.codebook
    model = UnifiedVLM(model_config, tokenizer, codebook=codebook)
    if config.lora.enabled:
        apply_lora(model, config)
    return model


def apply_lora(model, config: RunConfig) -> None:
    """Wrap ``model.llm`` with ``peft`` LoRA in place: only LoRA weights (and the new vision-token embedding rows)
    of the LLM stay trainable; the adapters and the head, outside the LLM, keep training."""
    from peft import LoraConfig, get_peft_model

    lc = config.lora
    ids = model.token_ids
    new_rows = sorted({ids.image, ids.boi, ids.eoi}) if lc.train_new_tokens else None
    peft_config = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                             target_modules=list(lc.target_modules), trainable_token_indices=new_rows,
                             task_type="CAUSAL_LM")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.llm.named_modules()}
    missing = [m for m in lc.target_modules if m not in names]
    require(not missing, f"LoRA target module(s) {', '.join(missing)} do not exist in the LLM: use some of "
                         f"{', '.join(sorted(n for n in names if n.endswith('_proj')) or sorted(names)[:10])}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model.config.seed + 1)
        try:
            model.llm = get_peft_model(model.llm, peft_config)
        except ValueError as e:  # peft's "Target modules ... not found"
            raise UserError(f"cannot apply LoRA: {str(e).splitlines()[0]}: fix lora.target_modules") from None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of the parameters that train, and of the tensors that change in training without being
    trained (a target's moving average): what a LoRA checkpoint stores."""
    keep = set(stateful_names(model))
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad or n in keep}


def stateful_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that change in training without being trained."""
    moving = getattr(model, "moving_state", None)
    return moving() if callable(moving) else []


# ----- inference loading --------------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """A trained model ready for inference."""

    config: RunConfig
    model: Any
    """The :class:`~uvlm.model.unified.UnifiedVLM`, in eval mode, on CPU."""
    sources: Any
    """The run's :class:`~uvlm.train.data.Sources`."""
    checkpoint: Path
    state: dict[str, Any]


def load_run(run_dir: str | os.PathLike, checkpoint: str | int | None = None) -> LoadedRun:
    """Load a run folder's model from a checkpoint (default: the latest) for inference."""
    from transformers import AutoTokenizer

    from uvlm.train.checkpoint import check_model_config, find_checkpoint, load_weights, read_run_config, read_state
    from uvlm.train.data import load_sources

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    ckpt = find_checkpoint(run_dir, checkpoint)
    state = read_state(ckpt)
    require((run_dir / "tokenizer").is_dir(), f"run {str(run_dir)!r} has no tokenizer/ folder: it is incomplete")
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"), local_files_only=True)
    sources = load_sources(config)
    model = build_model(config, config.model, tokenizer, sources)
    check_model_config(state, model.config, config.lora.enabled, ckpt)
    load_weights(ckpt, model, config.lora.enabled)
    model.eval()
    if getattr(model.target, "normalise_feedback", False) and sources.generation is not None:
        model.target.feature_norm = real_token_norm(sources.generation, config.data.train)
    return LoadedRun(config, model, sources, ckpt, state)


def real_token_norm(source, split, n_images: int = 64) -> float:
    """Mean token norm of a continuous source's real targets, over the first images of ``split``."""
    from dataclasses import replace as _replace

    from uvlm.data.datasets import open_dataset

    ds = open_dataset(_replace(split, resolution=source.resolution))
    with torch.no_grad():
        tokens = source.to_targets(source.encode_cached([ds.image(i) for i in range(n_images)]))
    return float(tokens.float().norm(dim=-1).mean())


__all__ = ["build_run_tokenizer", "build_model", "apply_lora", "trainable_state", "stateful_names", "LoadedRun", "load_run",
           "real_token_norm"]
