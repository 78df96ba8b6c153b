"""A KL-regularised convolutional VAE: the continuous pixel latent of the pixel-level generation target.

The architecture is the LDM / MAR ``AutoencoderKL`` (encoder -> mean and log variance per latent position, a
reparameterised sample, decoder). The same code builds two models:

- :meth:`KLVAEConfig.kl16`: MAR's published KL-16 (256 px, downsampling 16, 16 x 16 latents of 16 channels, ch 128,
  ch_mult (1, 1, 2, 2, 4), attention in the encoder's last level and both middle blocks). Module names and tensor
  shapes match MAR's ``kl16.ckpt`` state dict (its ``"model"`` entry), so it loads with strict key checking
  (:func:`load_kl16`); the key and shape list, produced from MAR's own module, is kept in
  ``tests/data/mar_kl16_keys.json``.
- :meth:`KLVAEConfig.tiny`: a CPU model trained here on SmartWatch images (:func:`train_kl_vae`), cached by config
  hash like the other vision artifacts.

**The tiny model's latent grid.** 64 px images, downsampling 4: a 16 x 16 grid of 8 channels (256 tokens of dimension
8). The choice follows the VQ tokenizer's measurement on the same images (see :mod:`uvlm.vision.vq_train`): at
downsampling 8 the clock hands were lost, at downsampling 4 they survived, and a 4 x 4 pixel token is what the
5-6 px battery digits need. Eight channels per 4 x 4 x 3 = 48 pixel values (a 6x compression) leave room for the
strokes of the digits, where the VQ had to name one of 1,024 codes. The encoder and decoder widths equal the tiny VQ's
(ch 16, ch_mult (1, 2, 4), one residual block per encoder level), so the two pixel targets differ only in the
bottleneck: continuous and KL-regularised against quantised. 256 tokens is also the VQ runs' image sequence length.

**Scale factor.** A latent ``z`` enters the generation target as ``z * scale_factor`` and is decoded from
``tokens / scale_factor``, so that the tokens have about unit variance (the diffusion head's noise schedule assumes
it). KL-16: MAR's 0.2325. The tiny model: ``1 / std`` of the posterior means over the first ``scale_images`` images of
the held-out split, measured when it is trained and stored in its ``config.json``.

Shapes, for grid ``g = R / downsample`` and ``N = g * g``:

- ``encode_latents(images)`` -> float32 ``(B, N, E)``, scaled latents in raster order (``E = embed_dim``); the
  posterior mean by default, a posterior sample with ``sample=True``.
- ``decode_latents(tokens (B, N, E))`` -> float32 ``(B, 3, R, R)`` images in ``[0, 1]``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from uvlm.data.config import SplitConfig
from uvlm.errors import UserError, check_keys, require
from uvlm.vision.artifacts import artifact_dir, cached, check_state_dict, load_artifact, save_artifact
from uvlm.vision.base import ImageBatch, to_float_batch
from uvlm.vision.vq import AttnBlock, Downsample, ResnetBlock, Upsample, _norm
from uvlm.vision.vq_train import _lr_at, _stderr, _threads, images

__all__ = ["KLVAEConfig", "KLVAE", "KLVAETrainConfig", "train_kl_vae", "load_kl_vae", "load_kl16", "evaluate",
           "published_keys", "KL16_SCALE_FACTOR"]

KIND = "kl-vae"
KL16_SCALE_FACTOR = 0.2325
"""MAR's latent scale for KL-16 (``posterior.sample() * 0.2325`` in training, ``/ 0.2325`` before decoding)."""


