"""Did the model draw what it was asked? Faithfulness of generated vision tokens, judged in feature space.

For continuous targets (SigLIP tokens) no pixels are needed: a linear probe (scikit-learn logistic regression on
mean-pooled tokens) is fitted on the target encoder's features of real rendered images, then applied to the tokens
the model generates for test instructions that state the attribute. Accuracy near 100% means the generation path
encodes the attribute; near chance means it does not. (For VQ targets the tokens are first embedded with the
codebook.) The pixel-space judge, the SmartWatch reader on decoded images, complements this where a decoder exists.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from uvlm.data import SmartWatch, SplitConfig
from uvlm.data.attributes import CORNERS, WEATHERS
from uvlm.errors import require

VALUES = {"weather": WEATHERS, "weather_position": CORNERS, "battery_position": CORNERS}


def _pooled(source, tokens: torch.Tensor) -> np.ndarray:
    """Mean of the L2-normalised tokens: continuous targets are trained with 1 - cosine, which fixes a generated
    token's direction but not its norm, so the probe must not depend on scale."""
    vecs = source.to_inputs(tokens) if tokens.dtype == torch.long else tokens.float()
    return torch.nn.functional.normalize(vecs, dim=-1).mean(dim=1).numpy()


def _at_cells(source, tokens: torch.Tensor, cells: list[list[int]]) -> np.ndarray:
    """Per image ``i``, the mean of its L2-normalised tokens at the cells ``cells[i]`` (row-major indices)."""
    vecs = source.to_inputs(tokens) if tokens.dtype == torch.long else tokens.float()
    vecs = torch.nn.functional.normalize(vecs, dim=-1)
    return torch.stack([vecs[i, c].mean(0) for i, c in enumerate(cells)]).numpy()


def _targets(source, cached: torch.Tensor) -> torch.Tensor:
    """Cached encoder rows -> what the model generates (pooled, for a pooled source)."""
    to_targets = getattr(source, "to_targets", None)
    return to_targets(cached) if callable(to_targets) else cached


def _fit_readers(source, n_probe: int, seed: int, n_classes: int, label: Callable[[Any], int],
                 features: Callable[[torch.Tensor, list], np.ndarray]) -> tuple[Any, float, np.ndarray]:
    """Fit the two readers on the target encoder's real tokens of ``n_probe`` images (500 more held out):
    a logistic regression, and the nearest class mean by cosine (no fitted boundary). ``features(tokens,
    samples)`` summarises a batch's tokens, ``label(sample)`` gives its class. Returns (probe, held-out accuracy,
    L2-normalised class means)."""
    from sklearn.linear_model import LogisticRegression

    real = SmartWatch(SplitConfig(name="faithfulness-probe", seed=seed, resolution=source.resolution,
                                  n_vqa=n_probe + 500, n_caption=0, n_generation=0))
    x, y = [], []
    for start in range(0, n_probe + 500, 250):
        samples = [real.sample("vqa", i) for i in range(start, min(start + 250, n_probe + 500))]
        x.append(features(_targets(source, source.encode_cached([s.image for s in samples])), samples))
        y += [label(s) for s in samples]
    x, y = np.concatenate(x), np.array(y)
    probe = LogisticRegression(max_iter=2000).fit(x[:n_probe], y[:n_probe])
    real_acc = float((probe.predict(x[n_probe:]) == y[n_probe:]).mean())
    centroids = np.stack([x[:n_probe][y[:n_probe] == k].mean(0) for k in range(n_classes)])
    return probe, real_acc, centroids / np.linalg.norm(centroids, axis=1, keepdims=True)


def _nearest(g: np.ndarray, centroids: np.ndarray) -> list[int]:
    """The nearest class mean of each row of ``g`` by cosine."""
    return (g / np.linalg.norm(g, axis=1, keepdims=True) @ centroids.T).argmax(1).tolist()


