"""The SmartWatch reader: a small supervised network that reads the ground-truth attributes back from the pixels.

It is an oracle for the generation experiments: a generated image is scored by what the reader sees in it (time,
weather, battery, corners), and its penultimate features give an in-domain FID that, unlike Inception features,
are sensitive to exactly the details the dataset is about (hand angles, the ``NN%`` text).

One classification head per attribute:

=====================  =======  ==========================================================================
head                   classes  target
=====================  =======  ==========================================================================
``hour``               12       ``hour mod 12`` (0 and 12 look the same on the dial; ``read`` returns 0..11)
``minute``             60       minute
``second``             60       second
``weather``            3        index into :data:`uvlm.data.WEATHERS`
``weather_position``   4        index into :data:`uvlm.data.CORNERS`
``battery_position``   4        index into :data:`uvlm.data.CORNERS`
``battery``            101      battery level 0..100
=====================  =======  ==========================================================================

It trains on an endless stream of freshly rendered images of its own split (``reader-train``) and is evaluated on
another split (``reader-test``), so there is nothing to overfit. At 64 px the default config (a width-16 CNN, 1,500
steps of 64 images) reads every attribute of held-out images at >= 99.9% (minute 99.95%, battery 100%) in under
9 minutes on one CPU thread (``benchmarks/legibility.py``). A small ViT (8x8-pixel patches, 96-d, 3 layers) trained
markedly slower: after 3 minutes it read minutes at 73% and battery at 7% where the CNN read 97% and 90%.

    >>> path = train_reader(ReaderConfig())          # cached by config hash
    >>> reader = load_reader(path)
    >>> reader.read(images)[0]["minute"], reader.features(images).shape      # (B, reader.num_features)
    >>> fid = FrechetInceptionDistance(feature=FIDFeatureExtractor(reader), normalize=True)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from uvlm.data.attributes import CORNERS, WEATHERS, WatchAttributes
from uvlm.data.config import MIN_RESOLUTION, SplitConfig
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import UserError, check_keys, require
from uvlm.vision.artifacts import (announce_training, artifact_dir, cached, check_state_dict,
                                   load_artifact, save_artifact)
from uvlm.vision.base import ImageBatch, to_float_batch

log = logging.getLogger(__name__)

KIND = "reader"

#: Head name -> number of classes, in a fixed order (part of the checkpoint layout).
HEADS: dict[str, int] = {
    "hour": 12,
    "minute": 60,
    "second": 60,
    "weather": len(WEATHERS),
    "weather_position": len(CORNERS),
    "battery_position": len(CORNERS),
    "battery": 101,
}

#: Heads whose classes lie on a circle (used for the circular error metrics).
CIRCULAR = {"hour": 12, "minute": 60, "second": 60}


@dataclass(frozen=True)
class ReaderConfig:
    """How to build and train a :class:`SmartWatchReader`. Same config, same seed: same weights, byte for byte."""

    resolution: int = 64
    """Image side in pixels the reader takes (the images it reads must have this size)."""
    seed: int = 0
    """Seed of the weight initialisation and of the rendered training and test splits."""
    steps: int = 1500
    """Optimizer steps. Every step sees ``batch_size`` new images (never a repeat). The default reads minute and
    battery at >= 99% at 64 px (benchmarks/legibility.py); about 8 minutes on one contended CPU thread."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 3e-3
    """Peak learning rate of AdamW under a one-cycle schedule (warm-up then cosine decay)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    arch: str = "cnn"
    """``cnn`` (a small strided ConvNet, the default: it trains faster on one CPU thread) or ``vit`` (a small
    Vision Transformer over 8x8-pixel patches)."""
    width: int = 16
    """CNN: channels of the first stage (doubled at each of the two later stages). ViT: a quarter of the model
    width (so ``width=32`` gives 128-d tokens)."""
    depth: int = 4
    """ViT only: number of transformer layers."""
    feature_dim: int = 256
    """Size of the penultimate feature vector (``features`` output, FID dimension)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing on every head."""
    eval_images: int = 2000
    """Held-out rendered test images for the accuracies written to ``info.json``."""
    eval_every: int = 0
    """Also evaluate on the first 500 test images every this many steps (0: only at the end); logged and stored
    in ``info.json`` as a learning curve."""
    log_every: int = 100
    """Steps between log lines."""
    max_minutes: float = 0.0
    """Stop training after this many minutes of wall time even if ``steps`` are not done (0: no limit). A limit makes
    the result depend on the machine's speed; use it for budgeted benchmarks, not for reproducible artifacts."""

    def __post_init__(self) -> None:
        require(isinstance(self.resolution, int) and self.resolution >= MIN_RESOLUTION,
                f"reader resolution {self.resolution!r} is below the legible minimum of {MIN_RESOLUTION} px: "
                f"use --resolution {MIN_RESOLUTION} or more")
        for name in ("steps", "batch_size", "width", "depth", "feature_dim", "eval_images", "log_every"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= (0 if name == "steps" else 1),
                    f"reader {name} must be a positive integer, got {v!r}")
        require(isinstance(self.seed, int) and self.seed >= 0, f"reader seed must be a non-negative integer, got {self.seed!r}")
        require(isinstance(self.eval_every, int) and self.eval_every >= 0,
                f"reader eval_every must be a non-negative integer, got {self.eval_every!r}")
        require(self.arch in ("cnn", "vit"), f"unknown reader arch {self.arch!r}: use cnn or vit")
        require(self.arch != "vit" or self.resolution % 8 == 0,
                f"the vit reader needs a resolution divisible by 8, got {self.resolution}: use the cnn reader or "
                f"--resolution {self.resolution // 8 * 8}")
        for name in ("lr", "weight_decay", "label_smoothing", "max_minutes"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                    f"reader {name} must be a number, got {v!r}")
        require(self.lr > 0, f"reader lr must be positive, got {self.lr!r}")
        require(self.weight_decay >= 0, f"reader weight_decay must be >= 0, got {self.weight_decay!r}")
        require(0 <= self.label_smoothing < 1, f"reader label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        require(self.max_minutes >= 0, f"reader max_minutes must be >= 0, got {self.max_minutes!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReaderConfig":
        check_keys(cls, d, "reader config")
        return cls(**d)

    def model_dict(self) -> dict[str, Any]:
        """The fields that decide the network's shape (enough to rebuild it for loading)."""
        return {k: getattr(self, k) for k in ("resolution", "arch", "width", "depth", "feature_dim")}


# ----- targets -------------------------------------------------------------------------------------------------------

def attribute_targets(attrs: list[WatchAttributes]) -> dict[str, torch.Tensor]:
    """Class targets per head: ``{head: int64 (B,)}``."""
    cols: dict[str, list[int]] = {h: [] for h in HEADS}
    for a in attrs:
        cols["hour"].append(a.hour % 12)
        cols["minute"].append(a.minute)
        cols["second"].append(a.second)
        cols["weather"].append(WEATHERS.index(a.weather))
        cols["weather_position"].append(CORNERS.index(a.weather_position))
        cols["battery_position"].append(CORNERS.index(a.battery_position))
        cols["battery"].append(a.battery)
    return {h: torch.tensor(v, dtype=torch.int64) for h, v in cols.items()}


# ----- the network ---------------------------------------------------------------------------------------------------

def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _CNNTrunk(nn.Module):
    """Strided ConvNet: ``(B, 3, R, R) -> (B, 4w, 8, 8)`` (adaptive pooling makes the grid 8x8 at any resolution)."""

    def __init__(self, width: int):
        super().__init__()
        a, b, c = width, 2 * width, 4 * width
        self.net = nn.Sequential(
            nn.Conv2d(3, a, 4, 2, 1), nn.ReLU(inplace=True),  # R/2: a lossless-sized learned 2x2 patch embedding
            _conv_bn(a, a, 1),
            _conv_bn(a, b, 2), _conv_bn(b, b, 1),  # R/4
            _conv_bn(b, c, 2), _conv_bn(c, c, 1),  # R/8
            nn.AdaptiveAvgPool2d(8),
        )
        self.channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ViTTrunk(nn.Module):
    """ViT over 8x8-pixel patches: ``(B, 3, R, R) -> (B, 4w, R/8, R/8)``, pooled to an 8x8 grid."""

    def __init__(self, width: int, depth: int, resolution: int):
        super().__init__()
        d = 4 * width
        n = (resolution // 8) ** 2
        self.embed = nn.Conv2d(3, d, 8, 8)
        self.pos = nn.Parameter(torch.randn(1, n, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, max(1, d // 32), 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.pool = nn.AdaptiveAvgPool2d(8)
        self.channels = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)
        b, d, h, w = t.shape
        t = self.norm(self.blocks(t.flatten(2).transpose(1, 2) + self.pos))
        return self.pool(t.transpose(1, 2).reshape(b, d, h, w))


class SmartWatchReader(nn.Module):
    """Reads SmartWatch attributes from pixels.

    Interface (see :mod:`uvlm.vision.base`): images are a list of RGB PIL images, a uint8 ``(B, H, W, 3)`` tensor or a
    float ``(B, 3, H, W)`` tensor in ``[0, 1]``, of side :attr:`resolution` (anything else is a :class:`UserError`).

    - ``read(images) -> list[dict]``: the attributes (``WatchAttributes`` field names).
    - ``features(images) -> (B, num_features)`` float32: penultimate features (for FID).
    - ``encode(images) -> (B, 64, C)`` float32: the trunk's 8x8 feature grid as tokens.
    - ``forward(x) -> {head: logits (B, classes)}`` on a float batch (training).
    """

    def __init__(self, config: ReaderConfig | None = None):
        super().__init__()
        self.config = config or ReaderConfig()
        c = self.config
        self.resolution = c.resolution
        self.trunk = _CNNTrunk(c.width) if c.arch == "cnn" else _ViTTrunk(c.width, c.depth, c.resolution)
        self.grid_channels = self.trunk.channels
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(self.trunk.channels * 64, c.feature_dim), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({h: nn.Linear(c.feature_dim, n) for h, n in HEADS.items()})
        self.num_features = c.feature_dim
        self.eval()

    def config_dict(self) -> dict[str, Any]:
        """Identity of this reader (its artifact config)."""
        return {"kind": KIND, **self.config.to_dict()}

    # ----- tensors ---------------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``(B, 3, R, R)`` in [0, 1] -> float32 ``(B, num_features)``."""
        return self.neck(self.trunk(x * 2.0 - 1.0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Float ``(B, 3, R, R)`` in [0, 1] -> ``{head: logits float32 (B, classes)}``."""
        f = self.forward_features(x)
        return {h: head(f) for h, head in self.heads.items()}

    def _batch(self, images: ImageBatch) -> torch.Tensor:
        return to_float_batch(images, self.resolution)

    # ----- public interface ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, images: ImageBatch) -> torch.Tensor:
        """Penultimate features: float32 ``(B, num_features)``."""
        return self.forward_features(self._batch(images))

    @torch.no_grad()
    def encode(self, images: ImageBatch) -> torch.Tensor:
        """The trunk's feature grid as tokens: float32 ``(B, 64, C)`` (an 8x8 grid, row-major)."""
        g = self.trunk(self._batch(images) * 2.0 - 1.0)
        return g.flatten(2).transpose(1, 2).contiguous()

    @torch.no_grad()
    def logits(self, images: ImageBatch) -> dict[str, torch.Tensor]:
        """Per-head logits ``{head: float32 (B, classes)}``."""
        return self(self._batch(images))

    @torch.no_grad()
    def read(self, images: ImageBatch) -> list[dict[str, Any]]:
        """Read the attributes of each image.

        Returns one dict per image with the :class:`WatchAttributes` fields (``WatchAttributes.from_dict`` accepts it):
        ``hour`` (0..11; 12 reads as 0), ``minute``, ``second``, ``weather``, ``weather_position``,
        ``battery_position`` (two different corners: the most likely distinct pair), ``battery`` (0..100) and
        ``face_color`` (estimated from the face's rim, where no hand reaches).
        """
        x = self._batch(images)
        out = self(x)
        pred = {h: out[h].argmax(dim=1) for h in ("hour", "minute", "second", "weather", "battery")}
        wp, bp = _distinct_corners(out["weather_position"], out["battery_position"])
        colours = estimate_face_color(x)
        return [{
            "hour": int(pred["hour"][i]), "minute": int(pred["minute"][i]), "second": int(pred["second"][i]),
            "weather": WEATHERS[int(pred["weather"][i])],
            "weather_position": CORNERS[int(wp[i])], "battery_position": CORNERS[int(bp[i])],
            "battery": int(pred["battery"][i]),
            "face_color": [int(c) for c in colours[i]],
        } for i in range(x.shape[0])]

def _distinct_corners(wl: torch.Tensor, bl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The most likely (weather corner, battery corner) pair with two different corners. Logits (B, 4) each."""
    joint = F.log_softmax(wl, 1)[:, :, None] + F.log_softmax(bl, 1)[:, None, :]  # (B, 4, 4)
    joint = joint.masked_fill(torch.eye(len(CORNERS), dtype=torch.bool), float("-inf"))
    best = joint.flatten(1).argmax(1)
    return best // len(CORNERS), best % len(CORNERS)


def estimate_face_color(x: torch.Tensor) -> torch.Tensor:
    """Median colour of the face's rim (radius 0.93..0.97 of the face; the hands reach 0.9): ``(B, 3)`` int64.

    ``x`` is float ``(B, 3, R, R)`` in [0, 1]; the layout is the renderer's (a centred face of radius 0.4 R).
    """
    r = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(r) + 0.5, torch.arange(r) + 0.5, indexing="ij")
    d = torch.hypot(yy - r / 2, xx - r / 2) / (0.4 * r)
    mask = (d > 0.93) & (d < 0.97)
    if not bool(mask.any()):
        mask = (d > 0.9) & (d < 1.0)
    rim = x[:, :, mask]  # (B, 3, P)
    return (rim.median(dim=2).values * 255).round().long()


class FIDFeatureExtractor(nn.Module):
    """A reader as a ``torchmetrics`` FID feature extractor: float ``(B, 3, H, W)`` in [0, 1] -> ``(B, D)`` float32.

    Use it as ``FrechetInceptionDistance(feature=FIDFeatureExtractor(reader), normalize=True)`` (``normalize=True``
    means the images are passed as floats in [0, 1]). The reader always stays in eval mode and is never trained
    through the metric. Images of another size are an error unless ``resize`` is set (then bicubic resizing).
    """

    def __init__(self, reader: SmartWatchReader, resize: bool = False):
        super().__init__()
        self.reader = reader.eval()
        for p in self.reader.parameters():
            p.requires_grad_(False)
        self.resize = resize
        self.num_features = reader.num_features

    def train(self, mode: bool = True) -> "FIDFeatureExtractor":
        """Always eval: batch-norm statistics must not follow the images being measured."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3:
            raise UserError("the reader FID extractor takes float images in [0, 1]: create the metric with "
                            "normalize=True and pass float (B, 3, H, W) images")
        x = to_float_batch(images, self.reader.resolution, resize=self.resize)
        return self.reader.forward_features(x)


# ----- training ------------------------------------------------------------------------------------------------------

def _split(config: ReaderConfig, name: str) -> SmartWatch:
    return SmartWatch(SplitConfig(name=name, seed=config.seed, resolution=config.resolution,
                                  n_vqa=0, n_caption=0, n_generation=0))


def rendered_batches(sw: SmartWatch, batch_size: int, start: int = 0, stop: int | None = None
                     ) -> Iterator[tuple[torch.Tensor, list[WatchAttributes]]]:
    """Images ``start..stop-1`` of a split (endless if ``stop`` is None) as (float ``(B, 3, R, R)``, attributes)."""
    i = start
    while stop is None or i < stop:
        j = i + batch_size if stop is None else min(i + batch_size, stop)
        attrs = [sw.attributes(k) for k in range(i, j)]
        x = to_float_batch([sw.renderer.render(a) for a in attrs], sw.config.resolution)
        yield x, attrs
        i = j


def _circular_error(pred: torch.Tensor, true: torch.Tensor, period: int) -> torch.Tensor:
    d = (pred - true).abs() % period
    return torch.minimum(d, period - d)


@torch.no_grad()
def evaluate_reader(reader: SmartWatchReader, n_images: int, seed: int = 0, batch_size: int = 250,
                    split: str = "reader-test") -> dict[str, float]:
    """Accuracy of ``reader`` on ``n_images`` held-out rendered images.

    Returns per-head exact accuracy (``acc/<head>``; positions decoded as a distinct pair), ``time_exact`` (hour, minute
    and second all right), ``minute_within_1`` (circular minute error <= 1), ``battery_within_1``, ``battery_mae``,
    ``minute_mae`` (circular), and ``all_exact`` (every attribute right).
    """
    was_training = reader.training
    reader.eval()
    sw = SmartWatch(SplitConfig(name=split, seed=seed, resolution=reader.resolution, n_vqa=0, n_caption=0,
                                n_generation=0))
    preds: dict[str, list[torch.Tensor]] = {h: [] for h in HEADS}
    trues: dict[str, list[torch.Tensor]] = {h: [] for h in HEADS}
    for x, attrs in rendered_batches(sw, batch_size, 0, n_images):
        out = reader(x)
        t = attribute_targets(attrs)
        wp, bp = _distinct_corners(out["weather_position"], out["battery_position"])
        for h in HEADS:
            p = wp if h == "weather_position" else bp if h == "battery_position" else out[h].argmax(1)
            preds[h].append(p)
            trues[h].append(t[h])
    reader.train(was_training)
    P = {h: torch.cat(v) for h, v in preds.items()}
    T = {h: torch.cat(v) for h, v in trues.items()}
    m: dict[str, float] = {f"acc/{h}": float((P[h] == T[h]).float().mean()) for h in HEADS}
    m["time_exact"] = float(((P["hour"] == T["hour"]) & (P["minute"] == T["minute"])
                             & (P["second"] == T["second"])).float().mean())
    me = _circular_error(P["minute"], T["minute"], 60)
    m["minute_within_1"] = float((me <= 1).float().mean())
    m["minute_mae"] = float(me.float().mean())
    be = (P["battery"] - T["battery"]).abs()
    m["battery_within_1"] = float((be <= 1).float().mean())
    m["battery_mae"] = float(be.float().mean())
    m["all_exact"] = float(torch.stack([P[h] == T[h] for h in HEADS]).all(0).float().mean())
    m["n_images"] = float(n_images)
    return m


def reader_loss(reader: SmartWatchReader, x: torch.Tensor, targets: dict[str, torch.Tensor],
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the per-head cross-entropies; also returns the per-head training accuracies."""
    out = reader(x)
    loss = x.new_zeros(())
    accs = {}
    for h in HEADS:
        loss = loss + F.cross_entropy(out[h], targets[h], label_smoothing=label_smoothing)
        accs[h] = float((out[h].argmax(1) == targets[h]).float().mean())
    return loss, accs


def _optimizer(reader: SmartWatchReader, config: ReaderConfig):
    decay = [p for n, p in reader.named_parameters() if p.ndim >= 2 and "pos" not in n]
    other = [p for n, p in reader.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(1, config.steps),
                                                pct_start=0.1, anneal_strategy="cos")
    return opt, sched


def fit_reader(config: ReaderConfig) -> tuple[SmartWatchReader, dict[str, Any]]:
    """Train a reader in memory (one CPU thread); returns it (in eval mode) and a training record."""
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    reader = SmartWatchReader(config)
    reader.train()
    opt, sched = _optimizer(reader, config)
    train = _split(config, "reader-train")
    curve: list[dict[str, float]] = []
    log.info("reader: %d steps x %d images at %d px (%s)", config.steps, config.batch_size, config.resolution,
             config.arch)
    t0 = time.perf_counter()
    run_loss, run_acc, n_run = 0.0, {h: 0.0 for h in HEADS}, 0
    step = 0
    stopped_early = False
    batches = rendered_batches(train, config.batch_size)
    while step < config.steps:
        if config.max_minutes and time.perf_counter() - t0 > 60 * config.max_minutes:
            stopped_early = True
            break
        x, attrs = next(batches)
        loss, accs = reader_loss(reader, x, attribute_targets(attrs), config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        run_loss += float(loss.detach())
        n_run += 1
        for h in HEADS:
            run_acc[h] += accs[h]
        # the first line comes early (step 10), so that a long training is never silent and states its ETA at once
        if step % config.log_every == 0 or step == config.steps or step == min(10, config.log_every):
            el = time.perf_counter() - t0
            acc = " ".join(f"{h[:2] if h not in ('weather_position', 'battery_position') else h[0] + 'p'}="
                           f"{run_acc[h] / n_run:.3f}" for h in HEADS)
            log.info("reader step %d/%d loss %.4f train-acc %s lr %.2e %.0f img/s %.1f min, eta %.1f min", step,
                     config.steps, run_loss / n_run, acc, sched.get_last_lr()[0], step * config.batch_size / el,
                     el / 60, el / step * (config.steps - step) / 60)
            run_loss, run_acc, n_run = 0.0, {h: 0.0 for h in HEADS}, 0
        if config.eval_every and step % config.eval_every == 0 and step < config.steps:
            m = evaluate_reader(reader, min(500, config.eval_images), seed=config.seed)
            m.update(step=step, minutes=(time.perf_counter() - t0) / 60, images=step * config.batch_size)
            curve.append(m)
            log.info("reader eval step %d %.1f min: minute %.3f (within 1: %.3f) battery %.3f hour %.3f second %.3f "
                     "all-exact %.3f", step, m["minutes"], m["acc/minute"], m["minute_within_1"], m["acc/battery"],
                     m["acc/hour"], m["acc/second"], m["all_exact"])
    train_minutes = (time.perf_counter() - t0) / 60
    reader.eval()
    metrics = evaluate_reader(reader, config.eval_images, seed=config.seed)
    record = {"steps_done": step, "images_seen": step * config.batch_size, "train_minutes": train_minutes,
              "stopped_early": stopped_early, "test": metrics, "curve": curve,
              "test_split": "reader-test", "train_split": "reader-train"}
    log.info("reader done: %d steps in %.1f min; test %s", step, train_minutes,
             " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "n_images"))
    return reader, record


def train_reader(config: ReaderConfig | None = None, out: str | Path | None = None) -> Path:
    """Train a reader and save it as an artifact folder (``kind: reader``); returns the folder.

    With ``out=None`` the folder is the cache entry for the config (see :mod:`uvlm.vision.artifacts`) and an existing
    one is reused without training. ``info.json`` holds the held-out accuracies and the training minutes.
    """
    config = config or ReaderConfig()
    cfg = _cache_key(config)
    if out is None:
        hit = cached(KIND, cfg)
        if hit is not None:
            log.info("reader: reusing %s", hit)
            return hit
        out = artifact_dir(KIND, cfg)
        announce_training(KIND)
    reader, record = fit_reader(config)
    return save_artifact(out, reader.state_dict(), cfg, info=record)


def _cache_key(config: ReaderConfig) -> dict[str, Any]:
    return {"kind": KIND, **config.to_dict()}


def cached_reader(config: ReaderConfig | None = None) -> Path | None:
    """The cached reader folder for ``config`` (default: the tiny reader), or ``None``; never trains."""
    return cached(KIND, _cache_key(config or ReaderConfig()))


def load_reader(path: str | Path) -> SmartWatchReader:
    """Load a reader artifact folder written by :func:`train_reader` (in eval mode)."""
    state, cfg = load_artifact(path, kind=KIND)
    body = {k: v for k, v in cfg.items() if k != "kind"}
    try:
        config = ReaderConfig.from_dict(body)
    except TypeError as e:
        raise UserError(f"{path}/config.json is not a reader config ({e}): retrain the reader") from None
    reader = SmartWatchReader(config)
    check_state_dict(reader, state, str(path))
    reader.load_state_dict(state)
    return reader.eval()


__all__ = ["HEADS", "ReaderConfig", "SmartWatchReader", "FIDFeatureExtractor", "train_reader", "cached_reader",
           "load_reader", "fit_reader", "evaluate_reader", "attribute_targets", "estimate_face_color", "rendered_batches"]
