"""The unified VLM: a ``transformers`` causal LM driven through ``inputs_embeds``, plus vision adapters and a head.

::

    understanding:  features (B, N_in, D_in) -> understanding adapter -> [affine map] -> LLM input positions
    generation:     LLM hidden (B, H) -> generation head -> next vision token
                    vision token -> target.vectors -> generation adapter -> LLM input (next position)

The generation adapter *is* the understanding adapter (same parameters) when the generated tokens live in the
understanding input space (SigLIP->SigLIP, VQ->VQ) and ``detach`` is off; otherwise it is its own module
(``llm-embeds`` targets are already LLM input vectors: their generation adapter is the identity). The generation head
is always separate. The affine map (``UnifiedConfig.affine``) sits after the understanding adapter on the
understanding path only; with a shared adapter it is applied to fed-back tokens only if ``affine_on_feedback``.

The model knows nothing of training or parallelism: :meth:`UnifiedVLM.forward` takes a :class:`Batch` and returns
the losses. It never sees pixels: vision inputs are cached frozen-encoder tensors.
"""

from __future__ import annotations

import functools
import inspect

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from uvlm.errors import UserError, require
from uvlm.model.adapters import AffineMap, build_adapter
from uvlm.model.config import LLM_PRESETS, LLMConfig, UnifiedConfig
from uvlm.model.sequence import IGNORE, Batch, SequenceBuilder, prediction_mask
from uvlm.model.targets import Target, build_target, masked_mean

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_llm(config: LLMConfig, tokenizer) -> nn.Module:
    """A causal LM whose vocabulary covers ``len(tokenizer)``: a fresh Llama preset or a local pretrained folder.

    Draws its random weights from the global torch RNG: seed it (``UnifiedVLM`` does) for reproducible weights.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype = _DTYPES[config.dtype]
    if config.pretrained is not None:
        path = Path(config.pretrained).expanduser()
        require(path.is_dir() and (path / "config.json").is_file(),
                f"pretrained LLM folder {str(path)!r} not found or has no config.json: give a local folder saved "
                f"with save_pretrained")
        try:
            llm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype,
                                                       attn_implementation=config.attn_implementation)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the pretrained LLM from {str(path)!r}: {str(e).splitlines()[0]}") from None
        if llm.get_input_embeddings().num_embeddings < len(tokenizer):
            llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        return llm
    cfg = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=config.max_position_embeddings,
                      tie_word_embeddings=config.tie_word_embeddings, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      **LLM_PRESETS[config.preset])
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=config.attn_implementation).to(dtype)


@dataclass
class UnifiedOutput:
    """The losses of one batch. ``loss = text_loss + alpha * vision_loss``."""

    loss: torch.Tensor
    """Scalar float, what to backpropagate."""
    text_loss: torch.Tensor
    """Scalar: cross-entropy, mean over the answer tokens of the batch (0 if there are none)."""
    vision_loss: torch.Tensor
    """Scalar: the target's loss, mean over the predicted image tokens of the batch (0 if there are none)."""
    num_answer_tokens: int
    """How many tokens ``text_loss`` averages over (to weight means across micro-batches or ranks)."""
    num_image_tokens: int
    """How many tokens ``vision_loss`` averages over."""