@torch.no_grad()
def icon_faithfulness(model, source, n_probe: int = 2000, n_generate: int = 120, batch_size: int = 24,
                      seed: int = 0) -> dict[str, Any]:
    """Does the model draw the requested weather *at the icon*? A probe read at the weather icon's token(s).

    A logistic regression is fitted on the generation target's real tokens at the cell(s) the weather icon covers
    (:func:`uvlm.eval.probe.icon_cells`, the image's own corner), ``n_probe`` real images plus 500 held out. It is
    applied to the generated token(s) at the cell(s) of the corner each instruction states, for the first
    ``n_generate`` test instructions that state both the weather and its position. On a coarse token grid the icon is
    one cell of many, so this reads what a mean-pooled probe (:func:`feature_faithfulness`) dilutes.

    Returns:
        ``icon_on_real`` (held-out accuracy on real tokens), ``icon_on_generated``, ``centroid_on_generated`` (the
        nearest real class mean at the icon, by cosine), ``chance``, ``generated``, ``grid`` and ``attribute``.
    """
    from uvlm.eval.probe import icon_cells, token_grid
    from uvlm.model.generate import generate_images

    values = WEATHERS
    grid = token_grid(int(model.config.num_output_tokens))
    res = source.resolution

    def at_icon(tokens: torch.Tensor, samples: list) -> np.ndarray:
        require(tokens.shape[1] == grid * grid, f"the generation source gives {tokens.shape[1]} tokens per image, the "
                                                f"model generates {grid * grid}: the icon probe needs the same grid")
        return _at_cells(source, tokens, [icon_cells(s.attributes, res, grid) for s in samples])

    probe, real_acc, centroids = _fit_readers(source, n_probe, seed, len(values),
                                              lambda s: values.index(s.attributes.weather), at_icon)

    test = SmartWatch(SplitConfig.test(resolution=res, n_vqa=0, n_generation=5000, seed=seed))
    picked = [s for s in test.stream("generation", with_image=False)
              if "weather" in s.mentioned and "weather_position" in s.mentioned][:n_generate]
    require(picked, "no test instruction states both the weather and its position")
    preds, nearest, truth = [], [], []
    for b in range(0, len(picked), batch_size):
        chunk = picked[b:b + batch_size]
        g = at_icon(generate_images(model, [s.instruction for s in chunk]), chunk)
        preds += probe.predict(g).tolist()
        nearest += _nearest(g, centroids)
        truth += [values.index(s.attributes.weather) for s in chunk]
    truth_a = np.array(truth)
    return {"attribute": "weather", "where": "icon", "grid": grid, "icon_on_real": real_acc,
            "icon_on_generated": float((np.array(preds) == truth_a).mean()),
            "centroid_on_generated": float((np.array(nearest) == truth_a).mean()),
            "chance": 1.0 / len(values), "generated": len(truth)}


@torch.no_grad()
def feature_faithfulness(model, source, attribute: str = "weather", n_probe: int = 2000, n_generate: int = 120,
                         batch_size: int = 24, seed: int = 0) -> dict[str, Any]:
    """Probe accuracy on real features (held out) and on generated tokens, for one categorical attribute.

    Also ``centroid_on_generated`` (the nearest class mean of the real features, by cosine: a reader with no fitted
    boundary) and ``similarity_own`` / ``similarity_other`` (the cosine of a drawing's pooled tokens to its own ground
    truth's, and to the other ground truths of its batch: does it draw *its* watch, whatever the attribute?)."""
    from uvlm.model.generate import generate_images

    require(attribute in VALUES, f"attribute must be one of {', '.join(VALUES)}, got {attribute!r}")
    values = VALUES[attribute]
    probe, real_acc, centroids = _fit_readers(source, n_probe, seed, len(values),
                                              lambda s: values.index(getattr(s.attributes, attribute)),
                                              lambda tokens, samples: _pooled(source, tokens))
    test = SmartWatch(SplitConfig.test(resolution=source.resolution, n_vqa=0, n_generation=5000, seed=seed))
    picked = [s for s in test.stream("generation", with_image=False) if attribute in s.mentioned][:n_generate]
    preds, nearest, truth, own, other = [], [], [], [], []
    for b in range(0, len(picked), batch_size):
        chunk = picked[b:b + batch_size]
        tokens = generate_images(model, [s.instruction for s in chunk])
        g = _pooled(source, tokens)
        preds += probe.predict(g).tolist()
        nearest += _nearest(g, centroids)
        truth += [values.index(getattr(s.attributes, attribute)) for s in chunk]
        if len(chunk) > 1:  # is a drawing closer to its own ground truth than to the other drawings' of its batch?
            t = _pooled(source, _targets(source, source.encode_cached([test.image(s.image_index) for s in chunk])))
            sim = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
            own.append(float(np.diag(sim).mean()))
            other.append(float((sim.sum() - np.trace(sim)) / (len(chunk) * (len(chunk) - 1))))
    truth_a = np.array(truth)
    return {"attribute": attribute, "probe_on_real": real_acc,
            "probe_on_generated": float((np.array(preds) == truth_a).mean()),
            "centroid_on_generated": float((np.array(nearest) == truth_a).mean()),
            "similarity_own": float(np.mean(own)) if own else None,
            "similarity_other": float(np.mean(other)) if other else None,
            "chance": 1.0 / len(values), "generated": len(truth)}


def run_feature_faithfulness(run_dir: str, attribute: str = "weather", n_generate: int = 120) -> dict[str, Any]:
    """:func:`feature_faithfulness` for a trained run folder (its latest checkpoint)."""
    from uvlm.train.checkpoint import load_run

    loaded = load_run(run_dir)
    require(loaded.sources.generation is not None, f"run {run_dir} has no generation head (an understanding-only run)")
    torch.set_num_threads(1)
    return feature_faithfulness(loaded.model, loaded.sources.generation, attribute, n_generate=n_generate)


def run_icon_faithfulness(run_dir: str, n_generate: int = 120) -> dict[str, Any]:
    """:func:`icon_faithfulness` for a trained run folder (its latest checkpoint)."""
    from uvlm.train.checkpoint import load_run

    loaded = load_run(run_dir)
    require(loaded.sources.generation is not None, f"run {run_dir} has no generation head (an understanding-only run)")
    torch.set_num_threads(1)
    return icon_faithfulness(loaded.model, loaded.sources.generation, n_generate=n_generate)


__all__ = ["feature_faithfulness", "icon_faithfulness", "run_feature_faithfulness", "run_icon_faithfulness"]
