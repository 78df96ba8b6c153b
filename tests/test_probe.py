"""The weather-icon probe: icon geometry, the probe on tokens that carry weather, a trained run, the t-SNE figure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uvlm.data.attributes import CORNERS, WEATHERS
from uvlm.data.render import CLOUD, RAIN, SUN
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import UserError
from uvlm.eval.probe import (adapter_features, fit_probe, icon_box, icon_cells, plot_tsne, probe_run, probe_split,
                             tsne_2d)

PATCH = 12


class ColourSource:
    """A 48 px source with a 4x4 token grid whose token is, per 12x12 patch, the share of pixels of (within 8 of) the
    sun, cloud and rain colours, and the mean colour: only the tokens under the weather icon tell the weather."""

    kind = "siglip"
    cache_dtype = "float16"
    resolution = 48
    num_tokens = 16
    input_dim = 6

    def encode_cached(self, images) -> torch.Tensor:
        x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))  # (B, R, R, 3)
        x = x.permute(0, 3, 1, 2)  # (B, 3, R, R)
        shares = [F.avg_pool2d(((x - torch.tensor(c).view(1, 3, 1, 1)).norm(dim=1, keepdim=True) < 8).float(), PATCH)
                  for c in (SUN, CLOUD, RAIN)]
        feats = torch.cat(shares + [F.avg_pool2d(x / 255.0, PATCH)], dim=1)  # (B, 6, 4, 4)
        return feats.flatten(2).transpose(1, 2)  # (B, 16, 6), row-major tokens

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.float()


class IdentityAdapterModel(nn.Module):
    """A model whose understanding path is an identity linear adapter."""

    def __init__(self, dim: int):
        super().__init__()
        self.und_adapter = nn.Linear(dim, dim)
        with torch.no_grad():
            self.und_adapter.weight.copy_(torch.eye(dim))
            self.und_adapter.bias.zero_()

    def embed_understanding(self, features: torch.Tensor) -> torch.Tensor:
        return self.und_adapter(features)


def _attrs_at(corner: str):
    a = SmartWatch(probe_split(64)).attributes(0)
    other = next(c for c in CORNERS if c != corner)
    return dataclasses.replace(a, weather_position=corner, battery_position=other)


@pytest.mark.parametrize("resolution,grid", [(48, 4), (64, 8), (64, 4), (224, 14), (256, 16)])
def test_icon_cells_lie_in_the_grid_and_follow_the_corner(resolution, grid):
    cells = {c: icon_cells(_attrs_at(c), resolution, grid) for c in CORNERS}
    for c, idx in cells.items():
        assert idx and all(0 <= i < grid * grid for i in idx), (c, idx)
        assert idx == sorted(set(idx))
    # each corner's cells lie in that corner's quadrant, so the four corners are pairwise disjoint
    assert all(set(cells[a]).isdisjoint(cells[b]) for a in CORNERS for b in CORNERS if a != b)
    assert 0 in cells["top-left"] and grid - 1 in cells["top-right"]
    assert grid * (grid - 1) in cells["bottom-left"] and grid * grid - 1 in cells["bottom-right"]
    with pytest.raises(UserError, match="grid"):
        icon_cells(_attrs_at("top-left"), resolution, 0)


@pytest.mark.parametrize("resolution", [48, 64, 224])
def test_icon_box_covers_exactly_the_pixels_the_weather_changes(resolution):
    sw = SmartWatch(probe_split(resolution))
    for i in range(4):
        a = sw.attributes(i)
        imgs = {w: np.asarray(sw.renderer.render(dataclasses.replace(a, weather=w)), dtype=np.int16)
                for w in WEATHERS}
        x0, y0, x1, y1 = icon_box(a, resolution)
        inside = np.zeros((resolution, resolution), dtype=bool)
        inside[math.floor(y0):math.ceil(y1), math.floor(x0):math.ceil(x1)] = True
        for w in WEATHERS[1:]:
            changed = np.abs(imgs[w] - imgs[WEATHERS[0]]).sum(-1) > 0
            assert changed.sum() > 0.1 * (x1 - x0) * (y1 - y0), (i, w)  # the icon is there
            assert not (changed & ~inside).any(), (i, w, a.weather_position)  # and nowhere else


def test_probe_reads_the_weather_at_the_icon_and_not_from_shuffled_labels():
    source, model = ColourSource(), IdentityAdapterModel(ColourSource.input_dim)
    split = probe_split(64, seed=3)  # rendered at the source's 48 px
    x_tr, y_tr = adapter_features(model, source, split, 150, batch_size=64)
    x_te, y_te = adapter_features(model, source, split, 90, batch_size=32, start=150)
    assert x_tr.shape == (150, 6) and x_te.shape == (90, 6) and x_tr.dtype == np.float32
    assert set(np.unique(y_tr)) == {0, 1, 2}
    # the labels are the images' weathers
    sw = SmartWatch(split.with_(resolution=48))
    assert [WEATHERS[k] for k in y_te[:5]] == [sw.attributes(150 + i).weather for i in range(5)]
    # the vectors are means over the icon's cells of the model's understanding output
    a = sw.attributes(150)
    with torch.no_grad():
        emb = model.embed_understanding(source.to_inputs(source.encode_cached([sw.image(150)]).half()))[0]
    expected = emb[icon_cells(a, 48, 4)].mean(0).numpy()
    np.testing.assert_allclose(x_te[0], expected, rtol=1e-5, atol=1e-6)

    res = fit_probe(x_tr, y_tr, x_te, y_te)
    assert res["accuracy"] >= 0.95 and 0.2 < res["chance"] < 0.6
    shuffled = fit_probe(x_tr, np.random.default_rng(0).permutation(y_tr), x_te, y_te)
    assert shuffled["accuracy"] < res["accuracy"] - 0.3 and abs(shuffled["accuracy"] - shuffled["chance"]) < 0.2


def test_the_probe_reads_the_icon_cells_only(monkeypatch):
    """Averaging the tokens of the diagonally opposite corner instead loses the weather."""
    import uvlm.eval.probe as probe

    source, model = ColourSource(), IdentityAdapterModel(ColourSource.input_dim)
    split = probe_split(48, seed=3)
    opposite = {"top-left": "bottom-right", "bottom-right": "top-left", "top-right": "bottom-left",
                "bottom-left": "top-right"}

    def probe_accuracy() -> dict[str, float]:
        train = adapter_features(model, source, split, 150)
        test = adapter_features(model, source, split, 90, start=150)
        return fit_probe(*train, *test)

    right = probe_accuracy()
    monkeypatch.setattr(probe, "icon_cells", lambda a, r, g: icon_cells(_attrs_at(opposite[a.weather_position]), r, g))
    wrong = probe_accuracy()
    assert right["accuracy"] >= 0.95 and wrong["accuracy"] < right["chance"] + 0.2


def test_tsne_figure_is_written_as_png_and_pdf(tmp_path):
    source, model = ColourSource(), IdentityAdapterModel(ColourSource.input_dim)
    x, y = adapter_features(model, source, probe_split(48), 40)
    xy = tsne_2d(x, seed=0)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    np.testing.assert_allclose(tsne_2d(x, seed=0), xy)  # seeded
    res = {"accuracy": 1.0, "tsne": xy.tolist(), "labels": [WEATHERS[k] for k in y]}
    png, pdf = plot_tsne({"SigLIP_u": res, "SigLIP-SigLIP": res}, tmp_path / "fig" / "tsne.png")
    assert png == tmp_path / "fig" / "tsne.png" and pdf == tmp_path / "fig" / "tsne.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in png.parent.iterdir()) == ["tsne.pdf", "tsne.png"]  # no temporaries left
    with pytest.raises(UserError, match="tsne=True"):
        plot_tsne({"VQ_u": {**res, "tsne": None}}, tmp_path / "other.png")
    with pytest.raises(UserError, match=".png"):
        plot_tsne({"VQ_u": res}, tmp_path / "other.jpg")


@pytest.mark.usefixtures("fake_vision")
def test_probe_run_on_a_trained_run(tmp_path):
    from _fakes import tiny_config
    from uvlm.train.checkpoint import load_run
    from uvlm.train.loop import train

    cfg = tiny_config("SigLIP-SigLIP", steps=1)
    cfg = cfg.with_(model=dataclasses.replace(cfg.model, affine=True))
    train(cfg, tmp_path / "run", quiet=True)
    lines = []
    res = probe_run(tmp_path / "run", n_train=30, n_test=20, seed=1, n_tsne=12, log=lines.append)
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 < res["chance"] <= 1.0
    assert (res["n_train"], res["n_test"], res["grid"], res["resolution"]) == (30, 20, 4, 48)
    assert np.asarray(res["tsne"]).shape == (12, 2) and set(res["labels"]) <= set(WEATHERS)
    assert res["cells"]["top-left"] == [0, 1, 4, 5] and len(lines) == 1
    # the probed vectors are the LLM inputs: adapter then affine map
    loaded = load_run(tmp_path / "run")
    assert loaded.model.affine is not None
    x, y = adapter_features(loaded.model, loaded.sources.understanding, probe_split(48, seed=1), 20, start=30)
    assert res["labels"] == [WEATHERS[k] for k in y[:12]]
    sw = SmartWatch(probe_split(48, seed=1))
    src = loaded.sources.understanding
    with torch.no_grad():
        emb = loaded.model.embed_understanding(src.to_inputs(src.encode_cached([sw.image(30)]).half()))[0]
    np.testing.assert_allclose(x[0], emb[icon_cells(sw.attributes(30), 48, 4)].mean(0).numpy(), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(UserError, match="n_train"):
        probe_run(tmp_path / "run", n_train=0)


class PermutedSource:
    """48 px, a 4x4 grid: the icon's cells hold the same four unit vectors for every weather, in a weather-specific
    order. Their mean is the same for every weather; side by side they tell it."""

    kind, cache_dtype, resolution, num_tokens, input_dim, codebook = "siglip", "float32", 48, 16, 4, None
    ORDERS = {"sunny": [0, 1, 2, 3], "cloudy": [1, 0, 3, 2], "raining": [3, 2, 1, 0]}

    def __init__(self, n: int):
        sw = SmartWatch(probe_split(48))
        self.attrs = {sw.image(i).tobytes(): sw.attributes(i) for i in range(n)}

    def encode_cached(self, images) -> torch.Tensor:
        out = torch.zeros(len(images), 16, 4)
        for b, im in enumerate(images):
            a = self.attrs[im.tobytes()]
            for cell, k in zip(icon_cells(a, 48, 4), self.ORDERS[a.weather]):
                out[b, cell, k] = 1.0
        return out

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.float()


def test_a_mean_over_the_icon_cells_can_hide_what_the_cells_side_by_side_show():
    from uvlm.eval.probe import probe_views

    source = PermutedSource(300)
    views = probe_views(source, n_train=200, n_test=100, batch_size=100)
    assert views["concat"]["accuracy"] > 0.95 and views["concat"]["dims"] == 16
    assert views["mean"]["accuracy"] < views["mean"]["chance"] + 0.15 and views["mean"]["dims"] == 4
    assert "codes" not in views  # a continuous source has no code ids
    # adapter_features' concat view is the same reading through a model, cells in grid order
    model = IdentityAdapterModel(4)
    split = probe_split(48)
    x, y = adapter_features(model, source, split, 20, view="concat")
    a = SmartWatch(split).attributes(0)
    expected = source.encode_cached([SmartWatch(split).image(0)])[0][icon_cells(a, 48, 4)].reshape(-1).numpy()
    np.testing.assert_allclose(x[0], expected, atol=1e-6)
    assert x.shape == (20, 16)
    with pytest.raises(UserError, match="view"):
        adapter_features(model, source, split, 20, view="max")
