"""Is the weather in what the LLM sees? A linear probe and a t-SNE of the understanding tokens at the weather icon.

The paper's knowledge-transfer analysis (section 4.2, Figure 7) takes models trained on weather-biased SmartWatch data
and looks at the understanding adapter's output (the LLM input vectors of the image tokens) at the patch of the
weather icon. A linear probe on those vectors reads the weather near-perfectly for every model (the information is
there even when the LLM was rarely asked about it), and a t-SNE shows clearer weather clusters for unified models.

What this module measures, per trained run:

- Images: a held-out SmartWatch split of its own name (:data:`SPLIT_NAME`), rendered at the understanding source's
  resolution; images ``0..n_train-1`` train the probe and the next ``n_test`` test it.
- Vectors: ``model.embed_understanding(source.to_inputs(cached))``, the same path training and inference use
  (adapter, then the affine map when the model has one). ``cached`` is ``source.encode_cached(images)`` rounded to
  the source's cache dtype, as the feature cache stores it, so the vectors are exactly what the LLM receives.
- Where: the icon's pixel box comes from the renderer's geometry (:func:`icon_box`, the same margin, icon size and
  supersampling as :class:`~uvlm.data.render.Renderer`); the tokens form a square row-major grid of side
  ``sqrt(num_tokens)`` whose cells are ``resolution / side`` pixels wide. The probed vector of an image is the mean
  of the adapter outputs over every cell the box overlaps with positive area (:func:`icon_cells`). The paper takes
  "the ViT patch representing the weather icon"; on a grid whose cells do not line up with the icon, the icon spans
  two cells per axis, and the mean keeps all of it instead of picking one partial view.
- Probe: standardised multinomial ``LogisticRegression`` (scikit-learn) on 3 weather classes; ``chance`` is the test
  accuracy of always answering the most frequent training class (``DummyClassifier``).
- t-SNE: ``sklearn.manifold.TSNE`` (fixed ``random_state``) of the first ``n_tsne`` test vectors;
  :func:`plot_tsne` draws one panel per model, coloured by weather as in the paper (red sunny, green cloudy, blue
  raining), and writes PNG and PDF.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from uvlm.data.attributes import CORNERS, WEATHERS, WatchAttributes
from uvlm.data.config import SplitConfig
from uvlm.data.render import renderer
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import require
from uvlm.io import atomic_path

#: The name of the held-out split the probe renders (its images are no training or test images of any run).
SPLIT_NAME = "probe"

#: Colours of the t-SNE points per weather, as in the paper's Figure 7.
WEATHER_COLORS: dict[str, str] = {"sunny": "tab:red", "cloudy": "tab:green", "raining": "tab:blue"}


# ----- where the icon is ---------------------------------------------------------------------------------------------
def icon_box(attributes: WatchAttributes, resolution: int) -> tuple[float, float, float, float]:
    """The weather icon's box ``(x0, y0, x1, y1)`` in output pixels of a ``resolution`` image (x1, y1 exclusive).

    Follows :class:`~uvlm.data.render.Renderer`: the icon is a square of ``icon`` canvas pixels pasted ``margin``
    canvas pixels from the edges at its corner, on a canvas ``supersample`` times the output size.
    """
    require(attributes.weather_position in CORNERS,
            f"unknown weather position {attributes.weather_position!r}: use one of {', '.join(CORNERS)}")
    r = renderer(int(resolution))
    m, n = r.margin, r.icon
    x = m if attributes.weather_position.endswith("left") else r.side - m - n
    y = m if attributes.weather_position.startswith("top") else r.side - m - n
    k = float(r.k)
    return x / k, y / k, (x + n) / k, (y + n) / k


def icon_cells(attributes: WatchAttributes, resolution: int, grid: int) -> list[int]:
    """Row-major indices of the tokens of a ``grid`` x ``grid`` token grid that the weather icon overlaps.

    Args:
        attributes: the image's attributes (only ``weather_position`` matters).
        resolution: the image side in pixels (the understanding source's resolution).
        grid: tokens per row (``sqrt(num_tokens)``, e.g. 8 for 64 tokens); a cell is ``resolution / grid`` pixels.

    Returns:
        Sorted token indices ``row * grid + col`` of every cell the icon box covers with positive area.
    """
    require(isinstance(grid, int) and not isinstance(grid, bool) and grid >= 1,
            f"grid must be a positive integer (tokens per row), got {grid!r}")
    x0, y0, x1, y1 = icon_box(attributes, resolution)
    cell = resolution / grid
    eps = 1e-9

    def span(a: float, b: float) -> range:
        return range(max(0, math.floor(a / cell + eps)), min(grid, math.ceil(b / cell - eps)))

    return [row * grid + col for row in span(y0, y1) for col in span(x0, x1)]


def token_grid(num_tokens: int) -> int:
    """The side of the square token grid of ``num_tokens`` tokens."""
    side = math.isqrt(int(num_tokens))
    require(side >= 1 and side * side == int(num_tokens),
            f"the understanding source has {num_tokens} tokens per image, not a square grid: the icon probe needs "
            f"square token grids (e.g. 64 = 8x8)")
    return side


# ----- vectors -------------------------------------------------------------------------------------------------------
def probe_split(resolution: int, seed: int = 0, name: str = SPLIT_NAME) -> SplitConfig:
    """The held-out split the probe renders (only its attributes and images matter)."""
    return SplitConfig(name=name, seed=seed, resolution=resolution, n_vqa=0, n_caption=0, n_generation=0)


def _model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def adapter_features(model, source, split: SplitConfig, n: int, batch_size: int = 64, start: int = 0,
                     view: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """The understanding tokens at the weather icon of images ``start..start+n-1`` of ``split``.

    Args:
        model: a :class:`~uvlm.model.unified.UnifiedVLM` (anything with ``embed_understanding``).
        source: its understanding vision source (``resolution``, ``num_tokens``, ``encode_cached``, ``to_inputs``,
            ``cache_dtype``).
        split: which images; they are rendered at ``source.resolution`` whatever ``split.resolution`` says.
        n: how many images.
        batch_size: images per encoder and adapter call.
        start: the first image index.
        view: ``"mean"``, the mean of the icon's cells, or ``"concat"``, the cells side by side in grid order (a
            mean of many cells can hide what each carries: see :func:`probe_views`).

    Returns:
        ``X`` float32 ``(n, hidden)`` (``(n, cells * hidden)`` for ``concat``): per image, the LLM input vectors at
        the icon's cells (:func:`icon_cells`); ``y`` int64 ``(n,)``: the weather as an index into
        :data:`~uvlm.data.attributes.WEATHERS`.
    """
    require(view in ("mean", "concat"), f"view must be 'mean' or 'concat', got {view!r}")
    require(isinstance(n, int) and n > 0, f"n must be a positive number of images, got {n!r}")
    require(isinstance(batch_size, int) and batch_size > 0,
            f"batch_size must be a positive integer, got {batch_size!r}")
    resolution = int(source.resolution)
    grid = token_grid(source.num_tokens)
    cells = {c: icon_cells(_corner(c), resolution, grid) for c in CORNERS}
    for c, idx in cells.items():
        require(len(idx) > 0, f"the weather icon at {c} covers no token of the {grid}x{grid} grid: check the source's "
                              f"resolution")
    sw = SmartWatch(split.with_(resolution=resolution))
    cache_dtype = getattr(source, "cache_dtype", None)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    xs, ys = [], []
    try:
        for s in range(start, start + n, batch_size):
            attrs = [sw.attributes(i) for i in range(s, min(start + n, s + batch_size))]
            images = [sw.renderer.render(a) for a in attrs]
            cached = source.encode_cached(images)
            if cache_dtype == "float16" and cached.is_floating_point():
                cached = cached.to(torch.float16)  # what the feature cache stores and training reads
            emb = model.embed_understanding(source.to_inputs(cached).to(device)).float()  # (B, N, H)
            require(emb.ndim == 3 and emb.shape[1] == grid * grid,
                    f"the model gives understanding vectors of shape {tuple(emb.shape)} for a source of "
                    f"{grid * grid} tokens: use the run's own vision source")
            if view == "concat":
                xs.append(torch.stack([emb[b, cells[a.weather_position]].reshape(-1)
                                       for b, a in enumerate(attrs)]).cpu().numpy())
            else:
                weights = torch.zeros(len(attrs), grid * grid, device=emb.device)
                for b, a in enumerate(attrs):
                    idx = cells[a.weather_position]
                    weights[b, idx] = 1.0 / len(idx)
                xs.append(torch.einsum("bn,bnh->bh", weights, emb).cpu().numpy())
            ys.extend(WEATHERS.index(a.weather) for a in attrs)
    finally:
        model.train(was_training)
    return np.concatenate(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


def _corner(corner: str) -> WatchAttributes:
    """Attributes with the icon at ``corner`` (only the position matters to :func:`icon_cells`)."""
    other = next(c for c in CORNERS if c != corner)
    return WatchAttributes(0, 0, 0, WEATHERS[0], corner, 0, other, (0, 0, 0))


# ----- probe and t-SNE -----------------------------------------------------------------------------------------------
def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, C: float = 1.0,
              max_iter: int = 1000) -> dict[str, float]:
    """Standardised multinomial logistic regression: ``{"accuracy": test accuracy, "chance": majority-class test
    accuracy}``, both in ``[0, 1]``."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    require(len(x_train) == len(y_train) > 0 and len(x_test) == len(y_test) > 0,
            f"probe data do not match: {len(x_train)} train vectors for {len(y_train)} labels, {len(x_test)} test "
            f"vectors for {len(y_test)} labels (both need at least one)")
    require(len(np.unique(y_train)) >= 2, "the probe's training images show a single weather: use more images")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(x_train, y_train)
    dummy = DummyClassifier(strategy="most_frequent").fit(x_train, y_train)
    return {"accuracy": float(clf.score(x_test, y_test)), "chance": float(dummy.score(x_test, y_test))}


