"""Typed configuration of the unified VLM: the LLM, the adapters, the affine distortion and the generation target.

The model never sees pixels. It takes cached frozen-encoder outputs as tensors, so its config only needs the
*shapes* of those tensors (``input_dim``; ``target_dim`` for continuous targets; the VQ codebook is passed in as a
tensor) and the *names* of the spaces they live in (``encoder``, ``target``), which decide whether the understanding
and generation adapters can be shared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from uvlm.errors import check_keys, check_types, require

#: Understanding input spaces the model knows, with their names in variant names. ``siglip``: SigLIP patch tokens
#: ``(B, N, D)``; ``vq``: the VQ tokenizer's quantised latents ``(B, N, 8)`` (the codebook entries of the image's code
#: ids). Generation targets name themselves (:mod:`uvlm.model.targets`).
ENCODER_NAMES: dict[str, str] = {"siglip": "SigLIP", "vq": "VQ"}
ENCODERS: tuple[str, ...] = tuple(ENCODER_NAMES)

#: Adapter kinds: ``linear`` (one Linear) or ``mlp`` (Linear-GELU-Linear, LLaVA-1.5's ``mlp2x_gelu``).
ADAPTERS: tuple[str, ...] = ("linear", "mlp")

#: Named tiny Llama sizes for CPU runs (``LlamaConfig`` keyword arguments; the vocabulary comes from the tokenizer).
#: Parameter counts are for the ~500-token SmartWatch vocabulary.
LLM_PRESETS: dict[str, dict[str, Any]] = {
    # ~0.26M parameters
    "debug": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=172),
    # ~4M parameters
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=688),
}


#: Longest sequence a preset LLM may be configured for (its position tables grow with it).
MAX_POSITIONS = 1 << 17


@dataclass(frozen=True)
class LLMConfig:
    """Which causal language model to build: a named tiny Llama preset, or a local pretrained folder."""

    preset: str = "tiny"
    """A key of :data:`LLM_PRESETS` (``debug``, ``tiny``); ignored when ``pretrained`` is set."""
    pretrained: str | None = None
    """A local folder with a ``transformers`` causal LM (``config.json`` + weights), loaded with
    ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)``. ``None``: build the preset from scratch."""
    max_position_embeddings: int = 1024
    """Longest sequence (text + image tokens) a preset model accepts."""
    attn_implementation: str = "sdpa"
    """``sdpa`` or ``eager`` (both give the same numbers up to float rounding)."""
    dtype: str = "float32"
    """Parameter dtype: ``float32``, ``bfloat16`` or ``float16``."""
    tie_word_embeddings: bool = False
    """Presets only: share the input embedding and the LM head (Llama default: separate)."""

    def __post_init__(self) -> None:
        if self.pretrained is None:
            require(isinstance(self.preset, str) and self.preset in LLM_PRESETS,
                    f"unknown LLM preset {self.preset!r}: use one of {', '.join(LLM_PRESETS)} or set a pretrained folder")
        require(self.attn_implementation in ("sdpa", "eager"),
                f"attn_implementation must be sdpa or eager, got {self.attn_implementation!r}")
        require(self.dtype in ("float32", "bfloat16", "float16"),
                f"LLM dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        require(isinstance(self.max_position_embeddings, int) and not isinstance(self.max_position_embeddings, bool)
                and 0 < self.max_position_embeddings <= MAX_POSITIONS,
                f"model.llm.max_position_embeddings must be an integer in [1, {MAX_POSITIONS:,}], got "
                f"{self.max_position_embeddings!r}")


@dataclass(frozen=True)
class TemplateConfig:
    """The plain-text chat template of the token sequences (see :mod:`uvlm.model.sequence`)."""

    user: str = "USER:"
    """Opens every question (and the generation instruction)."""
    assistant: str = "ASSISTANT:"
    """Closes every question; the answer (or ``<boi>``) follows."""
    label_boi: bool = False
    """Train the LM head to emit ``<boi>`` after a generation instruction (counted as one answer token)."""
    max_length: int | None = None
    """Longest allowed sequence; a longer one is an error (truncating would cut image tokens). ``None``: no limit."""

    def words(self) -> list[str]:
        """Texts to pass as ``build_tokenizer(extra_words=...)`` so the template words are in the vocabulary."""
        return [self.user, self.assistant]


@dataclass(frozen=True)
class UnifiedConfig:
    """The unified VLM: LLM + understanding adapter (+ affine distortion) + generation adapter + generation head.

    The four variants of the paper are ``(encoder, target)`` = ``(siglip, siglip)``, ``(vq, vq)``, ``(siglip, vq)``
    and ``(vq, siglip)``; ``target=None`` is an understanding-only model (the ``_u`` rows).
    """

    encoder: str = "siglip"
    """The understanding input space, one of :data:`ENCODERS`."""
    input_dim: int = 768
    """``D_in`` of the understanding features ``(B, N_in, D_in)`` (SigLIP width, or 8 for VQ latents)."""
    target: str | None = "siglip"
    """The generation target, a key of :data:`uvlm.model.targets.TARGETS` (``siglip``, ``vq``, ``llm-embeds``, ...),
    or ``None`` for an understanding-only model (no generation head)."""
    target_dim: int = 768
    """``D_out`` of continuous ``siglip`` targets ``(B, N_out, D_out)``. Ignored by ``vq`` (the codebook gives ``K``
    and the code width) and by ``llm-embeds`` (the LLM width)."""
    num_output_tokens: int = 196
    """``N_out``: how many vision tokens one generated image has (196 for SigLIP at 224 px, 256 for VQ-16)."""
    adapter: str = "linear"
    """Adapter kind for both adapters, one of :data:`ADAPTERS`."""
    detach: bool = False
    """Give the generation path its own adapter even where input and output spaces are the same (the ``-D`` models).
    Where the spaces differ a separate generation adapter always exists."""
    alpha: float | None = None
    """Weight of the vision loss: ``loss = text_ce + alpha * vision_loss``. ``None``: the target's default (1.0 for
    ``siglip`` and ``llm-embeds``, 0.2 for ``vq``)."""
    affine: bool = False
    """Apply a fixed random invertible affine map ``y = x @ A + b`` after the understanding adapter (the ``*``
    models: it distorts the understanding input space). Stored as buffers; never trained."""
    affine_seed: int = 0
    """Seed of the affine map."""
    affine_scale: tuple[float, float] = (0.5, 2.0)
    """``A = Q @ diag(s)`` with ``Q`` random orthogonal and ``s`` uniform in this range: condition number at most
    ``hi / lo``."""
    affine_offset_std: float = 0.1
    """Standard deviation of the offset ``b``."""
    affine_on_feedback: bool = False
    """With shared adapters, also apply the affine map to generated tokens fed back through the shared adapter.
    Default ``False``: the map distorts only the understanding input, so the generation feedback no longer lands in
    the same LLM-input space as the understanding tokens of the same image (our reading of the paper's Table 1).
    ``True`` treats the map as part of the shared adapter (a pure reparametrisation)."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The language model."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    """The chat template of the token sequences (see :mod:`uvlm.model.sequence`)."""
    seed: int = 0
    """Seed of every freshly initialised weight (LLM preset, adapters, head, new token embeddings)."""
    target_options: dict[str, Any] = field(default_factory=dict, hash=False)
    """Settings of the generation target, read and checked by its class (for example the ``diffusion`` head's
    architecture); empty for targets without settings. Left out of :meth:`to_dict` when empty."""

    def __post_init__(self) -> None:
        require(self.encoder in ENCODERS, f"unknown encoder {self.encoder!r}: use one of {', '.join(ENCODERS)}")
        require(self.adapter in ADAPTERS, f"unknown adapter {self.adapter!r}: use one of {', '.join(ADAPTERS)}")
        for name in ("input_dim", "target_dim", "num_output_tokens"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v > 0,
                    f"{name} must be a positive integer, got {v!r}")
        lo, hi = self.affine_scale
        require(0 < lo <= hi, f"affine_scale must be (lo, hi) with 0 < lo <= hi, got {self.affine_scale!r}")
        require(self.affine_offset_std >= 0, f"affine_offset_std must be >= 0, got {self.affine_offset_std!r}")
        require(self.alpha is None or self.alpha >= 0, f"alpha must be >= 0, got {self.alpha!r}")
        require(isinstance(self.target_options, dict), f"model.target_options must be an object, got "
                                                       f"{self.target_options!r}")
        if self.target is not None:
            self.target_class().check_options(self.target_options)
        else:
            require(not self.target_options, "model.target_options are set but the model has no generation target: "
                                             "remove them")

    def target_class(self):
        """The class of the generation target (:mod:`uvlm.model.targets`), or ``None`` for an understanding-only
        model."""
        if self.target is None:
            return None
        from uvlm.model.targets import target_class  # late import: targets import this module

        return target_class(self.target)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["target_options"]:
            del d["target_options"]  # configs of targets without settings keep their form (and their run ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnifiedConfig":
        check_keys(cls, d, cls.__name__)
        d = dict(d)
        llm = d.pop("llm", None) or {}
        template = d.pop("template", None) or {}
        for obj, known, where in ((d, cls, "model."), (llm, LLMConfig, "model.llm."),
                                  (template, TemplateConfig, "model.template.")):
            check_types(known, obj, known.__name__, prefix=where)
        if "affine_scale" in d:
            d["affine_scale"] = tuple(d["affine_scale"])
        return cls(**d, llm=LLMConfig(**llm), template=TemplateConfig(**template))

    @property
    def name(self) -> str:
        """The paper's row name: ``SigLIP-VQ``, ``VQ*-VQ-D``, ``SigLIP_u`` ..."""
        enc = ENCODER_NAMES[self.encoder] + ("*" if self.affine else "")
        if self.target is None:
            return enc + "_u"
        return f"{enc}-{self.target_class().display}" + ("-D" if self.detach else "")


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick the next token at inference (text tokens, and discrete vision tokens)."""

    temperature: float = 0.0
    """0: greedy (argmax). Above 0: sample from ``softmax(logits / temperature)``."""
    top_k: int = 0
    """When sampling, keep only the ``top_k`` most likely tokens (0: keep all)."""
    seed: int = 0
    """Seed of the sampling generator (same seed, same tokens)."""
    steps: int | None = None
    """Denoising steps of targets that sample by diffusion, evenly respaced over the training steps (``None``: the
    head's own default)."""
    guidance: float = 1.0
    """Classifier-free guidance scale of targets that take it (1: none)."""

    def __post_init__(self) -> None:
        require(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        require(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an integer >= 0, got {self.top_k!r}")
        require(self.steps is None or (isinstance(self.steps, int) and not isinstance(self.steps, bool)
                                       and self.steps >= 1),
                f"sampling steps must be a positive integer, got {self.steps!r}")
        require(isinstance(self.guidance, (int, float)) and not isinstance(self.guidance, bool)
                and math.isfinite(self.guidance) and self.guidance >= 0,
                f"guidance must be a number >= 0 (1: none), got {self.guidance!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
