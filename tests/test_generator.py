"""The SmartWatch generator: determinism, frequencies, texts agreeing with attributes, biases."""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest

from uvlm.data import CORNERS, TEXT_ATTRIBUTES, WEATHERS, Bias, SmartWatch, SplitConfig
from uvlm.data.config import parse_count
from uvlm.data.render import Renderer
from uvlm.errors import UserError


def png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def small(**kw) -> SplitConfig:
    return SplitConfig.train(**{"n_vqa": 3000, "n_caption": 3000, "n_generation": 3000, **kw})


def test_same_seed_same_bytes_in_any_order():
    a = SmartWatch(small(resolution=64))
    b = SmartWatch(small(resolution=64))
    forward = [(s.id, s.turns, png(s.image)) for s in a.stream("vqa", 0, 20)]
    backward = [b.sample("vqa", i) for i in reversed(range(20))][::-1]
    assert forward == [(s.id, s.turns, png(s.image)) for s in backward]
    # a different seed changes the data
    c = SmartWatch(small(resolution=64, seed=1))
    assert [png(s.image) for s in c.stream("vqa", 0, 5)] != [f[2] for f in forward[:5]]


def test_sample_depends_only_on_seed_split_index():
    # counts of other tasks and the size of the split do not change sample i
    a = SmartWatch(small(n_vqa=50)).sample("caption", 7)
    b = SmartWatch(small(n_vqa=0, n_caption=8, n_generation=1)).sample("caption", 7)
    assert (a.turns, a.attributes, png(a.image)) == (b.turns, b.attributes, png(b.image))
    # train and test streams are independent for one seed
    t = SmartWatch(SplitConfig.test()).sample("vqa", 7, with_image=False)
    assert t.attributes != a.attributes


def test_tasks_share_images_in_train_and_not_in_test():
    sw = SmartWatch(small())
    assert sw.sample("vqa", 5).attributes == sw.sample("generation", 5).attributes == sw.sample("caption", 5).attributes
    test = SmartWatch(SplitConfig.test())
    assert test.config.n_images == 1500
    assert test.sample("generation", 0, with_image=False).image_index == 1000
    assert all(len(test.sample("vqa", i, with_image=False).turns) == 1 for i in range(50))


def test_attribute_frequencies_and_distinct_corners():
    sw = SmartWatch(small())
    attrs = [sw.attributes(i) for i in range(4000)]
    n = len(attrs)
    assert all(a.weather_position != a.battery_position for a in attrs)
    for values, key in ((WEATHERS, "weather"), (CORNERS, "weather_position"), (CORNERS, "battery_position")):
        c = Counter(getattr(a, key) for a in attrs)
        assert set(c) == set(values)
        for v in values:
            assert abs(c[v] / n - 1 / len(values)) < 0.03, (key, v, c)
    hours = Counter(a.hour for a in attrs)
    assert set(hours) == set(range(13))
    assert 0 <= min(a.battery for a in attrs) and max(a.battery for a in attrs) == 100
    assert abs(np.mean([a.battery for a in attrs]) - 50) < 2
    assert abs(np.mean([a.minute for a in attrs]) - 29.5) < 1.5


def test_question_types_and_turn_counts():
    sw = SmartWatch(small())
    samples = [sw.sample("vqa", i, with_image=False) for i in range(3000)]
    turns = Counter(len(s.turns) for s in samples)
    assert set(turns) <= {1, 2, 3, 4}
    # 1 + Binomial(3, 0.4): mean 2.2
    assert abs(np.mean([len(s.turns) for s in samples]) - 2.2) < 0.06
    asked = Counter(t.attribute for s in samples for t in s.turns)
    total = sum(asked.values())
    for a in TEXT_ATTRIBUTES:
        assert abs(asked[a] / total - 0.2) < 0.02, asked


def test_answers_are_bare_values_and_conversation_format():
    sw = SmartWatch(small())
    for i in range(300):
        s = sw.sample("vqa", i, with_image=False)
        for t in s.turns:
            assert t.answer == s.attributes.value_text(t.attribute)
        conv = s.conversations()
        assert conv[0]["value"].startswith("<image>\n")
        assert [c["from"] for c in conv] == ["human", "gpt"] * len(s.turns)
        assert sum("<image>" in c["value"] for c in conv) == 1
    t = sw.sample("vqa", 0, with_image=False).turns[0]
    assert re.fullmatch(r"\d\d:\d\d:\d\d|\d{1,3}%|sunny|cloudy|raining|(top|bottom)-(left|right)", t.answer)


def _states(text: str, attrs, attribute: str) -> bool:
    if attribute in ("weather_position", "battery_position"):
        word = "weather" if attribute == "weather_position" else "battery"
        return re.search(rf"{word}[^,]*\b{attrs.value_text(attribute)}\b", text) is not None
    return attrs.value_text(attribute) in text


def test_caption_and_instruction_contents_agree_with_attributes():
    sw = SmartWatch(small())
    mention_counts = Counter()
    for i in range(2000):
        for task in ("caption", "generation"):
            s = sw.sample(task, i, with_image=False)
            text = s.turns[0].answer if task == "caption" else s.instruction
            assert "time" in s.mentioned
            for a in TEXT_ATTRIBUTES:
                assert _states(text, s.attributes, a) == (a in s.mentioned), (text, a, s.mentioned)
            if task == "caption":
                mention_counts.update(s.mentioned)
            else:
                assert s.conversations() == [{"from": "human", "value": text}, {"from": "gpt", "value": "<image>"}]
    for a in ("weather", "battery", "weather_position", "battery_position"):
        assert abs(mention_counts[a] / 2000 - 0.5) < 0.04