#: The views of the icon's tokens that :func:`probe_views` compares.
VIEWS = ("mean", "concat", "centre", "codes")


@torch.no_grad()
def probe_views(source, n_train: int = 2000, n_test: int = 500, seed: int = 0, batch_size: int = 250
                ) -> dict[str, dict[str, float]]:
    """Where does a probe lose the weather: in the encoder's tokens, or in how the probe summarises the icon's cells?

    Reads the *source's own* input vectors (``source.to_inputs(encode_cached(images))``: SigLIP tokens, or the VQ
    codebook vectors of the codes), with no model in between. A linear adapter only mixes those dimensions, so a
    view that fails here fails on any linear adapter's output too. The views of the icon's cells
    (:func:`icon_cells`, the image's own corner):

    - ``mean``: the mean vector over the cells (the Figure 7 probe's summary, :func:`adapter_features`);
    - ``concat``: the cells' vectors side by side, in grid order (keeps where each part of the icon is);
    - ``centre``: the vector of the one cell holding the icon's centre (the paper's "patch representing the icon");
    - ``codes``: for a discrete source, a bag of the cells' code ids (one count per codebook entry); absent otherwise.

    Returns:
        ``{view: {"accuracy", "chance", "dims"}}`` from :func:`fit_probe` on ``n_train`` images, tested on the next
        ``n_test`` of the held-out probe split.
    """
    resolution, grid = int(source.resolution), token_grid(source.num_tokens)
    cells = {c: icon_cells(_corner(c), resolution, grid) for c in CORNERS}
    require(len({len(v) for v in cells.values()}) == 1, "the icon covers different numbers of cells per corner: "
                                                        "the concat view needs the same count")
    centre = {}
    for c in CORNERS:
        x0, y0, x1, y1 = icon_box(_corner(c), resolution)
        side = resolution / grid
        centre[c] = int(((y0 + y1) / 2) // side) * grid + int(((x0 + x1) / 2) // side)
    sw = SmartWatch(probe_split(resolution, seed=seed))
    views: dict[str, list[np.ndarray]] = {v: [] for v in VIEWS}
    labels: list[int] = []
    book = source.codebook
    k = int(book.shape[0]) if book is not None else 0
    for start in range(0, n_train + n_test, batch_size):
        attrs = [sw.attributes(i) for i in range(start, min(n_train + n_test, start + batch_size))]
        cached = source.encode_cached([sw.renderer.render(a) for a in attrs])
        vecs = source.to_inputs(cached).float()
        for b, a in enumerate(attrs):
            idx = cells[a.weather_position]
            views["mean"].append(vecs[b, idx].mean(0).numpy())
            views["concat"].append(vecs[b, idx].reshape(-1).numpy())
            views["centre"].append(vecs[b, centre[a.weather_position]].numpy())
            if not cached.is_floating_point():
                views["codes"].append(np.bincount(cached[b, idx].numpy(), minlength=k).astype(np.float32))
        labels += [WEATHERS.index(a.weather) for a in attrs]
    y = np.asarray(labels)
    out = {}
    for v, rows in views.items():
        if rows:
            x = np.stack(rows)
            out[v] = {**fit_probe(x[:n_train], y[:n_train], x[n_train:], y[n_train:]), "dims": int(x.shape[1])}
    return out


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """``(n, D)`` -> ``(n, 2)`` t-SNE coordinates (PCA initialisation, ``random_state=seed``; the perplexity is
    lowered to ``(n - 1) / 3`` for small ``n``)."""
    from sklearn.manifold import TSNE

    require(len(x) >= 4, f"t-SNE needs at least 4 points, got {len(x)}: use more test images")
    perp = float(min(perplexity, (len(x) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float32))


def probe_run(run_dir: str | os.PathLike, n_train: int = 4000, n_test: int = 1000, seed: int = 0, tsne: bool = True,
              *, n_tsne: int = 1000, batch_size: int = 64, checkpoint: str | int | None = None,
              split_name: str = SPLIT_NAME, view: str = "concat", log: Callable[[str], None] | None = None
              ) -> dict[str, Any]:
    """Linear probe (and t-SNE) of a trained run's understanding tokens at the weather icon.

    Args:
        run_dir: a run folder of ``uvlm train``.
        n_train, n_test: probe training and test images (images ``0..n_train-1`` and the next ``n_test`` of the
            probe split).
        seed: the probe split's seed and the t-SNE's ``random_state`` (keep it equal across models to compare them
            on the same images).
        tsne: also compute the t-SNE of the first ``n_tsne`` test vectors.
        n_tsne: t-SNE points (at most ``n_test``).
        batch_size: images per encoder and adapter call.
        checkpoint: which checkpoint (default: the latest).
        split_name: the probe split's name.
        view: how the icon's cells are read (:func:`adapter_features`): ``concat`` (side by side; the default, see
            docs/results.md, amendment 2) or ``mean``. The t-SNE uses the same vectors.
        log: optional callable for one summary line.

    Returns:
        A JSON-able dict: ``accuracy`` and ``chance`` (in ``[0, 1]``), ``n_train``, ``n_test``, ``dim`` (the LLM
        width), ``tsne`` (``[[x, y], ...]`` of the t-SNE points, or ``None``), ``labels`` (their weather names, or
        ``None``), ``classes`` (:data:`~uvlm.data.attributes.WEATHERS`), ``cells`` (the token indices averaged per
        icon corner), ``grid``, ``resolution``, ``variant``, ``run``, ``checkpoint``, ``split``, ``seed``, ``view``.
    """
    from uvlm.train.checkpoint import load_run

    for name, v in (("n_train", n_train), ("n_test", n_test), ("n_tsne", n_tsne)):
        require(isinstance(v, int) and not isinstance(v, bool) and v > 0,
                f"{name} must be a positive integer, got {v!r}")
    t0 = time.perf_counter()
    loaded = load_run(run_dir, checkpoint)
    source = loaded.sources.understanding
    resolution, grid = int(source.resolution), token_grid(source.num_tokens)
    split = probe_split(resolution, seed, split_name)
    x_tr, y_tr = adapter_features(loaded.model, source, split, n_train, batch_size, view=view)
    x_te, y_te = adapter_features(loaded.model, source, split, n_test, batch_size, start=n_train, view=view)
    result: dict[str, Any] = {**fit_probe(x_tr, y_tr, x_te, y_te), "n_train": n_train, "n_test": n_test,
                              "dim": int(x_tr.shape[1]), "tsne": None, "labels": None, "classes": list(WEATHERS),
                              "cells": {c: icon_cells(_corner(c), resolution, grid) for c in CORNERS},
                              "grid": grid, "resolution": resolution, "variant": loaded.config.variant,
                              "run": str(run_dir), "checkpoint": loaded.checkpoint.name, "split": split_name,
                              "seed": seed, "view": view}
    if tsne:
        m = min(n_tsne, n_test)
        result["tsne"] = tsne_2d(x_te[:m], seed).tolist()
        result["labels"] = [WEATHERS[int(i)] for i in y_te[:m]]
    if log is not None:
        log(f"weather-icon probe of {loaded.config.variant} ({run_dir}): accuracy {result['accuracy']:.3f} "
            f"(chance {result['chance']:.3f}), {n_train}/{n_test} images, {len(result['cells']['top-left'])} of "
            f"{grid}x{grid} tokens per icon, {time.perf_counter() - t0:.1f}s")
    return result


def plot_tsne(results_by_model: dict[str, dict[str, Any]], path_png: str | os.PathLike) -> tuple[Path, Path]:
    """One row of t-SNE panels (one per model, in the dict's order), points coloured by weather, with a legend.

    ``results_by_model`` maps a model name to a :func:`probe_run` result computed with ``tsne=True``. Writes
    ``path_png`` and the same figure as PDF beside it (``.pdf``), each atomically; returns both paths.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path_png = Path(path_png)
    require(path_png.suffix.lower() == ".png", f"the t-SNE figure path {str(path_png)!r} must end in .png (the PDF "
                                               f"is written beside it)")
    require(isinstance(results_by_model, dict) and len(results_by_model) > 0,
            "no probe results to plot: pass {model name: probe_run(...) result}")
    for name, res in results_by_model.items():
        require(isinstance(res, dict) and res.get("tsne") is not None and res.get("labels") is not None,
                f"the probe result of {name!r} has no t-SNE: compute it with probe_run(..., tsne=True)")
        require(len(res["tsne"]) == len(res["labels"]),
                f"the probe result of {name!r} has {len(res['tsne'])} t-SNE points for {len(res['labels'])} labels: "
                f"recompute it with probe_run")
    n = len(results_by_model)
    fig = Figure(figsize=(3.6 * n, 3.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, res) in zip(axes, results_by_model.items()):
        xy = np.asarray(res["tsne"], dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(res["labels"])
        for w in WEATHERS:
            sel = labels == w
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, c=WEATHER_COLORS[w], alpha=0.7, linewidths=0, label=w)
        acc = res.get("accuracy")
        ax.set_title(name if acc is None else f"{name}\nprobe accuracy {100 * acc:.1f}%", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=WEATHER_COLORS[w], label=w) for w in WEATHERS]
    fig.legend(handles=handles, loc="lower center", ncol=len(WEATHERS), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    pdf = path_png.with_suffix(".pdf")
    for path, fmt in ((path_png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
    return path_png, pdf


__all__ = ["SPLIT_NAME", "VIEWS", "probe_views", "WEATHER_COLORS", "icon_box", "icon_cells", "token_grid", "probe_split", "adapter_features",
           "fit_probe", "tsne_2d", "probe_run", "plot_tsne"]
