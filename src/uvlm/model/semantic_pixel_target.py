"""The ``llm-embeds+diffusion`` target: semantic and pixel generation of the same image, one after the other.

UniHetero's fourth arm, both generation objectives at once. After ``<boi>`` the LLM generates the image twice: first
its own input embeddings of the image (the ``llm-embeds`` target: ``N_s`` understanding tokens, ``1 - cos`` against
the understanding adapter's output with its gradient stopped, fed back as they are), then its KL-VAE latents (the
``diffusion`` target: ``N_p`` latent tokens from a per-token diffusion head, fed back through a pixel adapter of its
own). Both losses reach the LLM; the vision loss is their mean over the ``N_s + N_p`` image tokens. The pixels are
the latents, decoded by the VAE.

- The generation source packs, per image, the understanding source's cached rows and the VAE's latents into one
  cached array (:class:`PackedSource`); both must render at the same resolution (the tiny SigLIP and the tiny VAE:
  64 px).
- A generated token is ``[embedding (H) | latent (E) | 1 if pixel]``, so that one sequence of tokens carries both kinds;
  ``N_s`` is recorded in ``model.target_options["semantic_tokens"]`` when the run resolves its sizes.
- Other ``target_options`` are the diffusion head's (see :mod:`uvlm.model.diffusion_target`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uvlm.errors import require
from uvlm.model.adapters import build_adapter
from uvlm.model.config import SamplingConfig, UnifiedConfig
from uvlm.model.diffusion import DiffusionHead
from uvlm.model.diffusion_target import KIND, head_config
from uvlm.model.targets import Target, Understand, register_target
from uvlm.vision.presets import ContinuousSource


class PackedSource(ContinuousSource):
    """The understanding source's cached rows ``(B, N_u, D_u)`` and the KL-VAE's latents ``(B, N_p, E)`` of each
    image, cached as one float32 array ``(B, N_u + N_p, max(D_u, E))`` (zero-padded; code ids as one column)."""

    kind = "packed"
    cache_dtype = "float32"

    def __init__(self, understanding, pixels):
        require(int(understanding.resolution) == int(pixels.resolution),
                f"the understanding source renders at {understanding.resolution} px but the KL-VAE at "
                f"{pixels.resolution} px: semantic and pixel generation of one image need one resolution")
        self.understanding, self.pixels = understanding, pixels
        self.ids = np.dtype(understanding.cache_dtype).kind in "iu"
        self.resolution = pixels.resolution
        self.semantic_tokens = int(understanding.num_tokens)
        self.num_tokens = self.semantic_tokens + int(pixels.num_tokens)
        self.input_dim = understanding.input_dim
        self.target_dim = pixels.target_dim

    def identity(self) -> dict[str, Any]:
        return {"packed": [self.understanding.identity(), self.pixels.identity()]}

    def cache_identity(self) -> dict[str, Any]:
        u = self.understanding
        return {"packed": [u.cache_identity() if hasattr(u, "cache_identity") else u.identity(),
                           self.pixels.identity()]}

    def encode_cached(self, images: list) -> torch.Tensor:
        u = self.understanding.encode_cached(images).float()
        u = u.unsqueeze(-1) if u.ndim == 2 else u
        p = self.pixels.encode_cached(images).float()
        w = max(u.shape[-1], p.shape[-1])
        return torch.cat([F.pad(u, (0, w - u.shape[-1])), F.pad(p, (0, w - p.shape[-1]))], dim=1)

    def to_targets(self, cached: torch.Tensor) -> torch.Tensor:
        """Cached rows -> ``(B, N_s + N_p, max(D_in, E))``: the understanding inputs, then the latents."""
        n_p, e = self.pixels.num_tokens, self.pixels.target_dim
        u = cached[:, :-n_p]
        u = u[..., 0].round().long() if self.ids else u[..., :self.understanding.input_dim]
        feats = self.understanding.to_inputs(u).float()
        lat = self.pixels.to_targets(cached[:, -n_p:, :e]).float()
        w = max(feats.shape[-1], lat.shape[-1])
        return torch.cat([F.pad(feats, (0, w - feats.shape[-1])), F.pad(lat, (0, w - lat.shape[-1]))], dim=1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens ``(B, N_s + N_p, H + E + 1)`` -> the VAE's images of their latents."""
        e = self.pixels.target_dim
        return self.pixels.decode(tokens[:, -self.pixels.num_tokens:, -1 - e:-1])


