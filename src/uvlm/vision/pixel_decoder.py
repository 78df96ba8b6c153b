"""A pixel decoder for continuous patch embeddings: ``(B, N, D)`` frozen encoder features -> ``(B, 3, H, W)`` images.

A model that generates continuous image embeddings (for example a SigLIP tower's 8x8 patch tokens at 64 px) has no
pixels to show; this decoder supplies them, so that generated embeddings can be read by the SmartWatch reader and
scored with FID like VQ outputs. It is a small convolutional decoder: the token grid is reshaped to ``(B, D, h, w)``,
layer-normalised, projected, refined by residual blocks and upsampled 2x per stage (nearest + conv) to the image
side. It is trained for reconstruction (L2, plus optionally L1) of freshly rendered SmartWatch images against the
frozen encoder's features.

The encoder is any object with ``encode(images) -> float (B, N, D)`` (taking float ``(B, 3, R, R)`` in [0, 1]), a
``resolution`` attribute and an identity: ``config_dict()`` (or ``tower_config()``, or a ``config`` with
``to_dict()``). The identity and its hash are stored in the decoder's artifact, so a decoder can check that the
features it is given come from the encoder it was trained on.

    >>> path = train_pixel_decoder(encoder, PixelDecoderConfig(steps=2000))
    >>> decoder = load_pixel_decoder(path)
    >>> images = decoder.decode(encoder.encode(batch))        # (B, 3, R, R) float32 in [0, 1]
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.image import PeakSignalNoiseRatio

from uvlm.data.config import SplitConfig
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import UserError, check_keys, require
from uvlm.vision.artifacts import (announce_training, artifact_dir, cached, check_state_dict, config_hash,
                                   load_artifact, save_artifact)
from uvlm.vision.base import to_float_batch

log = logging.getLogger(__name__)

KIND = "pixel-decoder"
TRAIN_SPLIT = "pixel-decoder-train"
TEST_SPLIT = "pixel-decoder-test"


class FeatureEncoder(Protocol):
    """What :func:`train_pixel_decoder` needs from an encoder (plus an identity, see :func:`encoder_identity`)."""

    resolution: int
    """Image side in pixels."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float ``(B, 3, R, R)`` in [0, 1] -> float ``(B, N, D)`` features, ``N = h * w``."""
        ...


