"""Train a small VQ tokenizer (:meth:`VQConfig.tiny`) on SmartWatch images, on one CPU thread.

Images come from a dedicated split (``vision-pretrain`` by default), rendered on the fly (every step sees new
images), so no experiment's train or test image is ever seen. Held-out PSNR is measured on another dedicated split
(``vision-pretrain-eval``).

Loss: ``mse(x_hat, x) + l1_weight * l1(x_hat, x) + codebook_weight * (||sg(z) - e||^2 + beta * ||z - sg(e)||^2)``
in model space (``[-1, 1]``). Dead codes (absent from the last ``usage_window`` assignments) are re-initialised from
random encoder outputs of the current batch every ``restart_every`` steps.

Measured on a shared 2-core machine (one thread per run, two runs side by side, batch 8, lr 2e-3, 250 steps =
2,000 images, about 5 minutes, about 6.5 images/s; held-out PSNR on 256 ``vision-pretrain-eval`` images, where
predicting the mean image scores 13.3 dB):

==================  ========  =======  ==========  ==========================================================
config              tokens    params   PSNR (dB)   code usage (held-out) / what the reconstructions show
==================  ========  =======  ==========  ==========================================================
64 px, ds 4 (tiny)  256       0.77 M   15.65       99.6 %; hands visible, colours washed out, text not legible
64 px, ds 8         64        2.99 M   14.46       88.0 %; face disc only, no hands, no text
96 px, ds 8         144       2.99 M   not run     3x slower per image than at 64 px (5.0 vs 15.9 images/s)
==================  ========  =======  ==========  ==========================================================

Both runs are far from converged: the default ``steps`` trains 12x longer. An extra L1 term was not measured
(``l1_weight`` stays 0).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

from uvlm.data.config import SplitConfig
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import check_keys, require
from uvlm.vision.artifacts import announce_training, artifact_dir, cached, save_artifact
from uvlm.vision.base import to_float_batch
from uvlm.vision.vq import KIND, VQConfig, VQTokenizer, load_vq

__all__ = ["VQTrainConfig", "train_vq", "load_vq", "evaluate", "images"]


@dataclass(frozen=True)
class VQTrainConfig:
    """How to train a VQ tokenizer on SmartWatch images (defaults: the tiny CPU preset)."""

    model: VQConfig = field(default_factory=VQConfig.tiny)
    """Architecture (its ``resolution`` is also the rendering resolution)."""
    split: str = "vision-pretrain"
    """SmartWatch split name the training images come from (not used by any experiment)."""
    eval_split: str = "vision-pretrain-eval"
    """SmartWatch split name of the held-out images for PSNR and code usage."""
    data_seed: int = 0
    """Seed of both SmartWatch splits."""
    seed: int = 0
    """Seed of the weight initialisation and the dead-code restarts."""
    steps: int = 3000
    """Optimiser steps; each step sees ``batch_size`` new images (default: 24,000 images, roughly 30-60 minutes on
    one thread; 250 steps reached only 15.7 dB, see the module docstring)."""
    batch_size: int = 8
    """Images per step."""
    lr: float = 2e-3
    """Peak Adam learning rate (linear warm-up, then cosine decay to ``min_lr_ratio * lr``)."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    codebook_weight: float = 1.0
    """Weight of the codebook + commitment loss."""
    l1_weight: float = 0.0
    """Weight of an extra L1 pixel loss (0: plain L2 reconstruction)."""
    restart_every: int = 10
    """Re-initialise dead codes every this many steps (0: never); stops after 90% of the steps."""
    log_every: int = 100
    """Log one line every this many steps (does not change the result)."""
    eval_images: int = 256
    """Held-out images for the final PSNR and code usage (does not change the weights)."""
    threads: int = 1
    """torch intra-op threads during training."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", VQConfig.from_dict(self.model))
        require(isinstance(self.model, VQConfig), f"VQ train config model must be a VQConfig, got {self.model!r}")
        for name in ("steps", "batch_size", "log_every", "threads"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    f"VQ train config {name} must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "restart_every", "eval_images", "seed", "data_seed"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                    f"VQ train config {name} must be a non-negative integer, got {v!r}")
        require(self.lr > 0, f"VQ train config lr must be > 0, got {self.lr!r}")
        require(0 <= self.min_lr_ratio <= 1, f"VQ train config min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        require(self.codebook_weight >= 0 and self.l1_weight >= 0, "VQ loss weights must be >= 0")
        require(self.split != self.eval_split, f"the training and held-out splits must differ, both are {self.split!r}")
        SplitConfig(name=self.split, seed=self.data_seed, resolution=self.model.resolution)  # validates name/res

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    def cache_key(self) -> dict[str, Any]:
        """The fields that determine the weights (logging cadence and evaluation size do not)."""
        d = self.to_dict()
        for k in ("log_every", "eval_images", "threads"):
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VQTrainConfig":
        check_keys(cls, d, "VQ training config")
        return cls(**d)


def images(split: str, seed: int, resolution: int, start: int, stop: int) -> torch.Tensor:
    """SmartWatch images ``start..stop-1`` of ``split`` as float32 ``(B, 3, R, R)`` in ``[0, 1]``."""
    sw = SmartWatch(SplitConfig(name=split, seed=seed, resolution=resolution, n_vqa=0, n_caption=0, n_generation=0))
    return to_float_batch([sw.image(i) for i in range(start, stop)], resolution)


@torch.no_grad()
def evaluate(model: VQTokenizer, x: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction metrics on ``x`` float32 ``(B, 3, R, R)`` in ``[0, 1]``.

    Returns ``psnr`` (dB, mean of per-image PSNR), ``psnr_mean_image`` (the baseline of predicting the mean image of
    ``x`` for every image) and ``code_usage`` (fraction of codes used on these images).
    """
    was_training = model.training
    model.eval()
    recs, ids = [], []
    for i in range(0, len(x), batch_size):
        b = model.encode(x[i:i + batch_size])
        ids.append(b)
        recs.append(model.decode(b))
    model.train(was_training)
    rec = torch.cat(recs)
    all_ids = torch.cat(ids)
    psnr = peak_signal_noise_ratio(rec, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    mean = x.mean(0, keepdim=True).expand_as(x)
    base = peak_signal_noise_ratio(mean, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return {"psnr": float(psnr.mean()), "psnr_mean_image": float(base.mean()),
            "code_usage": float(torch.unique(all_ids).numel()) / model.codebook_size}


def _lr_at(step: int, c: VQTrainConfig) -> float:
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    t = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
    return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@torch.no_grad()
def _restart_dead_codes(model: VQTokenizer, z: torch.Tensor, opt: torch.optim.Optimizer,
                        gen: torch.Generator) -> int:
    """Replace codes absent from the usage window by random encoder outputs ``z`` ``(M, D)``; returns how many."""
    q = model.quantize
    used = q.codebook_used
    if used is None or bool((used < 0).any()):  # window not full yet: no reliable statistic
        return 0
    seen = torch.zeros(q.n_e, dtype=torch.bool)
    seen[used.long()] = True
    dead = (~seen).nonzero().flatten()
    if dead.numel() == 0:
        return 0
    pick = torch.randint(0, z.shape[0], (dead.numel(),), generator=gen)
    w = q.embedding.weight
    new = z[pick]
    w[dead] = F.normalize(new, dim=-1) if q.l2_norm else new
    state = opt.state.get(w, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead] = 0
    return int(dead.numel())


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_vq(config: VQTrainConfig | None = None, out: str | os.PathLike | None = None,
             log: Callable[[str], None] | None = _stderr) -> Path:
    """Train a VQ tokenizer and save it as an artifact folder; returns the folder.

    With ``out=None`` the folder is the cache entry for this config (``artifact_dir("vq", config.cache_key())``)
    and an existing entry is reused without training. With ``out`` the model is trained and written there
    (atomically). Same config (seed) -> same weights, bit for bit, on the same machine and torch build.
    """
    c = config or VQTrainConfig()
    key = c.cache_key()
    if out is None:
        hit = cached(KIND, key)
        if hit is not None:
            if log:
                log(f"vq: reusing cached tokenizer {hit}")
            return hit
        out = artifact_dir(KIND, key)
        announce_training(KIND)
    out = Path(out)
    m = c.model
    say = log or (lambda _line: None)
    with _threads(c.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        model = VQTokenizer(m).train().to(memory_format=torch.channels_last)  # faster CPU convolutions
        gen = torch.Generator().manual_seed(c.seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=c.lr, betas=(0.9, 0.95))
        say(f"vq: training {sum(p.numel() for p in model.parameters()):,} params, {m.resolution} px, "
            f"{m.num_tokens} tokens/image, {m.codebook_size} codes, {c.steps} steps x {c.batch_size} images -> {out}")
        start = time.perf_counter()
        window: dict[str, float] = {"rec": 0.0, "codebook": 0.0, "commit": 0.0, "mse": 0.0, "n": 0}
        restarted = 0
        for step in range(c.steps):
            x = images(c.split, c.data_seed, m.resolution, step * c.batch_size, (step + 1) * c.batch_size) * 2 - 1
            x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, c)
            z = model.quant_conv(model.encoder(x))
            zq, ids, vq = model.quantize(z)
            xr = model.decode_latents(zq)
            mse = F.mse_loss(xr, x)
            rec = mse + (c.l1_weight * F.l1_loss(xr, x) if c.l1_weight else 0.0)
            loss = rec + c.codebook_weight * (vq["codebook"] + vq["commit"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.quantize.record_usage(ids)
            if c.restart_every and (step + 1) % c.restart_every == 0 and step < 0.9 * c.steps:
                restarted += _restart_dead_codes(model, z.detach().permute(0, 2, 3, 1).reshape(-1, m.codebook_embed_dim),
                                                 opt, gen)
            for k, v in (("rec", rec), ("codebook", vq["codebook"]), ("commit", vq["commit"]), ("mse", mse)):
                window[k] += float(v.detach())
            window["n"] += 1
            if (step + 1) % c.log_every == 0 or step + 1 == c.steps:
                n = window["n"]
                el = time.perf_counter() - start
                ips = (step + 1) * c.batch_size / el
                eta = (c.steps - step - 1) * c.batch_size / ips
                # mse is in [-1, 1] space: PSNR on [0, 1] images = 10 log10(4 / mse)
                psnr = 10 * math.log10(4.0 / max(window["mse"] / n, 1e-12))
                say(f"vq step {step + 1}/{c.steps} rec {window['rec'] / n:.4f} codebook {window['codebook'] / n:.4f} "
                    f"commit {window['commit'] / n:.4f} psnr {psnr:.2f} dB usage {model.quantize.usage():.3f} "
                    f"restarted {restarted} {ips:.1f} img/s eta {eta / 60:.1f} min")
                window = {k: 0.0 for k in window}
        minutes = (time.perf_counter() - start) / 60
        info: dict[str, Any] = {"minutes": round(minutes, 3), "steps": c.steps, "images_seen": c.steps * c.batch_size,
                                "images_per_s": round(c.steps * c.batch_size / (minutes * 60), 2),
                                "codes_restarted": restarted, "tokens_per_image": m.num_tokens}
        if c.eval_images:
            held = images(c.eval_split, c.data_seed, m.resolution, 0, c.eval_images)
            metrics = evaluate(model, held)
            info.update({k: round(v, 4) for k, v in metrics.items()})
            info["eval_images"] = c.eval_images
            say(f"vq: held-out PSNR {metrics['psnr']:.2f} dB (mean-image baseline {metrics['psnr_mean_image']:.2f} dB),"
                f" code usage {metrics['code_usage']:.3f}, {minutes:.1f} min")
    model.eval()
    save_artifact(out, model.state_dict(), {"kind": KIND, "model": m.to_dict(), "train": c.to_dict()}, info)
    return out