@register_target("llm-embeds+diffusion")
class SemanticPixelTarget(Target):
    """LLM embeddings of the image, then its KL-VAE latents; losses ``1 - cos`` and the diffusion head's; alpha 1."""

    space = "llm"  # what is fed back is already LLM input (the pixel adapter is the target's own)
    default_alpha = 1.0
    display = "LLMEmbeds+Diffusion"
    source_kind = KIND
    decoder = "tokenizer"
    poolable = False  # the VAE's grid; the understanding tokens come pooled from the understanding source
    takes_guidance = True
    positional = True
    produces = "LLM embeddings and KL-VAE latents"

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        opts = dict(options)
        n = opts.pop("semantic_tokens", 1)
        require(isinstance(n, int) and not isinstance(n, bool) and n >= 1,
                f"llm-embeds+diffusion semantic_tokens must be a positive integer, got {n!r}")
        head_config(opts, token_dim=1, cond_dim=1)

    @classmethod
    def generation_source(cls, understanding, load) -> PackedSource:
        return PackedSource(understanding, load(KIND))

    @classmethod
    def model_sizes(cls, understanding, generation) -> dict[str, Any]:
        return {"num_output_tokens": int(generation.num_tokens), "target_dim": int(generation.target_dim),
                "target_options": {"semantic_tokens": int(generation.semantic_tokens)}}

    def __init__(self, config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None):
        super().__init__(config, hidden_size)
        opts = dict(config.target_options)
        self.semantic_tokens = int(opts.pop("semantic_tokens", 1))
        require(self.semantic_tokens < config.num_output_tokens,
                f"llm-embeds+diffusion has {self.semantic_tokens} semantic tokens of {config.num_output_tokens}: "
                f"it needs pixel tokens after them")
        self.pixel_dim = config.target_dim
        self.out_dim = hidden_size  # the head output is the condition itself
        self.feature_dim = hidden_size + self.pixel_dim + 1
        self.semantic_head = nn.Linear(hidden_size, hidden_size)
        self.head = DiffusionHead(head_config(opts, self.pixel_dim, hidden_size))
        self.pixel_adapter = build_adapter(config.adapter, self.pixel_dim, hidden_size)

    def check(self, targets: torch.Tensor) -> None:
        n, w = self.config.num_output_tokens, max(self.config.input_dim, self.pixel_dim)
        require(targets.is_floating_point() and targets.ndim == 3 and tuple(targets.shape[1:]) == (n, w),
                f"llm-embeds+diffusion generation targets must be float (B, {n}, {w}) (understanding features, then "
                f"latents), got {str(targets.dtype).replace('torch.', '')} {tuple(targets.shape)}")

    def prepare(self, targets: torch.Tensor, understand: Understand) -> tuple[torch.Tensor, torch.Tensor]:
        s, e, h = self.semantic_tokens, self.pixel_dim, self.hidden_size
        emb = understand(targets[:, :s, :self.config.input_dim])
        lat = targets[:, s:, :e]
        fed = torch.cat([emb, self.pixel_adapter(lat.to(emb.dtype))], dim=1)
        loss_targets = torch.cat([F.pad(emb.detach().float(), (0, e)), F.pad(lat.float(), (h, 0))], dim=1)
        return fed, loss_targets

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.to(self.semantic_head.weight.dtype)

    def token_losses(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.predict(hidden)
        semantic = torch.arange(len(h), device=h.device) % self.config.num_output_tokens < self.semantic_tokens
        out = h.new_zeros(len(h), dtype=torch.float32)
        cos = 1.0 - F.cosine_similarity(self.semantic_head(h[semantic]).float(),
                                        targets[semantic, :self.hidden_size].float(), dim=-1)
        pix = self.head.token_losses(targets[~semantic, self.hidden_size:].float(), h[~semantic])
        return out.masked_scatter(semantic, cos).masked_scatter(~semantic, pix.float())

    def select(self, head_out: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None,
               uncond: torch.Tensor | None = None, position: int = 0) -> torch.Tensor:
        b, e, h = head_out.shape[0], self.pixel_dim, self.hidden_size
        if position < self.semantic_tokens:
            return F.pad(self.semantic_head(head_out).float(), (0, e + 1))
        lat = self.head.sample(head_out, steps=sampling.steps, temperature=sampling.temperature,
                               cfg=sampling.guidance, uncond=uncond, generator=generator)
        return torch.cat([head_out.new_zeros(b, h, dtype=torch.float32), lat.float(),
                          head_out.new_ones(b, 1, dtype=torch.float32)], dim=-1)

    def vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        h, e = self.hidden_size, self.pixel_dim
        pixel = tokens[..., -1:] > 0.5
        lat = tokens[..., h:h + e].to(self.semantic_head.weight.dtype)
        return torch.where(pixel, self.pixel_adapter(lat), tokens[..., :h].to(lat.dtype))