@dataclass(frozen=True)
class PixelDecoderConfig:
    """How to build and train a :class:`PixelDecoder`. The grid, feature size and resolution come from the encoder."""

    seed: int = 0
    """Seed of the weight initialisation and of the rendered training and test splits."""
    steps: int = 1000
    """Optimizer steps; every step sees ``batch_size`` newly rendered images (1,000 x 32: about 10 minutes on one
    core for the tiny SigLIP tower)."""
    batch_size: int = 32
    """Images per step."""
    lr: float = 2e-3
    """Peak AdamW learning rate (one-cycle schedule: warm-up then cosine decay)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    channels: int = 64
    """Channels at the token grid's resolution; halved at each 2x upsampling, never below ``min_channels``."""
    min_channels: int = 16
    """Lowest channel count (at the highest resolutions; most of the compute is spent there)."""
    blocks: int = 1
    """Residual blocks per resolution stage (the token grid gets one more)."""
    l1_weight: float = 0.0
    """Loss = MSE + ``l1_weight`` * L1 (0: plain L2)."""
    eval_images: int = 500
    """Held-out rendered images for the final PSNR written to ``info.json``."""
    eval_every: int = 0
    """Also measure held-out PSNR (on up to 200 images) every this many steps (0: only at the end)."""
    log_every: int = 100
    """Steps between log lines."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "channels", "min_channels", "blocks", "eval_images", "log_every"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    f"pixel decoder {name} must be a positive integer, got {v!r}")
        for name in ("seed", "steps", "eval_every"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                    f"pixel decoder {name} must be a non-negative integer, got {v!r}")
        for name in ("lr", "weight_decay", "l1_weight"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                    f"pixel decoder {name} must be a number, got {v!r}")
        require(self.lr > 0, f"pixel decoder lr must be positive, got {self.lr!r}")
        require(self.weight_decay >= 0, f"pixel decoder weight_decay must be >= 0, got {self.weight_decay!r}")
        require(self.l1_weight >= 0, f"pixel decoder l1_weight must be >= 0, got {self.l1_weight!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PixelDecoderConfig":
        check_keys(cls, d, "pixel decoder config")
        return cls(**d)


def encoder_identity(encoder: Any) -> dict[str, Any]:
    """The JSON-able identity of an encoder: ``config_dict()``, else ``tower_config()``, else ``config.to_dict()``."""
    for getter in ("config_dict", "tower_config"):
        fn = getattr(encoder, getter, None)
        if callable(fn):
            return dict(fn())
    cfg = getattr(encoder, "config", None)
    if cfg is not None and callable(getattr(cfg, "to_dict", None)):
        return dict(cfg.to_dict())
    raise UserError(f"cannot train a pixel decoder for a {type(encoder).__name__}: the encoder needs a config_dict() "
                    f"method that identifies it (its artifact config)")


# ----- the network ---------------------------------------------------------------------------------------------------

class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        g = math.gcd(8, c)
        self.body = nn.Sequential(nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1),
                                  nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelDecoder(nn.Module):
    """Token grid ``(B, N, D)``, ``N = h * w`` row-major -> image ``(B, 3, R, R)`` float32 in [0, 1].

    Stages: LayerNorm over D, 1x1 conv to ``channels``, residual blocks at ``h x w``, then per 2x upsampling (nearest +
    3x3 conv) residual blocks with halved channels; if ``R`` is not ``h`` times a power of two a final bilinear resize
    reaches ``R``; a 3x3 conv and a sigmoid give the pixels.
    """

    def __init__(self, dim: int, grid: tuple[int, int], resolution: int, config: PixelDecoderConfig | None = None):
        super().__init__()
        self.config = config or PixelDecoderConfig()
        c = self.config
        self.dim, self.grid, self.resolution = int(dim), (int(grid[0]), int(grid[1])), int(resolution)
        h, w = self.grid
        require(h >= 1 and w >= 1 and h <= resolution and w <= resolution,
                f"pixel decoder grid {h}x{w} does not fit images of side {resolution}")
        self.norm = nn.LayerNorm(self.dim)
        ch = c.channels
        layers: list[nn.Module] = [nn.Conv2d(self.dim, ch, 1)] + [_ResBlock(ch) for _ in range(c.blocks + 1)]
        size = max(h, w)
        while size * 2 <= resolution:
            nxt = max(c.min_channels, ch // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, nxt, 3, 1, 1)]
            layers += [_ResBlock(nxt) for _ in range(c.blocks)]
            ch, size = nxt, size * 2
        self.body = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.GroupNorm(math.gcd(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, 1, 1))

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """float ``(B, N, D)`` -> float32 ``(B, 3, R, R)`` in [0, 1] (differentiable)."""
        if features.ndim != 3 or features.shape[1] != self.num_tokens or features.shape[2] != self.dim:
            raise UserError(f"pixel decoder takes features of shape (B, {self.num_tokens}, {self.dim}), got "
                            f"{tuple(features.shape)}: decode the features of the encoder it was trained on")
        b = features.shape[0]
        h, w = self.grid
        x = self.norm(features.float()).transpose(1, 2).reshape(b, self.dim, h, w)
        x = self.body(x)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(x))

    @torch.no_grad()
    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """float ``(B, N, D)`` -> float32 ``(B, 3, R, R)`` in [0, 1] (the same interface as a VQ decoder)."""
        return self(features)


# ----- training ------------------------------------------------------------------------------------------------------

def _split(name: str, seed: int, resolution: int) -> SmartWatch:
    return SmartWatch(SplitConfig(name=name, seed=seed, resolution=resolution, n_vqa=0, n_caption=0, n_generation=0))


def _images(sw: SmartWatch, start: int, stop: int) -> torch.Tensor:
    return to_float_batch([sw.image(i) for i in range(start, stop)], sw.config.resolution)


@torch.no_grad()
def _encode(encoder: Any, x: torch.Tensor) -> torch.Tensor:
    f = encoder.encode(x)
    if not isinstance(f, torch.Tensor) or f.ndim != 3 or not f.is_floating_point():
        got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise UserError(f"the encoder's encode() must return float (B, N, D) features for a pixel decoder, got {got}: "
                        f"use a continuous encoder (VQ tokenizers have their own decoder)")
    return f.float()


def _grid(n: int) -> tuple[int, int]:
    s = math.isqrt(n)
    require(s * s == n, f"the encoder gives {n} tokens per image, not a square grid: a pixel decoder needs h*w tokens "
                        f"with h == w")
    return s, s


def probe_encoder(encoder: Any) -> tuple[int, int, tuple[int, int]]:
    """(resolution, feature size D, token grid (h, w)) of an encoder, from one rendered image."""
    resolution = getattr(encoder, "resolution", None)
    require(isinstance(resolution, int) and resolution > 0,
            f"the encoder {type(encoder).__name__} has no integer resolution attribute: a pixel decoder needs to know "
            f"the image side it encodes")
    f = _encode(encoder, _images(_split(TRAIN_SPLIT, 0, resolution), 0, 1))
    return resolution, int(f.shape[2]), _grid(int(f.shape[1]))


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, l1_weight: float) -> torch.Tensor:
    """MSE + ``l1_weight`` * L1 over all pixels."""
    loss = F.mse_loss(pred, target)
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(pred, target)
    return loss


@torch.no_grad()
def evaluate_pixel_decoder(decoder: PixelDecoder, encoder: FeatureEncoder, n_images: int, seed: int = 0,
                           batch_size: int = 50) -> dict[str, float]:
    """Held-out reconstruction quality on rendered ``pixel-decoder-test`` images: ``psnr`` (dB, data range 1) and
    ``mse``."""
    was_training = decoder.training
    decoder.eval()
    sw = _split(TEST_SPLIT, seed, decoder.resolution)
    psnr = PeakSignalNoiseRatio(data_range=1.0)
    se, count = 0.0, 0
    for i in range(0, n_images, batch_size):
        x = _images(sw, i, min(i + batch_size, n_images))
        y = decoder(_encode(encoder, x))
        psnr.update(y, x)
        se += float(F.mse_loss(y, x, reduction="sum"))
        count += x.numel()
    decoder.train(was_training)
    return {"psnr": float(psnr.compute()), "mse": se / max(1, count), "n_images": float(n_images)}


def fit_pixel_decoder(encoder: FeatureEncoder, config: PixelDecoderConfig) -> tuple[PixelDecoder, dict[str, Any]]:
    """Train a pixel decoder in memory against a frozen ``encoder`` (one CPU thread); returns it and a record."""
    torch.set_num_threads(1)
    resolution, dim, grid = probe_encoder(encoder)
    log.info("pixel-decoder: %d steps x %d images at %d px, decoding a %dx%d grid of %d-dim features", config.steps,
             config.batch_size, resolution, grid[0], grid[1], dim)
    train = _split(TRAIN_SPLIT, config.seed, resolution)
    torch.manual_seed(config.seed)
    decoder = PixelDecoder(dim, grid, resolution, config)
    decoder.train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(1, config.steps),
                                                pct_start=0.1, anneal_strategy="cos")
    curve: list[dict[str, float]] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    run, n_run = 0.0, 0
    for step in range(1, config.steps + 1):
        i = (step - 1) * config.batch_size
        x = _images(train, i, i + config.batch_size)
        loss = reconstruction_loss(decoder(_encode(encoder, x)), x, config.l1_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        run += losses[-1]
        n_run += 1
        # the first line comes early (step 10), so that a long training is never silent and states its ETA at once
        if step % config.log_every == 0 or step == config.steps or step == min(10, config.log_every):
            el = time.perf_counter() - t0
            eta = el / step * (config.steps - step)
            log.info("pixel-decoder step %d/%d loss %.5f (psnr~%.2f dB) lr %.2e %.0f img/s %.1f min, eta %.1f min",
                     step, config.steps, run / n_run, -10 * math.log10(max(run / n_run, 1e-12)),
                     sched.get_last_lr()[0], step * config.batch_size / el, el / 60, eta / 60)
            run, n_run = 0.0, 0
        if config.eval_every and step % config.eval_every == 0 and step < config.steps:
            m = evaluate_pixel_decoder(decoder, encoder, min(200, config.eval_images), seed=config.seed)
            m.update(step=step, minutes=(time.perf_counter() - t0) / 60)
            curve.append(m)
            log.info("pixel-decoder eval step %d: psnr %.2f dB", step, m["psnr"])
    minutes = (time.perf_counter() - t0) / 60
    decoder.eval()
    metrics = evaluate_pixel_decoder(decoder, encoder, config.eval_images, seed=config.seed)
    log.info("pixel-decoder done: %d steps in %.1f min; held-out psnr %.2f dB", config.steps, minutes, metrics["psnr"])
    record = {"train_minutes": minutes, "test": metrics, "curve": curve, "first_loss": losses[0] if losses else None,
              "last_loss": losses[-1] if losses else None, "train_split": TRAIN_SPLIT, "test_split": TEST_SPLIT}
    return decoder, record


def _artifact_config(encoder: Any, config: PixelDecoderConfig) -> dict[str, Any]:
    """The decoder's artifact config (and cache key): its training config, shape and the encoder's identity."""
    ident = encoder_identity(encoder)
    resolution, dim, grid = probe_encoder(encoder)
    return {"kind": KIND, **config.to_dict(), "resolution": resolution, "dim": dim, "grid": list(grid),
            "encoder": ident, "encoder_hash": config_hash(ident)}


def train_pixel_decoder(encoder: FeatureEncoder, config: PixelDecoderConfig | None = None, out: str | Path | None = None) -> Path:
    """Train a pixel decoder for a frozen ``encoder`` and save it (``kind: pixel-decoder``); returns the folder.

    ``config.json`` records the encoder's identity (``encoder``) and its hash (``encoder_hash``, the name of the
    encoder's artifact folder when it is a uvlm artifact). With ``out=None`` the folder is the cache entry for
    (config, encoder) and an existing one is reused. ``info.json`` holds the held-out PSNR and the training minutes.
    """
    config = config or PixelDecoderConfig()
    key = _artifact_config(encoder, config)
    if out is None:
        hit = cached(KIND, key)
        if hit is not None:
            log.info("pixel-decoder: reusing %s", hit)
            return hit
        out = artifact_dir(KIND, key)
        announce_training(KIND)
    with torch.enable_grad():  # the first decode of a source trains its decoder, often inside torch.no_grad()
        decoder, record = fit_pixel_decoder(encoder, config)
    return save_artifact(out, decoder.state_dict(), key, info=record)


def load_pixel_decoder(path: str | Path) -> PixelDecoder:
    """Load a pixel decoder folder written by :func:`train_pixel_decoder` (eval mode). ``decoder.encoder`` holds the
    identity of the encoder it decodes; see :func:`check_encoder`."""
    state, cfg = load_artifact(path, kind=KIND)
    try:
        body = {k: cfg[k] for k in (f.name for f in fields(PixelDecoderConfig))}
        dim, grid, resolution = int(cfg["dim"]), tuple(cfg["grid"]), int(cfg["resolution"])
        encoder = dict(cfg["encoder"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}/config.json is not a pixel decoder config (bad or missing {e}): retrain it") from None
    decoder = PixelDecoder(dim, grid, resolution, PixelDecoderConfig.from_dict(body))  # type: ignore[arg-type]
    decoder.encoder = encoder  # type: ignore[assignment]
    decoder.encoder_hash = cfg.get("encoder_hash")  # type: ignore[assignment]
    check_state_dict(decoder, state, str(path))
    decoder.load_state_dict(state)
    return decoder.eval()


def check_encoder(decoder: PixelDecoder, encoder: Any) -> None:
    """Raise :class:`UserError` unless ``encoder`` is the one ``decoder`` was trained on (same identity hash)."""
    want = getattr(decoder, "encoder_hash", None)
    got = config_hash(encoder_identity(encoder))
    require(want is None or want == got,
            f"this pixel decoder was trained on encoder {want}, not on the given encoder {got}: train a pixel decoder "
            f"for this encoder with train_pixel_decoder")


__all__ = ["PixelDecoderConfig", "PixelDecoder", "train_pixel_decoder", "load_pixel_decoder", "fit_pixel_decoder",
           "evaluate_pixel_decoder", "encoder_identity", "probe_encoder", "check_encoder", "reconstruction_loss"]
