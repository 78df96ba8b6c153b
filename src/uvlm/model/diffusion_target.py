"""The pixel-level generation target ``diffusion``: KL-VAE latent tokens predicted by a per-token diffusion head.

UniHetero's pixel branch, on MAR's recipe: the image is the continuous latent grid of a KL-regularised VAE
(:mod:`uvlm.vision.kl_vae`; at CPU scale the tiny VAE trained here, 16 x 16 tokens of 8 channels at 64 px; at full
scale MAR's KL-16 from a local ``kl16.ckpt``), and the LLM's hidden state at each image position conditions a small
MLP denoiser (:class:`~uvlm.model.diffusion.DiffusionHead`, MAR's DiffLoss) that models the distribution of that
token. The head's loss is backpropagated through the condition into the LLM: that is the pixel-level objective whose
interference with understanding UniHetero measures.

- Training: the cached latents (posterior means, times the VAE's scale factor) are teacher-forced through the
  generation adapter (its own adapter: the latent space is no understanding encoder's); the loss of each image
  token is the head's epsilon loss (plus the variance term with ``learn_sigma``), averaged over ``batch_mul`` noise
  draws, with steps and noise from torch's seeded generator.
- Inference: at each image position the head draws the token by respaced DDPM sampling (``SamplingConfig.steps``,
  default the head's ``sample_steps``; ``temperature`` scales the noise of every step, 0 follows the mean path from
  the seeded starting noise; ``guidance`` is classifier-free guidance against the same position decoded without the
  instruction); the drawn latent is fed back through the generation adapter inside the KV-cached decoding loop, and
  the VAE's decoder turns the finished grid into pixels.
- Settings: ``model.target_options`` takes the head's architecture and process (the fields of
  :class:`~uvlm.model.diffusion.DiffusionHeadConfig` but its two widths, which are the latent's and the LLM's), on top
  of ``preset`` ``tiny`` (default: width 256, depth 3, the clean-token clamp at 5 that a briefly trained head needs) or
  ``mar`` (width 1024, no clamp).
- The vision source kind ``kl-vae``: ``vision.sources["kl-vae"]`` (``tiny``, MAR's ``kl16.ckpt`` file, or a uvlm
  ``kl-vae`` artifact folder); with ``vision.source`` ``tiny`` it defaults to the tiny VAE, trained on first use
  (announced first) and cached like the other artifacts.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from uvlm.errors import UserError, require
from uvlm.model.config import SamplingConfig, UnifiedConfig
from uvlm.model.diffusion import DiffusionHead, DiffusionHeadConfig
from uvlm.model.targets import ContinuousTarget, register_target
from uvlm.vision.presets import ContinuousSource, file_identity

KIND = "kl-vae"
#: ``target_options`` keys besides the head's own fields.
PRESETS = ("tiny", "mar")
_OWN = ("token_dim", "cond_dim")  # set by the model, not by options


def head_config(options: dict[str, Any], token_dim: int, cond_dim: int) -> DiffusionHeadConfig:
    """The head of ``model.target_options`` for tokens of ``token_dim`` conditioned on ``cond_dim`` vectors."""
    opts = dict(options)
    preset = opts.pop("preset", "tiny")
    require(preset in PRESETS, f"unknown diffusion head preset {preset!r}: use one of {', '.join(PRESETS)}")
    known = [f.name for f in fields(DiffusionHeadConfig) if f.name not in _OWN]
    bad = [k for k in opts if k not in known]
    require(not bad, f"unknown diffusion target option {', '.join(map(repr, bad))}: use preset or some of "
                     f"{', '.join(known)}")
    make = DiffusionHeadConfig.tiny if preset == "tiny" else DiffusionHeadConfig.mar
    try:
        return make(**{**opts, "token_dim": token_dim, "cond_dim": cond_dim})
    except TypeError as e:
        raise UserError(f"bad diffusion target option: {e}") from None


class KLVAESource(ContinuousSource):
    """KL-VAE latent tokens ``(B, N, E)`` (scaled posterior means) as generation targets; the VAE decodes them."""

    kind = KIND

    def __init__(self, vae, weights: Path):
        self.vae = vae.eval().requires_grad_(False)
        self.weights = weights
        self.resolution = vae.resolution
        self.num_tokens = vae.num_tokens
        self.input_dim = self.target_dim = vae.embed_dim

    def identity(self) -> dict[str, Any]:
        return {"kind": KIND, "weights": file_identity(self.weights), "config": self.vae.config.to_dict(),
                "scale_factor": self.vae.scale_factor}

    def encode_cached(self, images: list) -> torch.Tensor:
        return self.vae.encode_latents(images)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.decode_latents(tokens.float())


@register_target("diffusion")
class DiffusionTarget(ContinuousTarget):
    """KL-VAE latent tokens ``(B, N_out, E)``; loss: the diffusion head's, per token; alpha 1.0."""

    space = KIND
    default_alpha = 1.0
    display = "Diffusion"
    source_kind = KIND
    decoder = "tokenizer"  # the VAE's own decoder
    poolable = False  # the VAE decodes its full latent grid
    takes_guidance = True
    produces = "KL-VAE latents"

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        head_config(options, token_dim=1, cond_dim=1)

    @classmethod
    def model_sizes(cls, understanding, generation) -> dict[str, Any]:
        return {"num_output_tokens": int(generation.num_tokens), "target_dim": int(generation.target_dim)}

    @classmethod
    def load_source(cls, source: str) -> KLVAESource:
        from uvlm.vision.kl_vae import KLVAETrainConfig, load_kl16, load_kl_vae, train_kl_vae

        if source == "tiny":
            from uvlm.vision.artifacts import announce_training, cached

            path = cached(KIND, KLVAETrainConfig().cache_key())
            if path is None:
                announce_training(KIND)
                path = train_kl_vae()
            return KLVAESource(load_kl_vae(path), path)
        path = Path(source).expanduser()
        if path.is_dir():
            return KLVAESource(load_kl_vae(path), path)
        if not path.is_file():
            raise UserError(f"KL-VAE checkpoint {str(path)!r} does not exist: pass MAR's kl16.ckpt, a uvlm kl-vae "
                            f"folder or tiny")
        return KLVAESource(load_kl16(path), path)

    def __init__(self, config: UnifiedConfig, hidden_size: int, codebook: torch.Tensor | None = None):
        super().__init__(config, hidden_size)
        self.feature_dim = config.target_dim
        self.out_dim = hidden_size  # the head's input is the condition itself
        self.head = DiffusionHead(head_config(config.target_options, config.target_dim, hidden_size))

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """The condition of each image token: the LLM's hidden state (in the head's dtype)."""
        return hidden.to(next(self.head.parameters()).dtype)

    def per_token_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat = self.head.token_losses(target.reshape(-1, self.feature_dim).float(), pred.reshape(-1, pred.shape[-1]))
        return flat.view(target.shape[:-1])

    def select(self, head_out: torch.Tensor, sampling: SamplingConfig,
               generator: torch.Generator | None = None, uncond: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.sample(head_out, steps=sampling.steps, temperature=sampling.temperature,
                                cfg=sampling.guidance, uncond=uncond, generator=generator)
