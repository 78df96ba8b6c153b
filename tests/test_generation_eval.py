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