@dataclass(frozen=True)
class KLVAEConfig:
    """Architecture of a KL-VAE (LDM / MAR ``AutoencoderKL`` layout, any width and depth)."""

    resolution: int = 256
    """Image side in pixels the model takes (square images)."""
    embed_dim: int = 16
    """Latent channels ``E`` (one generated token per latent position has this dimension)."""
    ch: int = 128
    """Base channel count of encoder and decoder."""
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    """Channel multiplier per resolution level; ``len - 1`` halvings of the image side."""
    num_res_blocks: int = 2
    """Residual blocks per encoder level (the decoder has one more per level)."""
    attn_levels: tuple[int, ...] = (4,)
    """Encoder levels (0 = full resolution) whose residual blocks are each followed by self-attention (MAR: the last
    level, at 16 x 16); the decoder has attention only in its middle block, as MAR's."""
    dropout: float = 0.0
    """Dropout inside residual blocks."""
    norm_groups: int = 32
    """GroupNorm groups (MAR: 32); every channel count must be divisible by it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_levels", tuple(int(m) for m in self.attn_levels))
        for name in ("resolution", "embed_dim", "ch", "num_res_blocks", "norm_groups"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    f"KL-VAE config {name} must be a positive integer, got {v!r}")
        require(len(self.ch_mult) >= 1 and all(m >= 1 for m in self.ch_mult),
                f"KL-VAE config ch_mult must be a non-empty list of positive integers, got {list(self.ch_mult)}")
        bad_levels = [lv for lv in self.attn_levels if not 0 <= lv < len(self.ch_mult)]
        require(not bad_levels,
                f"KL-VAE attn_levels {bad_levels} are not levels of ch_mult (0..{len(self.ch_mult) - 1})")
        require(self.resolution % self.downsample == 0,
                f"KL-VAE resolution {self.resolution} is not divisible by the downsampling factor {self.downsample}: "
                f"use a multiple of {self.downsample}")
        require(0.0 <= self.dropout < 1.0, f"KL-VAE config dropout must be in [0, 1), got {self.dropout!r}")
        bad = sorted(c for c in {self.ch * m for m in self.ch_mult} if c % self.norm_groups)
        require(not bad, f"KL-VAE channel counts {bad} are not divisible by norm_groups={self.norm_groups}: "
                         f"change ch/ch_mult or norm_groups")

    @property
    def downsample(self) -> int:
        """Image side / latent grid side."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        return self.resolution // self.downsample

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @classmethod
    def kl16(cls, **kw: Any) -> "KLVAEConfig":
        """MAR's KL-16: 256 px -> 16 x 16 x 16, ch 128, ch_mult (1, 1, 2, 2, 4), 66.5 M parameters."""
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "KLVAEConfig":
        """CPU preset: 64 px, downsampling 4 -> 16 x 16 latents of 8 channels (see the module docstring)."""
        base: dict[str, Any] = dict(resolution=64, embed_dim=8, ch=16, ch_mult=(1, 2, 4), num_res_blocks=1,
                                    attn_levels=(), norm_groups=8)
        return cls(**{**base, **kw})

    @classmethod
    def preset(cls, name: str, **kw: Any) -> "KLVAEConfig":
        presets = {"kl16": cls.kl16, "tiny": cls.tiny}
        require(name in presets, f"unknown KL-VAE preset {name!r}: use one of {', '.join(presets)}")
        return presets[name](**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_levels"] = list(self.attn_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KLVAEConfig":
        check_keys(cls, d, "KL-VAE config")
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"bad KL-VAE config ({e}): the checkpoint's config.json is corrupt") from None


# ----- building blocks (MAR / LDM layout and parameter names) -----------------------------------------------------

