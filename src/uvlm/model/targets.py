"""Generation targets: what the LLM autoregresses after ``<boi>``, one small class each.

A target owns the generation head (``hidden -> out_dim``, always its own parameters) and any frozen tensor it needs
(the VQ codebook). It defines

- ``out_dim``: the head's output width (``D_out`` for continuous targets, ``K`` logits for VQ);
- ``feature_dim`` and ``space``: the width and the name of the space of the vectors fed back into the LLM for the
  next position. The model passes them through the generation adapter, which is the understanding adapter itself when
  ``space`` equals the understanding encoder's space (unless ``detach``);
- ``prepare(targets, understand)``: teacher forcing, from the cached targets of a batch to ``(vectors fed back,
  loss targets)``;
- ``loss(pred, target, mask)``: the vision loss, a mean over the masked-in image tokens;
- ``predict(hidden)`` and ``token_losses(hidden, targets)``: from the LLM's hidden states to head outputs and to the
  loss of every image token;
- ``select(head_out, sampling, generator)`` and ``vectors(tokens)``: inference, from a head output to the next token
  and from tokens to the vectors fed back.

The class also owns everything else its name stands for, as class attributes read by the rest of uvlm: its display
name in variant names (``display``), the vision-source kind its training targets come from (``source_kind``), whether
it needs the VQ codebook (``needs_codebook``), how its tokens become pixels (``decoder``), the model sizes it takes
from its source (:meth:`Target.model_sizes`), and the source itself when that kind is its own
(:meth:`Target.load_source`).

Adding a target is one module with one class decorated with ``@register_target("name")``, plus its line in
:data:`BUILTIN_MODULES` (imported when this module is, so every built-in target is registered).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.generation import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from uvlm.errors import UserError, require
from uvlm.model.config import ENCODERS, SamplingConfig, UnifiedConfig

#: name -> target class
TARGETS: dict[str, type["Target"]] = {}

Understand = Callable[[torch.Tensor], torch.Tensor]
"""The model's understanding embedding: features ``(B, N, D_in)`` -> LLM input vectors ``(B, N, hidden)``."""


