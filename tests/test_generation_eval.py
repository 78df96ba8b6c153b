"""Feature-space faithfulness: a probe fitted on real features judges generated tokens."""

from __future__ import annotations

import torch

import uvlm.model.generate as gen
from uvlm.data import SmartWatch, SplitConfig, WEATHERS
from uvlm.eval.generation import feature_faithfulness

RES = 48
N_PROBE = 300


class WeatherSource:
    """A stand-in encoder whose 4 tokens point in a fixed direction per weather (plus noise): it 'sees' weather
    perfectly, so the test isolates the probe-and-compare logic from any encoder's quality."""

    kind, resolution, num_tokens, input_dim, target_dim, cache_dtype, codebook = "siglip", RES, 4, 16, 16, "float16", None

    def __init__(self):
        self.truth = {}
        splits = [SplitConfig(name="faithfulness-probe", seed=0, resolution=RES, n_vqa=N_PROBE + 500, n_caption=0,
                              n_generation=0)]
        for cfg in splits:
            sw = SmartWatch(cfg)
            for i in range(cfg.n_vqa):
                s = sw.sample("vqa", i)
                self.truth[s.image.tobytes()] = s.attributes.weather
        self.test = SmartWatch(SplitConfig.test(resolution=RES, n_vqa=0, n_generation=5000))
        for i in range(300):  # the ground truths of the first test drawings (the own-vs-other similarity reads them)
            s = self.test.sample("generation", i)
            self.truth[s.image.tobytes()] = s.attributes.weather
        g = torch.Generator().manual_seed(0)
        self.directions = {w: torch.randn(16, generator=g) for w in WEATHERS}
        self.noise = torch.Generator().manual_seed(1)

    def weather_of(self, image) -> str:
        return self.truth[image.tobytes()]

    def tokens(self, weathers) -> torch.Tensor:
        base = torch.stack([self.directions[w] for w in weathers])[:, None, :].expand(-1, 4, -1)
        return base + 0.3 * torch.randn(base.shape, generator=self.noise)

    def encode_cached(self, images) -> torch.Tensor:
        return self.tokens([self.weather_of(im) for im in images])


def test_faithfulness_is_high_for_a_faithful_drawer_and_chance_for_a_constant_one(monkeypatch):
    source = WeatherSource()
    by_text = {s.instruction: s for s in source.test.stream("generation", 0, 600, with_image=False)}

    def faithful(model, instructions, **kw):  # draws the asked weather, at 5x the real features' scale
        return 5.0 * source.tokens([by_text[t].attributes.weather for t in instructions])

    monkeypatch.setattr(gen, "generate_images", faithful)
    good = feature_faithfulness(None, source, "weather", n_probe=N_PROBE, n_generate=60)
    assert good["probe_on_real"] > 0.95 and good["generated"] == 60
    assert good["probe_on_generated"] > 0.95  # faithful at another scale is still faithful
    assert good["centroid_on_generated"] > 0.95  # the nearest real class mean agrees
    assert good["similarity_own"] > good["similarity_other"] + 0.3  # each drawing is closest to its own watch

    def constant(model, instructions, **kw):  # always the same picture
        return source.tokens(["sunny"] * len(instructions))

    monkeypatch.setattr(gen, "generate_images", constant)
    bad = feature_faithfulness(None, source, "weather", n_probe=N_PROBE, n_generate=60)
    assert bad["probe_on_generated"] < 0.6 and bad["centroid_on_generated"] < 0.6
    assert abs(bad["similarity_own"] - bad["similarity_other"]) < 0.15  # the same picture for every instruction


class IconSource(WeatherSource):
    """2x2 tokens: only the cell of the weather icon's corner points in the weather's direction; the other cells are
    loud noise. A probe that pools the whole drawing dilutes the icon; the icon probe reads it."""

    def __init__(self):
        super().__init__()
        self.attrs = {}
        for cfg in (SplitConfig(name="faithfulness-probe", seed=0, resolution=RES, n_vqa=N_PROBE + 500, n_caption=0,
                                n_generation=0),):
            sw = SmartWatch(cfg)
            for i in range(cfg.n_vqa):
                s = sw.sample("vqa", i)
                self.attrs[s.image.tobytes()] = s.attributes

    def drawn(self, weathers, corners) -> torch.Tensor:
        from uvlm.eval.probe import _corner, icon_cells

        out = 3.0 * torch.randn((len(weathers), 4, 16), generator=self.noise)
        for i, (w, c) in enumerate(zip(weathers, corners)):
            for cell in icon_cells(_corner(c), RES, 2):
                out[i, cell] = self.directions[w] + 0.3 * torch.randn(16, generator=self.noise)
        return out

    def encode_cached(self, images) -> torch.Tensor:
        a = [self.attrs[im.tobytes()] for im in images]
        return self.drawn([x.weather for x in a], [x.weather_position for x in a])


def test_the_icon_probe_reads_the_stated_corner_and_refuses_the_wrong_one(monkeypatch):
    from types import SimpleNamespace

    from uvlm.data.attributes import CORNERS
    from uvlm.eval.generation import icon_faithfulness

    source = IconSource()
    model = SimpleNamespace(config=SimpleNamespace(num_output_tokens=4))
    by_text = {s.instruction: s for s in source.test.stream("generation", 0, 2000, with_image=False)}

    def faithful(model, instructions, **kw):  # the asked weather, in the asked corner
        a = [by_text[t].attributes for t in instructions]
        return source.drawn([x.weather for x in a], [x.weather_position for x in a])

    monkeypatch.setattr(gen, "generate_images", faithful)
    good = icon_faithfulness(model, source, n_probe=N_PROBE, n_generate=60)
    assert good["icon_on_real"] > 0.95 and good["generated"] == 60 and good["grid"] == 2
    assert good["icon_on_generated"] > 0.95 and good["centroid_on_generated"] > 0.95

    def misplaced(model, instructions, **kw):  # the asked weather, in the diagonally opposite corner
        a = [by_text[t].attributes for t in instructions]
        return source.drawn([x.weather for x in a], [CORNERS[3 - CORNERS.index(x.weather_position)] for x in a])

    monkeypatch.setattr(gen, "generate_images", misplaced)
    bad = icon_faithfulness(model, source, n_probe=N_PROBE, n_generate=60)
    assert bad["icon_on_generated"] < 0.6