# ResnetBlock, AttnBlock, Downsample, Upsample and _norm are the tiny VQ's (the same LDM-derived layout and
# parameter names); only the level container differs (LDM names its residual blocks ``block``, LlamaGen ``res``).


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, dropout)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class _Level(nn.Module):
    """One resolution level: ``block`` (residual blocks), ``attn`` (one per block, or none), then a resampler."""

    def __init__(self, blocks: list[nn.Module], attn: list[nn.Module], resample_name: str | None,
                 resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        self.resample_name = resample_name
        if resample_name is not None:
            self.add_module(resample_name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return getattr(self, self.resample_name)(h) if self.resample_name else h


class Encoder(nn.Module):
    def __init__(self, c: KLVAEConfig):
        super().__init__()
        g = c.norm_groups
        self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
        levels = []
        cin = c.ch
        last = len(c.ch_mult) - 1
        for i, m in enumerate(c.ch_mult):
            cout = c.ch * m
            blocks, attn = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(cin, cout, g, c.dropout))
                cin = cout
                if i in c.attn_levels:
                    attn.append(AttnBlock(cout, g))
            levels.append(_Level(blocks, attn, "downsample" if i != last else None,
                                 Downsample(cout) if i != last else None))
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(cin, g, c.dropout)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 2 * c.embed_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, c: KLVAEConfig):
        super().__init__()
        g = c.norm_groups
        cin = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.embed_dim, cin, 3, padding=1)
        self.mid = _Mid(cin, g, c.dropout)
        levels: list[nn.Module] = []
        for i in reversed(range(len(c.ch_mult))):
            cout = c.ch * c.ch_mult[i]
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, cout, g, c.dropout))
                cin = cout
            levels.append(_Level(blocks, [], "upsample" if i != 0 else None, Upsample(cout) if i != 0 else None))
        self.up = nn.ModuleList(reversed(levels))  # index = level, as in MAR's state dict
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class KLVAE(nn.Module):
    """Images <-> continuous latents. State-dict names follow MAR's ``AutoencoderKL`` (``encoder.*``, ``decoder.*``,
    ``quant_conv.*``, ``post_quant_conv.*``); ``scale_factor`` is an attribute, not a weight."""

    def __init__(self, config: KLVAEConfig | None = None, scale_factor: float = 1.0):
        super().__init__()
        self.config = c = config or KLVAEConfig.kl16()
        require(isinstance(scale_factor, (int, float)) and math.isfinite(scale_factor) and scale_factor > 0,
                f"KL-VAE scale_factor must be a positive number, got {scale_factor!r}")
        self.scale_factor = float(scale_factor)
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quant_conv = nn.Conv2d(2 * c.embed_dim, 2 * c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.embed_dim, 1)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def embed_dim(self) -> int:
        """Dimension of one latent token."""
        return self.config.embed_dim

    # ----- tensors in model space ([-1, 1]) ----------------------------------------------------------------------
    def preprocess(self, images: ImageBatch) -> torch.Tensor:
        """Images (see :func:`uvlm.vision.base.to_float_batch`) -> float32 ``(B, 3, R, R)`` in ``[-1, 1]``."""
        return to_float_batch(images, self.resolution).to(self.quant_conv.weight.device) * 2.0 - 1.0

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, 3, R, R)`` in ``[-1, 1]`` -> posterior mean and log variance, each ``(B, E, g, g)`` (unscaled);
        the log variance is clamped to ``[-30, 20]`` as in MAR."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents ``(B, E, g, g)`` -> ``(B, 3, R, R)`` in model space (about ``[-1, 1]``, unclamped)."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: ``x`` in ``[-1, 1]`` -> ``(reconstruction of a posterior sample, mean, logvar)``."""
        mean, logvar = self.moments(x)
        noise = torch.randn(mean.shape, generator=generator, device=generator.device if generator else mean.device)
        return self.decode_raw(mean + torch.exp(0.5 * logvar) * noise.to(mean)), mean, logvar

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``KL(N(mean, exp(logvar)) || N(0, 1))`` per latent element (nats), averaged over all elements."""
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()

    # ----- the uvlm vision interface ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode_latents(self, images: ImageBatch, sample: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Images -> float32 ``(B, N, E)`` latents times ``scale_factor``, raster order (the posterior mean, or a
        posterior sample drawn from ``generator`` with ``sample=True``)."""
        mean, logvar = self.moments(self.preprocess(images))
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=generator.device if generator else mean.device)
            z = mean + torch.exp(0.5 * logvar) * noise.to(mean)
        return (z * self.scale_factor).flatten(2).transpose(1, 2)

    encode = encode_latents

    @torch.no_grad()
    def decode_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scaled latent tokens ``(B, N, E)`` -> float32 ``(B, 3, R, R)`` images in ``[0, 1]``."""
        n, e, g = self.num_tokens, self.embed_dim, self.config.grid
        require(isinstance(tokens, torch.Tensor) and tokens.dim() == 3 and tuple(tokens.shape[1:]) == (n, e),
                f"KL-VAE latent tokens must be (B, {n}, {e}), got "
                f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}: "
                f"use tokens of the same VAE")
        z = tokens.to(self.quant_conv.weight).transpose(1, 2).reshape(tokens.shape[0], e, g, g) / self.scale_factor
        return ((self.decode_raw(z) + 1.0) / 2.0).clamp(0.0, 1.0)

    decode = decode_latents


