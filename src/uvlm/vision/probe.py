"""Linear probes: how well frozen vision features carry each SmartWatch attribute.

One scikit-learn ``LogisticRegression`` (on standardised features) per attribute, fitted on the features of
``n_train`` images of a held-out split and scored (accuracy) on ``n_test`` further images of it. The probe split has
its own name (``vision-probe``), so its images are neither the vision pretraining images nor any experiment's.

Attributes and their classes:

- ``hour``: ``hour mod 12`` (12 classes; 0 and 12 look the same on the dial),
- ``minute``, ``second``: 60 classes each,
- ``weather``: 3 classes; ``weather_position``, ``battery_position``: 4 classes each,
- ``battery``: 101 classes (0..100).

Features: the layer's patch tokens ``(B, N, D)``, mean-pooled over tokens to ``(B, D)`` (``pooling="mean"``) or
flattened to ``(B, N * D)`` (``pooling="flatten"``). Measured on the tiny preset's 64 x 128 tokens with the same
2,000 / 1,000 images, flattening scored 0.5 to 4 points higher on hour, minute, second and battery than mean pooling
(both 100% on weather and the positions) at 64x the dimension; with the default 4,000 training images mean pooling
catches up, so ``mean`` is the default (and what the auxiliary heads of :mod:`uvlm.vision.siglip_train` read).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from uvlm.data.attributes import CORNERS, WEATHERS, WatchAttributes
from uvlm.data.config import SplitConfig
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import require

PROBE_ATTRIBUTES: tuple[str, ...] = ("hour", "minute", "second", "weather", "weather_position", "battery_position",
                                     "battery")
#: Number of classes per probed attribute.
NUM_CLASSES: dict[str, int] = {"hour": 12, "minute": 60, "second": 60, "weather": len(WEATHERS),
                               "weather_position": len(CORNERS), "battery_position": len(CORNERS), "battery": 101}
POOLINGS = ("mean", "flatten")

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


def attribute_labels(attrs: WatchAttributes) -> dict[str, int]:
    """The class index of every probed attribute of one image."""
    return {"hour": attrs.hour % 12, "minute": attrs.minute, "second": attrs.second,
            "weather": WEATHERS.index(attrs.weather), "weather_position": CORNERS.index(attrs.weather_position),
            "battery_position": CORNERS.index(attrs.battery_position), "battery": attrs.battery}


def probe_split(resolution: int = 64, seed: int = 0, name: str = "vision-probe") -> SplitConfig:
    """The held-out split the probes use (only its attributes and images matter)."""
    return SplitConfig(name=name, seed=seed, resolution=resolution, n_vqa=0, n_caption=0, n_generation=0)


def render_batch(split: SplitConfig, start: int, stop: int, sw: SmartWatch | None = None
                 ) -> tuple[torch.Tensor, list[WatchAttributes]]:
    """Images ``start..stop-1`` of ``split``: uint8 ``(B, R, R, 3)`` and their attributes."""
    sw = sw or SmartWatch(split)
    attrs = [sw.attributes(i) for i in range(start, stop)]
    images = np.stack([np.asarray(sw.renderer.render(a), dtype=np.uint8) for a in attrs])
    return torch.from_numpy(images), attrs


def extract_features(encode_fn: EncodeFn, split: SplitConfig, start: int, stop: int, pooling: str = "mean",
                     batch_size: int = 250) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features float32 ``(n, D)`` or ``(n, N*D)`` and int64 labels ``(n,)`` per attribute of images ``start..stop-1``."""
    require(pooling in POOLINGS, f"unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    sw = SmartWatch(split)
    feats, labels = [], {a: [] for a in PROBE_ATTRIBUTES}
    for s in range(start, stop, batch_size):
        images, attrs = render_batch(split, s, min(stop, s + batch_size), sw)
        with torch.no_grad():
            f = encode_fn(images).float()
        require(f.ndim == 3, f"encode_fn must return (B, N, D) features, got shape {tuple(f.shape)}")
        f = f.mean(dim=1) if pooling == "mean" else f.flatten(1)
        feats.append(f.cpu().numpy())
        for a in attrs:
            for k, v in attribute_labels(a).items():
                labels[k].append(v)
    return np.concatenate(feats), {k: np.asarray(v, dtype=np.int64) for k, v in labels.items()}


def fit_probes(x_train: np.ndarray, y_train: dict[str, np.ndarray], x_test: np.ndarray,
               y_test: dict[str, np.ndarray], max_iter: int = 300, C: float = 1.0) -> dict[str, float]:
    """One standardised multinomial logistic regression per attribute; test accuracy per attribute."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for attr in PROBE_ATTRIBUTES:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
        clf.fit(x_train, y_train[attr])
        out[attr] = float(clf.score(x_test, y_test[attr]))
    return out


def probe_attributes(encode_fn: EncodeFn, resolution: int = 64, n_train: int = 4000, n_test: int = 1000,
                     pooling: str = "mean", seed: int = 0, split_name: str = "vision-probe", C: float = 1.0,
                     max_iter: int = 300, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Linear-probe accuracy per attribute of frozen features.

    Args:
        encode_fn: uint8 images ``(B, R, R, 3)`` -> features ``(B, N, D)`` (e.g. ``SiglipTower.encode``).
        resolution: image side the encoder takes.
        n_train, n_test: probe training and test images (disjoint: images ``0..n_train-1`` and the next ``n_test``).
        pooling: ``mean`` (average the N tokens) or ``flatten`` (concatenate them).
        seed, split_name: the held-out split (see :func:`probe_split`).
        C, max_iter: ``LogisticRegression`` settings.
        log: optional callable for one progress line.

    Returns:
        ``{attribute: accuracy in [0, 1]}`` for every attribute of :data:`PROBE_ATTRIBUTES`.
    """
    require(isinstance(n_train, int) and n_train > 0 and isinstance(n_test, int) and n_test > 0,
            f"n_train and n_test must be positive integers, got {n_train!r} and {n_test!r}")
    t0 = time.perf_counter()
    split = probe_split(resolution, seed, split_name)
    x_tr, y_tr = extract_features(encode_fn, split, 0, n_train, pooling)
    x_te, y_te = extract_features(encode_fn, split, n_train, n_train + n_test, pooling)
    t1 = time.perf_counter()
    acc = fit_probes(x_tr, y_tr, x_te, y_te, max_iter=max_iter, C=C)
    if log is not None:
        log(f"probe ({pooling}, {n_train}/{n_test} images, dim {x_tr.shape[1]}): features {t1 - t0:.1f}s, "
            f"fit {time.perf_counter() - t1:.1f}s | " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return acc
