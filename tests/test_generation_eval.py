"""Feature-space faithfulness: a probe fitted on real features judges generated tokens."""

from __future__ import annotations

import torch

import uvlm.model.generate as gen
from _fakes import FakeSource
from uvlm.data import SmartWatch, SplitConfig
from uvlm.eval.generation import feature_faithfulness


def test_faithfulness_is_high_for_a_perfect_drawer_and_chance_for_a_constant_one(monkeypatch):
    source = FakeSource("siglip")
    test = SmartWatch(SplitConfig.test(resolution=source.resolution, n_vqa=0, n_generation=5000))
    by_text = {s.instruction: s for s in test.stream("generation", 0, 400, with_image=False)}

    def perfect(model, instructions, **kw):  # "draws" exactly the asked image: the real features of its image
        return source.encode_cached([test.image(by_text[t].image_index) for t in instructions])

    monkeypatch.setattr(gen, "generate_images", perfect)
    good = feature_faithfulness(None, source, "weather", n_probe=600, n_generate=60)
    # the fake encoder carries weather only partly; the test compares generated against real, not against 100%
    assert good["probe_on_real"] > good["chance"] + 0.1
    assert abs(good["probe_on_generated"] - good["probe_on_real"]) < 0.15 and good["generated"] == 60

    def constant(model, instructions, **kw):  # always the same picture
        return source.encode_cached([test.image(0)] * len(instructions))

    monkeypatch.setattr(gen, "generate_images", constant)
    bad = feature_faithfulness(None, source, "weather", n_probe=600, n_generate=60)
    assert bad["probe_on_generated"] < good["probe_on_generated"] and bad["probe_on_generated"] < 0.45
    assert torch.is_tensor(constant(None, ["x"]))