# ----- loading ------------------------------------------------------------------------------------------------------

def load_kl_vae(path: str | os.PathLike, device: str | torch.device = "cpu") -> KLVAE:
    """Load a uvlm KL-VAE artifact folder (``model.safetensors`` + ``config.json`` with ``"kind": "kl-vae"``)."""
    state, config = load_artifact(path, kind=KIND)
    require(isinstance(config.get("model"), dict), f"{path}/config.json has no 'model' section: retrain the VAE")
    scale = config.get("scale_factor")
    require(isinstance(scale, (int, float)) and scale > 0,
            f"{path}/config.json has no positive 'scale_factor': retrain the VAE")
    model = KLVAE(KLVAEConfig.from_dict(config["model"]), float(scale))
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


LOSS_PREFIX = "loss."
"""Keys of LDM-style training checkpoints that hold the training loss's modules (discriminator, LPIPS), not the
autoencoder; :func:`load_kl16` drops them and checks everything else strictly."""


def load_kl16(path: str | os.PathLike, config: KLVAEConfig | None = None, device: str | torch.device = "cpu",
              scale_factor: float = KL16_SCALE_FACTOR) -> KLVAE:
    """Load MAR's KL-16 VAE (``kl16.ckpt``) from a local file into a :class:`KLVAE` with strict key checking.

    The file may hold ``{"model": state}`` (MAR's layout), ``{"state_dict": state}`` or a bare state dict; it is read
    with ``torch.load(weights_only=True)``. Apart from ``loss.*`` entries (see :data:`LOSS_PREFIX`), every key and
    shape must match :meth:`KLVAEConfig.kl16` (or ``config``); a mismatch is a one-line :class:`UserError` listing the
    missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"KL-16 checkpoint {path} does not exist: download MAR's kl16.ckpt and pass its path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many kinds on a file that is not a checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} is not a readable torch checkpoint ({first}): pass MAR's kl16.ckpt") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a state dict: pass MAR's kl16.ckpt")
    state = next((ckpt[k] for k in ("model", "state_dict") if isinstance(ckpt.get(k), dict)), ckpt)
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path} is not a state dict (entries {[str(k) for k in bad[:5]]} are not tensors): pass "
                        f"MAR's kl16.ckpt")
    state = {k: v for k, v in state.items() if not k.startswith(LOSS_PREFIX)}
    with torch.device("meta"):
        model = KLVAE(config or KLVAEConfig.kl16(), scale_factor)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def published_keys(config: KLVAEConfig | None = None) -> dict[str, list[int]]:
    """Parameter names -> shapes of the architecture (``kl16`` by default), built on the meta device."""
    with torch.device("meta"):
        model = KLVAE(config or KLVAEConfig.kl16())
    return {k: list(v.shape) for k, v in model.state_dict().items()}


# ----- training on SmartWatch images ----------------------------------------------------------------------------

@dataclass(frozen=True)
class KLVAETrainConfig:
    """How to train a KL-VAE on SmartWatch images (defaults: the tiny CPU preset).

    Loss, in model space ``[-1, 1]``: ``mse + l1_weight * l1 + kl_weight * KL`` with ``KL`` the mean per latent
    element (nats) of the posterior against ``N(0, 1)``. The default ``kl_weight`` (1e-4) is about 1% of the
    reconstruction loss at 20 dB for a posterior of standard deviation 0.1 around unit-scale means: small enough that
    reconstruction dominates, large enough that the posterior keeps a variance, so the latent space is smooth for the
    diffusion head. (LDM's and MAR's 1e-6 on sums is about 2e-8 in these units.) Not yet tuned by measurement.
    """

    model: KLVAEConfig = field(default_factory=KLVAEConfig.tiny)
    """Architecture (its ``resolution`` is also the rendering resolution)."""
    split: str = "vision-pretrain"
    """SmartWatch split name of the training images (not used by any experiment)."""
    eval_split: str = "vision-pretrain-eval"
    """SmartWatch split name of the held-out images (PSNR and the scale factor)."""
    data_seed: int = 0
    """Seed of both SmartWatch splits."""
    seed: int = 0
    """Seed of the weight initialisation and the posterior samples."""
    steps: int = 3000
    """Optimiser steps; each step sees ``batch_size`` new images (24,000 images by default)."""
    batch_size: int = 8
    """Images per step."""
    lr: float = 2e-3
    """Peak Adam learning rate (linear warm-up, then cosine decay to ``min_lr_ratio * lr``)."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    l1_weight: float = 1.0
    """Weight of the L1 reconstruction term (beside the unit-weight MSE)."""
    kl_weight: float = 1e-4
    """Weight of the mean per-element KL term."""
    scale_images: int = 256
    """Held-out images whose posterior means set the scale factor ``1 / std``."""
    log_every: int = 100
    """Log one line every this many steps (does not change the result)."""
    eval_images: int = 256
    """Held-out images for the final PSNR (does not change the weights)."""
    threads: int = 1
    """torch intra-op threads during training."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", KLVAEConfig.from_dict(self.model))
        require(isinstance(self.model, KLVAEConfig), f"KL-VAE train config model must be a KLVAEConfig, "
                                                     f"got {self.model!r}")
        for name in ("steps", "batch_size", "log_every", "threads", "scale_images"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    f"KL-VAE train config {name} must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "eval_images", "seed", "data_seed"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                    f"KL-VAE train config {name} must be a non-negative integer, got {v!r}")
        require(self.lr > 0, f"KL-VAE train config lr must be > 0, got {self.lr!r}")
        require(0 <= self.min_lr_ratio <= 1,
                f"KL-VAE train config min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        require(self.l1_weight >= 0 and self.kl_weight >= 0,
                f"KL-VAE loss weights must be >= 0, got l1_weight={self.l1_weight!r}, kl_weight={self.kl_weight!r}")
        require(self.split != self.eval_split, f"the training and held-out splits must differ, both are {self.split!r}")
        SplitConfig(name=self.split, seed=self.data_seed, resolution=self.model.resolution)  # validates name/res

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    def cache_key(self) -> dict[str, Any]:
        """The fields that determine the weights and the scale factor (logging and evaluation size do not)."""
        d = self.to_dict()
        for k in ("log_every", "eval_images", "threads"):
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KLVAETrainConfig":
        check_keys(cls, d, "KL-VAE training config")
        return cls(**d)


@torch.no_grad()
def evaluate(model: KLVAE, x: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction of ``x`` float32 ``(B, 3, R, R)`` in ``[0, 1]`` through the posterior mean.

    Returns ``psnr`` (dB, mean of per-image PSNR), ``psnr_mean_image`` (predicting the mean image of ``x``) and
    ``latent_std`` (standard deviation of the scaled latents; about 1 when the scale factor fits these images).
    """
    was_training = model.training
    model.eval()
    recs, lats = [], []
    for i in range(0, len(x), batch_size):
        lat = model.encode_latents(x[i:i + batch_size])
        lats.append(lat)
        recs.append(model.decode_latents(lat))
    model.train(was_training)
    rec = torch.cat(recs)
    psnr = peak_signal_noise_ratio(rec, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    mean = x.mean(0, keepdim=True).expand_as(x)
    base = peak_signal_noise_ratio(mean, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return {"psnr": float(psnr.mean()), "psnr_mean_image": float(base.mean()),
            "latent_std": float(torch.cat(lats).std())}


@torch.no_grad()
def measure_scale_factor(model: KLVAE, x: torch.Tensor, batch_size: int = 64) -> float:
    """``1 / std`` of the unscaled posterior means of ``x`` ``(B, 3, R, R)`` in ``[0, 1]``."""
    means = [model.moments(model.preprocess(x[i:i + batch_size]))[0] for i in range(0, len(x), batch_size)]
    return float(1.0 / torch.cat(means).std().clamp(min=1e-8))


def train_kl_vae(config: KLVAETrainConfig | None = None, out: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = _stderr) -> Path:
    """Train a KL-VAE on SmartWatch images and save it as an artifact folder; returns the folder.

    With ``out=None`` the folder is the cache entry for this config (``artifact_dir("kl-vae", config.cache_key())``)
    and an existing entry is reused without training. With ``out`` the model is trained and written there
    (atomically). Images are rendered on the fly from ``config.split`` (every step sees new images). The artifact's
    ``config.json`` holds the architecture, the training config and the measured ``scale_factor``; ``info.json`` the
    minutes and the held-out PSNR. Same config (seeds) -> same weights, bit for bit, on the same machine and torch.
    """
    c = config or KLVAETrainConfig()
    require(isinstance(c, KLVAETrainConfig), f"train_kl_vae takes a KLVAETrainConfig, got {c!r}")
    key = c.cache_key()
    if out is None:
        hit = cached(KIND, key)
        if hit is not None:
            if log:
                log(f"kl-vae: reusing cached VAE {hit}")
            return hit
        out = artifact_dir(KIND, key)
    out = Path(out)
    m = c.model
    say = log or (lambda _line: None)
    with _threads(c.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        model = KLVAE(m).train().to(memory_format=torch.channels_last)  # faster CPU convolutions
        gen = torch.Generator().manual_seed(c.seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=c.lr, betas=(0.9, 0.95))
        say(f"kl-vae: training {sum(p.numel() for p in model.parameters()):,} params, {m.resolution} px -> "
            f"{m.grid}x{m.grid}x{m.embed_dim} latents, {c.steps} steps x {c.batch_size} images -> {out}")
        start = time.perf_counter()
        window = {"mse": 0.0, "l1": 0.0, "kl": 0.0, "n": 0}
        for step in range(c.steps):
            x = images(c.split, c.data_seed, m.resolution, step * c.batch_size, (step + 1) * c.batch_size) * 2 - 1
            x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, c)
            xr, mean, logvar = model(x, generator=gen)
            mse = F.mse_loss(xr, x)
            l1 = F.l1_loss(xr, x)
            kl = model.kl(mean, logvar)
            loss = mse + c.l1_weight * l1 + c.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in (("mse", mse), ("l1", l1), ("kl", kl)):
                window[k] += float(v.detach())
            window["n"] += 1
            if (step + 1) % c.log_every == 0 or step + 1 == c.steps:
                n = window["n"]
                el = time.perf_counter() - start
                ips = (step + 1) * c.batch_size / el
                eta = (c.steps - step - 1) * c.batch_size / ips
                psnr = 10 * math.log10(4.0 / max(window["mse"] / n, 1e-12))  # mse in [-1, 1] space
                say(f"kl-vae step {step + 1}/{c.steps} mse {window['mse'] / n:.4f} l1 {window['l1'] / n:.4f} "
                    f"kl {window['kl'] / n:.3f} psnr {psnr:.2f} dB {ips:.1f} img/s eta {eta / 60:.1f} min")
                window = {k: 0.0 for k in window}
        model.eval()
        minutes = (time.perf_counter() - start) / 60
        model.scale_factor = measure_scale_factor(model, images(c.eval_split, c.data_seed, m.resolution, 0,
                                                                c.scale_images))
        info: dict[str, Any] = {"minutes": round(minutes, 3), "steps": c.steps, "images_seen": c.steps * c.batch_size,
                                "images_per_s": round(c.steps * c.batch_size / max(minutes * 60, 1e-9), 2),
                                "tokens_per_image": m.num_tokens, "scale_factor": model.scale_factor}
        if c.eval_images:
            held = images(c.eval_split, c.data_seed, m.resolution, 0, c.eval_images)
            metrics = evaluate(model, held)
            info.update({k: round(v, 4) for k, v in metrics.items()})
            info["eval_images"] = c.eval_images
            say(f"kl-vae: held-out PSNR {metrics['psnr']:.2f} dB (mean-image baseline "
                f"{metrics['psnr_mean_image']:.2f} dB), scale factor {model.scale_factor:.4f}, {minutes:.1f} min")
    save_artifact(out, model.state_dict(), {"kind": KIND, "model": m.to_dict(), "train": c.to_dict(),
                                            "scale_factor": model.scale_factor}, info)
    return out