class UnifiedVLM(nn.Module):
    """LLM + understanding adapter (+ affine map) + generation adapter + generation head (the target).

    Args:
        config: the architecture.
        tokenizer: a ``transformers`` tokenizer; the vision tokens are added to it (in place) and the LLM's
            embeddings are sized to ``len(tokenizer)``.
        codebook: ``(K, C)`` float, the VQ tokenizer's code embeddings; required by the ``vq`` target (a frozen
            buffer of the target).
        llm: an already built causal LM to use instead of ``config.llm`` (its embeddings are resized if needed).
    """

    def __init__(self, config: UnifiedConfig, tokenizer, codebook: torch.Tensor | None = None,
                 llm: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # builds the token sequences of this model (adds the vision tokens to ``tokenizer``)
        self.sequences = SequenceBuilder(tokenizer, config.template)
        self.token_ids = self.sequences.ids
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            if llm is None:
                llm = build_llm(config.llm, tokenizer)
            elif llm.get_input_embeddings().num_embeddings < len(tokenizer):
                llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
            self.llm = llm
            hidden = llm.get_input_embeddings().embedding_dim
            self.hidden_size = hidden
            self.und_adapter = build_adapter(config.adapter, config.input_dim, hidden)
            self.affine = (AffineMap(hidden, config.affine_seed, config.affine_scale, config.affine_offset_std)
                           if config.affine else None)
            self.target: Target | None = build_target(config, hidden, codebook)
            self.shared_adapter = False
            # the generation adapter when it is not shared (None when shared or understanding-only)
            self.gen_adapter: nn.Module | None = None
            t = self.target
            if t is not None:
                if t.space == "llm":
                    self.gen_adapter = nn.Identity()
                elif t.space == config.encoder and not config.detach:
                    require(t.feature_dim == config.input_dim,
                            f"{config.encoder}->{config.target} shares the adapter but generated tokens have width "
                            f"{t.feature_dim} and inputs {config.input_dim}: make target_dim/codebook width equal "
                            f"to input_dim, or set detach")
                    self.shared_adapter = True
                else:
                    self.gen_adapter = build_adapter(config.adapter, t.feature_dim, hidden)
                t.attach(self)
        # weight of the vision loss
        self.alpha = float(config.alpha if config.alpha is not None else (t.default_alpha if t is not None else 0.0))

    # ---------------------------------------------------------------- parts

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def understanding_adapter(self) -> nn.Module:
        return self.und_adapter

    @property
    def generation_adapter(self) -> nn.Module | None:
        """The module fed-back vision vectors go through: the understanding adapter itself when shared."""
        return self.und_adapter if self.shared_adapter else self.gen_adapter

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group: ``llm`` (the LLM, incl. any LoRA) and ``vision`` (adapters
        and generation head). Frozen buffers (codebook, affine map) are not parameters at all."""
        llm = [p for p in self.llm.parameters() if p.requires_grad]
        seen = {id(p) for p in llm}
        vision = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        return {"llm": llm, "vision": vision}

    def decoder_block_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the LLM's transformer blocks (LoRA weights only, under LoRA): the weights the
        text and vision losses share. Not the token embeddings, the LM head or the final norm, which only the text
        loss reaches, nor the adapters and the head."""
        blocks = [p for n, p in self.llm.named_parameters() if p.requires_grad and ".layers." in f".{n}"]
        require(blocks, "the LLM has no trainable parameters in its transformer blocks ('layers'): the gradient "
                        "balance needs a decoder with trainable blocks")
        return blocks

    def after_optimizer_step(self) -> None:
        """What the target does after every optimiser step (for example update a moving average)."""
        if self.target is not None:
            self.target.after_step(self)

    def moving_state(self) -> list[str]:
        """Names (in this model) of the tensors that change in training without being trained."""
        return [f"target.{n}" for n in self.target.moving_state()] if self.target is not None else []

    def embed_understanding(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, D_in)`` features -> ``(B, N, hidden)`` LLM input vectors (adapter, then the affine map)."""
        require(features.shape[-1] == self.config.input_dim,
                f"understanding features have width {features.shape[-1]} but the model takes input_dim="
                f"{self.config.input_dim}: check the encoder cache")
        x = self.und_adapter(features.to(_dtype(self.und_adapter)))
        return self.affine(x) if self.affine is not None else x

    def embed_generated(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(B, N, feature_dim)`` target-space vectors -> ``(B, N, hidden)`` LLM input vectors."""
        adapter = self.generation_adapter
        require(adapter is not None, "this model has no generation target: set UnifiedConfig.target")
        x = adapter(vectors.to(_dtype(adapter, vectors.dtype)))
        if self.shared_adapter and self.affine is not None and self.config.affine_on_feedback:
            x = self.affine(x)
        return x

    def vision_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., hidden)`` LLM hidden states -> ``(..., out_dim)`` head outputs (what the target's ``select``
        takes: vectors, code logits, or the condition of a diffusion head)."""
        require(self.target is not None, "this model has no generation target: set UnifiedConfig.target")
        return self.target.predict(hidden)

    def text_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids -> ``(B, L, hidden)`` the LLM's token embeddings."""
        return self.llm.get_input_embeddings()(input_ids)

    def decode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False):
        """Run the LLM body on ``(B, L, hidden)`` embeddings; returns its output (``last_hidden_state`` is the final
        normalised hidden ``(B, L, hidden)``; ``past_key_values`` the cache when ``use_cache``)."""
        decoder = self.llm.get_decoder()
        return decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=use_cache, **{_cache_argument(type(decoder)): past_key_values})

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., hidden)`` -> ``(..., V)`` text logits (the LLM's own LM head)."""
        return self.llm.get_output_embeddings()(hidden)

    def text_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-only forward through this model's path: ``(B, L)`` ids -> ``(B, L, V)`` logits."""
        return self.lm_logits(self.decode(self.text_embeddings(input_ids), attention_mask).last_hidden_state)

    # ---------------------------------------------------------------- training forward

    def input_embeddings(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``(B, L, hidden)`` input of a batch (text embeddings, understanding features at the understanding
        positions, fed-back targets at the image positions) and the vision loss targets (``None`` if no
        generation rows)."""
        emb = self.text_embeddings(batch.input_ids)
        und, gen = batch.understanding_mask, batch.generation_mask
        loss_targets = None
        if bool(und.any()):
            feats = batch.features
            require(feats is not None and feats.ndim == 3, "a batch with understanding positions needs its features "
                                                           "(B_u, N_in, D_in)")
            _check_rows(und, feats.shape[:2], "understanding features")
            emb = emb.masked_scatter(und.unsqueeze(-1), self.embed_understanding(feats).to(emb.dtype))
        if bool(gen.any()):
            require(self.target is not None, "this model has no generation target but the batch has generation "
                                             "samples: drop them or set UnifiedConfig.target")
            targets = batch.targets
            require(targets is not None, "a batch with image positions needs its generation targets")
            self.target.check(targets)
            _check_rows(gen, targets.shape[:2], "generation targets")
            vectors, loss_targets = self.target.prepare(targets, self.embed_understanding)
            emb = emb.masked_scatter(gen.unsqueeze(-1), self.embed_generated(vectors).to(emb.dtype))
        return emb, loss_targets

    def vision_token_losses(self, hidden: torch.Tensor, generation_mask: torch.Tensor,
                            loss_targets: torch.Tensor) -> torch.Tensor:
        """``(M_v,)`` the vision loss of every image token, in (row, token) order: the hidden state before each image
        position of ``generation_mask`` ``(B, L)`` predicts that token of ``loss_targets`` ``(B_g, N_out, ...)``."""
        h = hidden[prediction_mask(generation_mask)]  # row-major = target order
        return self.target.token_losses(h, loss_targets.flatten(0, 1))

    def forward(self, batch: Batch) -> UnifiedOutput:
        """Losses of a (mixed) batch: text cross-entropy over answer tokens + ``alpha`` x vision loss over image
        tokens, each a mean over the tokens that exist (padding and absent parts count for nothing)."""
        emb, loss_targets = self.input_embeddings(batch)
        hidden = self.decode(emb, batch.attention_mask).last_hidden_state  # (B, L, H)
        # text: the hidden state at p predicts the label at p + 1
        text_pos = batch.labels[:, 1:] != IGNORE
        h_text = hidden[:, :-1][text_pos]  # (M_t, H)
        logits = self.lm_logits(h_text)
        text_loss = masked_mean(F.cross_entropy(logits.float(), batch.labels[:, 1:][text_pos], reduction="none"), None)
        n_text = int(text_pos.sum())
        # vision: the hidden state before each image position predicts that image token
        n_img = int(batch.generation_mask.sum())
        if n_img:
            vision_loss = masked_mean(self.vision_token_losses(hidden, batch.generation_mask, loss_targets), None)
        else:
            vision_loss = hidden.sum() * 0.0
        loss = text_loss + self.alpha * vision_loss
        return UnifiedOutput(loss, text_loss, vision_loss, n_text, n_img)


def _dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else default


def _check_rows(mask: torch.Tensor, shape: torch.Size, what: str) -> None:
    """Every row with positions in ``mask`` has ``shape[1]`` of them, and there are ``shape[0]`` such rows."""
    counts = mask.sum(1)
    counts = counts[counts > 0]
    require(len(counts) == shape[0] and bool((counts == shape[1]).all()),
            f"{what} {tuple(shape)} do not match the batch's positions (rows {counts.tolist()}): build batches with "
            f"SequenceBuilder.collate")


@functools.cache
def _cache_argument(decoder_class: type) -> str:
    """The keyword a ``transformers`` decoder takes its KV cache by: ``cache`` in recent releases, where
    ``past_key_values`` is deprecated, and ``past_key_values`` before."""
    params = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