def test_literal_weather_bias():
    cfg = small(bias=Bias.parse("weather"))
    assert cfg.bias == Bias("weather", 0.05, 0.0)
    sw = SmartWatch(cfg)
    asked = Counter(t.attribute for i in range(3000) for t in sw.sample("vqa", i, with_image=False).turns)
    total = sum(asked.values())
    assert abs(asked["weather"] / total - 0.05) < 0.012
    for a in ("time", "battery", "weather_position", "battery_position"):
        assert abs(asked[a] / total - 0.2375) < 0.025
    for i in range(1000):
        cap = sw.sample("caption", i, with_image=False)
        assert "weather" not in cap.mentioned and cap.attributes.weather not in cap.turns[0].answer
    # generation untouched: same instructions as the unbiased split
    plain = SmartWatch(small())
    assert [sw.sample("generation", i, with_image=False).instruction for i in range(50)] == \
           [plain.sample("generation", i, with_image=False).instruction for i in range(50)]


def test_general_bias_any_attribute_any_share():
    cfg = small(bias=Bias.parse("battery_position:0.5:1"))
    sw = SmartWatch(cfg)
    asked = Counter(t.attribute for i in range(2000) for t in sw.sample("vqa", i, with_image=False).turns)
    assert abs(asked["battery_position"] / sum(asked.values()) - 0.5) < 0.03
    caps = [sw.sample("caption", i, with_image=False) for i in range(300)]
    assert all("battery_position" in c.mentioned for c in caps)
    none = SmartWatch(small(bias=Bias("time", 0.0, 0.0)))
    for i in range(300):
        s = none.sample("vqa", i, with_image=False)
        assert all(t.attribute != "time" for t in s.turns)
        c = none.sample("caption", i, with_image=False)
        assert "time" not in c.mentioned and c.attributes.time not in c.turns[0].answer


@pytest.mark.parametrize("bad,match", [
    (lambda: Bias.parse("colour"), "unknown bias attribute"),
    (lambda: Bias.parse("weather:1.5"), r"in \[0, 1\]"),
    (lambda: Bias.parse("weather:abc"), "must be numbers"),
    (lambda: SplitConfig(n_vqa=-1), "non-negative"),
    (lambda: SplitConfig(resolution=32), "legible minimum"),
    (lambda: parse_count("-5"), "non-negative"),
    (lambda: SplitConfig.from_dict({"nme": "x"}), "unknown split config key"),
])
def test_bad_config_is_one_line_user_error(bad, match):
    with pytest.raises(UserError, match=match) as e:
        bad()
    assert "\n" not in str(e.value)


def test_zero_sizes_and_counts():
    sw = SmartWatch(SplitConfig.train(n_vqa=0, n_caption=5, n_generation=0))
    assert sw.tasks == ("caption",)
    assert list(sw.stream("vqa")) == []
    with pytest.raises(UserError, match="out of range"):
        sw.sample("caption", 5)
    assert parse_count("60K") == 60_000 and parse_count("1.5M") == 1_500_000 and parse_count("200M") == 200_000_000


def test_huge_split_is_lazy():
    # hundreds of millions of samples: nothing is built up front, random access is immediate
    sw = SmartWatch(SplitConfig.train(n_vqa=300_000_000, n_caption=0, n_generation=300_000_000))
    s = sw.sample("generation", 299_999_999)
    assert s.image.size == (64, 64)
    it = sw.stream("vqa", 123_456_789)
    assert next(it).index == 123_456_789


@pytest.mark.parametrize("res", [48, 64, 96, 224, 256])
def test_render_sizes_and_antialiasing(res):
    sw = SmartWatch(small(resolution=res))
    im = sw.image(3)
    assert im.size == (res, res) and im.mode == "RGB"
    arr = np.asarray(im)
    # anti-aliased: many distinct colours, not only background, face, hands and icons
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50
    assert (arr[0, 0] == 255).all()  # white background


def test_render_draws_the_attributes():
    """The pixels change where and how the attributes say: hands move with the time, icons sit at their corner."""
    from dataclasses import replace

    sw = SmartWatch(small(resolution=96))
    a = sw.attributes(0)
    r = Renderer(96)
    base = np.asarray(r.render(a)).astype(int)
    # a different minute moves the minute hand: pixels near the centre change
    moved = np.asarray(r.render(replace(a, minute=(a.minute + 15) % 60))).astype(int)
    assert np.abs(base - moved)[24:72, 24:72].sum() > 0
    # the weather icon is at its corner: moving it changes exactly the two corners involved
    other = [c for c in CORNERS if c not in (a.weather_position, a.battery_position)][0]
    moved = np.asarray(r.render(replace(a, weather_position=other))).astype(int)
    diff = np.abs(base - moved).sum(axis=2)
    quads = {"top-left": diff[:30, :30], "top-right": diff[:30, -30:], "bottom-left": diff[-30:, :30],
             "bottom-right": diff[-30:, -30:]}
    assert quads[a.weather_position].sum() > 0 and quads[other].sum() > 0
    assert quads[a.battery_position].sum() == 0
    # hour 0 and hour 12 look the same
    assert np.array_equal(np.asarray(r.render(replace(a, hour=0))), np.asarray(r.render(replace(a, hour=12))))