def register_target(name: str):
    """Class decorator: make a :class:`Target` subclass available as ``UnifiedConfig(target=name)``."""

    def deco(cls: type["Target"]) -> type["Target"]:
        cls.name = name
        TARGETS[name] = cls
        return cls

    return deco


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` (same shape, bool) is true; 0 (still in the graph) if none."""
    if mask is not None:
        values = values[mask]
    if values.numel() == 0:
        return values.sum()
    return values.mean()


class Target(nn.Module):
    """Base class. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str] = ""
    space: ClassVar[str] = ""
    """Name of the space generated tokens live in; equal to an encoder name when the adapter can be shared."""
    discrete: ClassVar[bool] = False
    """Tokens are ids ``(B, N)`` long (discrete) or vectors ``(B, N, feature_dim)`` float (continuous)."""
    default_alpha: ClassVar[float] = 1.0
    """Vision loss weight when ``UnifiedConfig.alpha`` is ``None``."""
    display: ClassVar[str] = ""
    """The target's part of a variant name (``SigLIP-VQ``: ``VQ``)."""
    source_kind: ClassVar[str | None] = None
    """Kind of the vision source its training targets and its decoder come from (a kind of
    :func:`uvlm.vision.presets.vision_source`); ``None``: the understanding source (whose features it generates)."""
    needs_codebook: ClassVar[bool] = False
    """The model passes it the generation source's codebook."""
    decoder: ClassVar[str | None] = None
    """What turns its tokens into pixels: ``"pixel-decoder"`` (a decoder trained afterwards on the frozen features),
    ``"tokenizer"`` (the source's own decoder), or ``None`` (it draws nothing)."""
    feature_probe: ClassVar[bool] = False
    """Its drawings can be judged in the generation source's own feature space (the feature probe)."""
    normalise_feedback: ClassVar[bool] = False
    """At inference, give fed-back predictions the mean norm of real targets (see :class:`ContinuousTarget`)."""
    poolable: ClassVar[bool] = True
    """Its source's token grid may be average-pooled (``vision.pool``)."""
    produces: ClassVar[str] = "vision tokens"
    """What it generates, in words (for messages)."""
    takes_guidance: ClassVar[bool] = False
    """Its ``select`` uses classifier-free guidance (``SamplingConfig.guidance``)."""
    positional: ClassVar[bool] = False
    """Its ``select`` takes ``position``, the index of the image token being chosen."""

    out_dim: int
    feature_dim: int

    def __init__(self, config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size

    # ----- what the rest of uvlm asks of the class -----------------------------------------------------------------
    @classmethod
    def shares_encoder_space(cls) -> bool:
        """Its tokens live in an understanding encoder's space: it has ``-D`` (own adapter) and ``_g`` variants."""
        return cls.space in ENCODERS

    @classmethod
    def draws(cls) -> bool:
        """Its tokens can be turned into pixels."""
        return cls.decoder is not None

    @classmethod
    def model_sizes(cls, understanding, generation) -> dict[str, Any]:
        """The model-config sizes this target takes from the run's vision sources (``generation`` is the
        understanding source when :attr:`source_kind` is ``None``)."""
        return {"num_output_tokens": int(generation.num_tokens)}

    @classmethod
    def training_targets(cls, sources, cached: torch.Tensor) -> torch.Tensor:
        """Cached generation-source rows -> the tokens the model is trained to generate."""
        return sources.generation.to_targets(cached)

    @classmethod
    def generation_source(cls, understanding, load: Callable[[str], Any]):
        """The run's generation source, given its understanding source and ``load(kind)`` (a source of another
        kind): the understanding source itself when :attr:`source_kind` is ``None`` or its kind, else ``load``."""
        kind = cls.source_kind
        return understanding if kind is None or kind == understanding.kind else load(kind)

    @classmethod
    def load_source(cls, source: str):
        """The frozen vision source of :attr:`source_kind` named ``source``, for kinds outside
        :data:`uvlm.vision.presets.KINDS`."""
        raise UserError(f"the {cls.name} target has no vision source of its own")

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raise :class:`UserError` unless ``options`` (``UnifiedConfig.target_options``) are settings of this
        target (none by default)."""
        require(not options, f"the {cls.name} target takes no target_options, got {', '.join(map(str, options))}: "
                             f"remove them")

    @classmethod
    def no_drawing_reason(cls) -> str:
        return (f"it generates {cls.produces}, which have no pixel decoder: use a target that draws "
                f"({', '.join(n for n, c in TARGETS.items() if c.draws())})")

    # ----- the model's side ---------------------------------------------------------------------------------------
    def _make_head(self) -> None:
        self.head = nn.Linear(self.hidden_size, self.out_dim)

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., hidden)`` LLM hidden states -> ``(..., out_dim)`` head outputs (vectors or code logits)."""
        return self.head(hidden.to(self.head.weight.dtype))

    def token_losses(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(M, hidden)`` hidden states and the ``M`` image tokens they predict -> ``(M,)`` loss per token."""
        return self.per_token_loss(self.predict(hidden), targets)

    def attach(self, model: nn.Module) -> None:
        """Called once the model's adapters exist (a target that keeps a copy of one makes it here)."""

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (a target with a moving average of weights updates it here)."""

    def moving_state(self) -> list[str]:
        """Names (in this module) of the tensors that change in training without being trained: checkpoints that
        keep only the trained weights (LoRA) keep these too."""
        return []

    @classmethod
    def to_pixels(cls, source, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens -> float ``(B, 3, R, R)`` images in ``[0, 1]`` through the generation source."""
        return source.decode(tokens)

    def check(self, targets: torch.Tensor) -> None:
        """Raise :class:`UserError` unless ``targets`` is a batch ``(B, N, ...)`` of this target's kind."""
        raise NotImplementedError

    def prepare(self, targets: torch.Tensor, understand: Understand) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: cached targets -> (vectors fed back ``(B, N, feature_dim)``, loss targets)."""
        return self.vectors(targets), targets

    def per_token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred (..., out_dim)`` float, ``target`` of the matching shape -> loss per token ``(...)`` float."""
        raise NotImplementedError

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of :meth:`per_token_loss` over tokens where ``mask`` ``(...)`` bool is true (all if ``None``)."""
        return masked_mean(self.per_token_loss(pred, target), mask)

    def select(self, head_out: torch.Tensor, sampling: SamplingConfig,
               generator: torch.Generator | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
        """Inference: head output ``(B, out_dim)`` -> next token (``(B,)`` long ids or ``(B, feature_dim)`` float).
        ``uncond``: the head output of the same position without the instruction, for targets that take
        classifier-free guidance (``sampling.guidance``)."""
        raise NotImplementedError

    def vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N)`` ids or ``(B, N, feature_dim)`` -> vectors fed back ``(B, N, feature_dim)`` float."""
        raise NotImplementedError


class ContinuousTarget(Target):
    """Regress a vector per token with ``1 - cosine`` (MetaMorph, and the paper for SigLIP); predictions fed back as
    they are (direct regression, no sampling).

    ``1 - cosine`` fixes a predicted token's direction but not its length, so raw predictions can be far shorter or
    longer than the real tokens the model was teacher-forced on (measured on the tiny SigLIP: about 7x shorter), and
    feeding them back takes the LLM off its training distribution. Setting :attr:`feature_norm` (the mean token norm
    of real targets; :func:`uvlm.train.checkpoint.load_run` does this from the run's vision source) makes inference
    keep the predicted direction and give it that length. ``None``: raw feedback, as the paper's code does.
    """

    feature_norm: float | None = None

    def check(self, targets: torch.Tensor) -> None:
        require(targets.is_floating_point() and targets.ndim == 3 and targets.shape[-1] == self.feature_dim,
                f"{self.name} generation targets must be float (B, N, {self.feature_dim}), got "
                f"{str(targets.dtype).replace('torch.', '')} {tuple(targets.shape)}: check target_dim and the cache")

    def per_token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)

    def select(self, head_out: torch.Tensor, sampling: SamplingConfig,
               generator: torch.Generator | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
        if self.feature_norm:
            return F.normalize(head_out, dim=-1) * self.feature_norm
        return head_out

    def vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


@register_target("siglip")
class SigLIPTarget(ContinuousTarget):
    """SigLIP patch embeddings ``(B, N_out, D_out)``; loss ``1 - cos``; alpha 1.0."""

    space = "siglip"
    default_alpha = 1.0
    display = "SigLIP"
    source_kind = "siglip"
    decoder = "pixel-decoder"
    feature_probe = True
    normalise_feedback = True
    produces = "SigLIP embeddings"

    @classmethod
    def model_sizes(cls, understanding, generation) -> dict[str, Any]:
        return {"num_output_tokens": int(generation.num_tokens), "target_dim": int(generation.target_dim)}

    def __init__(self, config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None):
        super().__init__(config, hidden_size)
        self.out_dim = self.feature_dim = config.target_dim
        self._make_head()


@register_target("llm-embeds")
class LLMEmbedsTarget(ContinuousTarget):
    """UniHetero's semantic target: the LLM's own input embeddings of the image, i.e. the understanding adapter's
    output (after the affine map, if any), with stop-gradient on the target; loss ``1 - cos``; alpha 1.0.

    The cached targets are the image's *understanding features* ``(B, N, D_in)`` (so ``N_out = N_in``). Teacher
    forcing feeds the embeddings themselves back (with gradient, like understanding input); at inference the
    predicted vector is fed back directly (the generation adapter is the identity: the space is the LLM's own).

    ``target_options = {"ema_decay": d}`` (``0 <= d < 1``) takes the loss target from an exponential moving average of
    the understanding adapter instead of the adapter itself: a frozen copy made when the model is built and updated
    after every optimiser step as ``ema = d * ema + (1 - d) * adapter`` (UniHetero's later EMA projector). The
    fed-back embeddings stay the live adapter's.
    """

    space = "llm"
    default_alpha = 1.0
    display = "LLMEmbeds"
    produces = "LLM embeddings"

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        bad = [k for k in options if k != "ema_decay"]
        require(not bad, f"unknown llm-embeds target option {', '.join(map(repr, bad))}: use ema_decay")
        d = options.get("ema_decay", 0.0)
        require(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d < 1,
                f"llm-embeds ema_decay must be a number in [0, 1), got {d!r}")

    def attach(self, model: nn.Module) -> None:
        if self.ema_decay is not None:
            import copy

            self.ema = copy.deepcopy(model.understanding_adapter).requires_grad_(False)
            self.__dict__["_affine"] = model.affine  # the model's own map, not a module of this target

    def after_step(self, model: nn.Module) -> None:
        if self.ema_decay is None:
            return
        d = float(self.ema_decay)
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), model.understanding_adapter.parameters()):
                e.mul_(d).add_(p.detach().to(e.dtype), alpha=1.0 - d)

    def moving_state(self) -> list[str]:
        return [f"ema.{n}" for n, _ in self.ema.named_parameters()] if self.ema_decay is not None else []

    @classmethod
    def training_targets(cls, sources, cached: torch.Tensor) -> torch.Tensor:
        return sources.understanding.to_inputs(cached)

    def __init__(self, config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None):
        super().__init__(config, hidden_size)
        self.out_dim = self.feature_dim = hidden_size
        self._make_head()
        self.ema_decay: float | None = config.target_options.get("ema_decay")
        self.ema: nn.Module | None = None

    def check(self, targets: torch.Tensor) -> None:
        d = self.config.input_dim
        require(targets.is_floating_point() and targets.ndim == 3 and targets.shape[-1] == d,
                f"llm-embeds generation targets are the image's understanding features, float (B, N, {d}); got "
                f"{str(targets.dtype).replace('torch.', '')} {tuple(targets.shape)}")

    def prepare(self, targets: torch.Tensor, understand: Understand) -> tuple[torch.Tensor, torch.Tensor]:
        emb = understand(targets)
        if self.ema_decay is None:
            return emb, emb.detach()
        require(self.ema is not None, "the llm-embeds EMA target has no copy of the adapter: build it within a model")
        with torch.no_grad():
            target = self.ema(targets.to(next(self.ema.parameters()).dtype))
            if self._affine is not None:
                target = self._affine(target)
        return emb, target


@register_target("vq")
class VQTarget(Target):
    """VQ code ids ``(B, N_out)`` in ``[0, K)``; loss cross-entropy over the codebook; alpha 0.2. The vector fed back
    for a code is its entry of the frozen codebook ``(K, C)`` (a buffer, not a parameter)."""

    space = "vq"
    discrete = True
    default_alpha = 0.2
    display = "VQ"
    source_kind = "vq"
    needs_codebook = True
    decoder = "tokenizer"
    feature_probe = True
    produces = "VQ codes"

    def __init__(self, config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None):
        super().__init__(config, hidden_size)
        if codebook is None:
            raise UserError("the vq generation target needs the VQ codebook: pass codebook=<(K, C) tensor> "
                            "(the VQ tokenizer's code embeddings) to the model")
        require(isinstance(codebook, torch.Tensor) and codebook.ndim == 2 and codebook.is_floating_point(),
                f"the VQ codebook must be a float (K, C) tensor, got {getattr(codebook, 'shape', type(codebook))}")
        self.register_buffer("codebook", codebook.detach().clone().float())
        self.out_dim, self.feature_dim = codebook.shape
        self._make_head()

    def check(self, targets: torch.Tensor) -> None:
        k = self.out_dim
        require(targets.dtype == torch.long and targets.ndim == 2,
                f"vq generation targets must be int64 code ids (B, N), got {str(targets.dtype).replace('torch.', '')}"
                f" {tuple(targets.shape)}")
        require(targets.numel() == 0 or (int(targets.min()) >= 0 and int(targets.max()) < k),
                f"vq code ids must lie in [0, {k}) for this codebook, got [{int(targets.min())}, {int(targets.max())}]:"
                f" use the codebook of the tokenizer that made the cache")

    def per_token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.float().flatten(0, -2), target.flatten(), reduction="none").view(target.shape)

    def select(self, head_out: torch.Tensor, sampling: SamplingConfig,
               generator: torch.Generator | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
        return select_token(head_out, sampling, generator)

    def vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.codebook)


def select_token(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """``(B, V)`` logits -> ``(B,)`` ids: argmax when greedy, else a draw after temperature and top-k."""
    if sampling.greedy:
        return logits.argmax(-1)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    probs = torch.softmax(warpers(None, logits.float()), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def target_class(name: str) -> type[Target]:
    """The registered target class of ``name``; an unknown name is a one-line :class:`UserError` listing them."""
    require(isinstance(name, str) and name in TARGETS,
            f"unknown generation target {name!r}: use one of {', '.join(TARGETS)} (or none)")
    return TARGETS[name]


def target_names() -> list[str]:
    """The registered targets, those in an understanding encoder's space first (in :data:`ENCODERS` order), then the
    others in registration order."""
    own = [n for e in ENCODERS for n, c in TARGETS.items() if c.space == e]
    return own + [n for n in TARGETS if n not in own]


def build_target(config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None) -> Target | None:
    """The target named by ``config.target`` (``None`` for an understanding-only model)."""
    if config.target is None:
        return None
    return target_class(config.target)(config, hidden_size, codebook)


#: Modules of built-in targets defined outside this one, one a line; imported here so that they register.
BUILTIN_MODULES: tuple[str, ...] = (
    "uvlm.model.diffusion_target",
    "uvlm.model.semantic_pixel_target",
)

for _module in BUILTIN_MODULES:
    import_module(_module)
