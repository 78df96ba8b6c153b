"""Pixel faithfulness: a reader's reading of each image, scored against what its instruction states; and the
generation evaluation of a run (FID + faithfulness) end to end on fakes."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import uvlm.model.generate as gen
from _fakes import FakeSource, tiny_config
from uvlm.data import SmartWatch, SplitConfig
from uvlm.data.attributes import WatchAttributes
from uvlm.errors import UserError
from uvlm.eval.faithfulness import faithfulness, score_reading
from uvlm.eval.generation_metrics import evaluate_generation
from uvlm.vision.base import to_float_batch
from uvlm.vision.reader import ReaderConfig, SmartWatchReader

RES = 48


def _key(x: torch.Tensor) -> bytes:
    return (x * 255).round().to(torch.uint8).numpy().tobytes()


class PerfectReader:
    """Reads any image it has seen rendered exactly right (as the real reader reports it: hour mod 12)."""

    resolution = RES

    def __init__(self, split: SplitConfig):
        sw = SmartWatch(split)
        images = to_float_batch([sw.image(i) for i in range(split.n_images)], RES)
        self.truth = {_key(images[i]): sw.attributes(i) for i in range(split.n_images)}

    def read(self, x: torch.Tensor) -> list[dict]:
        out = []
        for image in x:
            a = self.truth[_key(image)]
            out.append({**a.to_dict(), "hour": a.hour % 12})
        return out


def _truth(**kw) -> WatchAttributes:
    base = dict(hour=12, minute=55, second=30, weather="cloudy", weather_position="top-left", battery=90,
                battery_position="bottom-right", face_color=(10, 20, 30))
    return WatchAttributes(**{**base, **kw})


def _reading(truth: WatchAttributes, **kw) -> dict:
    return {**truth.to_dict(), **kw}


# ----- one reading ---------------------------------------------------------------------------------------------------
def test_a_correct_reading_scores_one_and_twelve_oclock_reads_as_zero():
    truth = _truth()
    everything = ("time", "weather", "battery", "weather_position", "battery_position")
    scores = score_reading(_reading(truth, hour=0), truth, everything)
    assert set(scores) == {*everything, "position", "total"}
    assert all(v == 1.0 for v in scores.values())


def test_each_stated_attribute_is_scored_with_the_vqa_rules():
    truth = _truth()
    reading = _reading(truth, minute=10, battery=130, battery_position="top-right", weather="sunny")
    scores = score_reading(reading, truth, ("time", "battery", "weather_position", "battery_position"))
    assert scores["time"] == pytest.approx(1 - (15 / 30) / 3)  # 55 -> 10 is 15 minutes round the dial
    assert scores["battery"] == pytest.approx(0.9)  # 130% is clamped to 100 against a true 90
    assert scores["weather_position"] == 1.0 and scores["battery_position"] == 0.0
    assert scores["position"] == pytest.approx(0.5)
    assert scores["total"] == pytest.approx((scores["time"] + 0.9 + 1.0 + 0.0) / 4)
    assert "weather" not in scores  # the wrong weather is not stated, so it is free


def test_unstated_attributes_are_free_and_bad_readings_are_user_errors():
    truth = _truth()
    wrong_everywhere_but_time = _reading(truth, weather="raining", battery=0, weather_position="bottom-left")
    assert score_reading(wrong_everywhere_but_time, truth, ("time",)) == {"time": 1.0, "total": 1.0}
    assert score_reading(_reading(truth), truth, ()) == {}
    with pytest.raises(UserError, match="lacks battery"):
        score_reading({"hour": 1, "minute": 2, "second": 3}, truth, ("time", "battery"))
    with pytest.raises(UserError, match="unknown stated attribute"):
        score_reading(_reading(truth), truth, ("colour",))


# ----- many images ---------------------------------------------------------------------------------------------------
N = 300
SPLIT = SplitConfig.test(resolution=RES, n_vqa=0, n_generation=N)

#: The expected score of a reading of an unrelated image (independent uniform attributes): circular errors of half
#: the maximum on average for minutes and seconds (and for hours, up to the 13th hour value), one in three weathers,
#: one in four corners, and 1 - E|U - V| / 100 for two uniform integers in 0..100.
CHANCE = {"time": 50.0, "weather": 100 / 3, "weather_position": 25.0, "battery_position": 25.0,
          "position": 25.0, "battery": 100 * (1 - (101 ** 2 - 1) / (3 * 101) / 100)}


@pytest.fixture(scope="module")
def rendered():
    sw = SmartWatch(SPLIT)
    samples = list(sw.stream("generation"))
    return PerfectReader(SPLIT), samples, to_float_batch([s.image for s in samples], RES)


def test_a_reader_that_reads_right_gives_full_marks_on_every_stated_attribute(rendered):
    reader, samples, images = rendered
    result = faithfulness(reader, images, samples, batch_size=64)
    assert result["unit"] == "percent" and result["n"] == N
    for group, score in result["scores"].items():
        assert score == pytest.approx(100.0), group
    assert result["counts"]["time"] == N  # every instruction states the time
    assert result["counts"]["total"] == sum(len(s.mentioned) for s in samples)
    as_pil = faithfulness(reader, [s.image for s in samples[:20]], samples[:20])  # PIL images work too
    assert as_pil["scores"]["total"] == pytest.approx(100.0)


def test_images_of_other_samples_score_at_chance(rendered):
    reader, samples, images = rendered
    perm = torch.from_numpy(np.random.default_rng(0).permutation(N))
    result = faithfulness(reader, images[perm], samples)
    for group, chance in CHANCE.items():
        count = result["counts"][group]
        bound = 4 * 50 / math.sqrt(count)  # 4 standard errors of a mean of scores in [0, 1] (std <= 0.5), in %
        assert abs(result["scores"][group] - chance) < bound, (group, result["scores"][group], chance, bound)
    assert result["scores"]["total"] < 60


def test_faithfulness_checks_its_inputs(rendered):
    reader, samples, images = rendered
    with pytest.raises(UserError, match="3 images for 2 samples"):
        faithfulness(reader, images[:3], samples[:2])
    with pytest.raises(UserError, match="no samples"):
        faithfulness(reader, images[:0], [])


def test_images_of_another_size_are_resized_to_the_reader():
    reader = SmartWatchReader(ReaderConfig(resolution=64, width=4, feature_dim=8))
    sw = SmartWatch(SplitConfig.test(resolution=RES, n_vqa=0, n_generation=4))
    samples = list(sw.stream("generation"))
    result = faithfulness(reader, to_float_batch([s.image for s in samples], RES), samples)
    assert result["n"] == 4 and 0.0 <= result["scores"]["total"] <= 100.0


# ----- evaluate_generation -------------------------------------------------------------------------------------------
class Features(nn.Module):
    """A fixed random conv + ReLU + 2x2 pooling: (B, 3, H, W) in [0, 1] -> (B, 32)."""

    num_features = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 4, 4)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x * 2 - 1))).flatten(1)


class RenderingSource:
    """A generation source whose token is an image index of the test split, decoded by rendering that image."""

    kind = "vq"

    def __init__(self, split: SplitConfig):
        self.sw = SmartWatch(split)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return to_float_batch([self.sw.image(int(i)) for i in tokens[:, 0]], RES)


def _drawing_run(n_generation: int, source, variant: str = "VQ_g"):
    cfg = tiny_config(variant)
    cfg = cfg.with_(data=replace(cfg.data, test=cfg.data.test.with_(n_generation=n_generation)))
    return SimpleNamespace(config=cfg, model=SimpleNamespace(target=object()),
                           sources=SimpleNamespace(generation=source), checkpoint="fake")


def _drawer(split: SplitConfig, shift: int):
    """generate_images stand-in: draws, for each instruction, the image of the sample ``shift`` places later."""
    sw = SmartWatch(split)
    index = {s.instruction: s.index for s in sw.stream("generation", with_image=False)}

    def draw(model, instructions, sampling=None, **kw):
        ids = [split.image_index("generation", (index[t] + shift) % split.n_generation) for t in instructions]
        return torch.tensor(ids)[:, None]

    return draw


def test_evaluate_generation_pairs_each_instruction_with_its_drawing(monkeypatch):
    n = 60
    run = _drawing_run(n, None)
    split = run.config.data.test
    run.sources.generation = RenderingSource(split)
    reader = PerfectReader(split)
    monkeypatch.setattr(gen, "generate_images", _drawer(split, 0))
    faithful = evaluate_generation(run, n=n, batch_size=16, fid_extractor=Features(), reader=reader)
    assert faithful["n"] == n and faithful["resolution"] == RES and faithful["seconds"] >= 0
    assert faithful["faithfulness"]["scores"]["total"] == pytest.approx(100.0)
    assert faithful["faithfulness_real"]["scores"]["total"] == pytest.approx(100.0)
    assert faithful["fid"]["extractor"] == "Features" and faithful["fid"]["n_fake"] == n
    assert faithful["fid_floor"]["fid"] > 0 and faithful["fid_floor"]["n_fake"] == n  # other real watches

    monkeypatch.setattr(gen, "generate_images", _drawer(split, 1))  # the same pictures, each for the wrong text
    shuffled = evaluate_generation(run, n=n, batch_size=16, fid_extractor=Features(), reader=reader, floor=False)
    monkeypatch.setattr(gen, "generate_images", _drawer(split.with_(n_generation=2 * n), n))  # other watches
    other = evaluate_generation(run, n=n, batch_size=16, fid_extractor=Features(), floor=False,
                                reader=PerfectReader(split.with_(n_generation=2 * n)))
    assert shuffled["fid_floor"] is None
    assert shuffled["faithfulness"]["scores"]["total"] < 75  # FID cannot see the pairing; faithfulness can
    assert other["fid"]["fid"] > 0
    for result in (faithful, shuffled):
        assert abs(result["fid"]["fid"]) < 1e-3 * other["fid"]["fid"]


def test_evaluate_generation_refuses_runs_that_cannot_draw(monkeypatch):
    understanding = _drawing_run(8, None, "VQ_u")
    understanding.model.target = None
    with pytest.raises(UserError, match="understanding-only"):  # before looking for a reader
        evaluate_generation(understanding, n=4, reader="/no/such/reader")
    with pytest.raises(UserError, match="n=9 but the test split"):
        evaluate_generation(_drawing_run(8, FakeSource("vq")), n=9, reader="/no/such/reader")
    siglip = _drawing_run(8, FakeSource("siglip"), "SigLIP_g")
    monkeypatch.setattr(gen, "generate_images",
                        lambda model, instructions, **kw: torch.zeros(len(instructions), 16, 32))
    with pytest.raises(UserError, match="cannot be turned into pixels"):
        evaluate_generation(siglip, n=4, reader=SmartWatchReader(ReaderConfig(resolution=RES, width=4, feature_dim=8)))


@pytest.mark.usefixtures("fake_vision")
def test_evaluate_generation_on_a_tiny_trained_run(tmp_path):
    from uvlm.train.checkpoint import load_run
    from uvlm.train.loop import train

    train(tiny_config("VQ_g", steps=2), tmp_path / "run", quiet=True)
    loaded = load_run(tmp_path / "run")
    reader = SmartWatchReader(ReaderConfig(resolution=RES, width=4, feature_dim=8))
    result = evaluate_generation(loaded, n=8, batch_size=4, reader=reader)
    assert result["fid"]["extractor"] == "reader" and math.isfinite(result["fid"]["fid"])
    assert result["fid"]["n_real"] == result["fid"]["n_fake"] == 8
    assert result["faithfulness"]["n"] == 8 and result["faithfulness"]["counts"]["time"] == 8
    assert result["resolution"] == RES and result["checkpoint"].endswith("step-000002")
    assert math.isfinite(result["fid_floor"]["fid"]) and result["fid_floor"]["extractor"] == "reader"


# ----- reading back one drawing against a free-text instruction (``uvlm draw``) ------------------------------------
def test_an_instruction_states_exactly_what_its_sample_mentions_with_its_true_values():
    """Every generation instruction the data writes is read back to its own sample's stated attributes and values."""
    from uvlm.eval.faithfulness import stated_in_instruction

    sw = SmartWatch(SplitConfig(name="test", n_vqa=0, n_caption=0, n_generation=300))
    seen = set()
    for i in range(300):
        s = sw.sample("generation", i, with_image=False)
        stated = stated_in_instruction(s.instruction)
        assert set(stated) == set(s.mentioned), s.instruction
        for a, v in stated.items():
            want = {"time": lambda t: (t.hour % 12, t.minute, t.second), "battery": lambda t: float(t.battery)}.get(
                a, lambda t: getattr(t, a))(s.attributes)
            assert (tuple(v) if a == "time" else v) == want, (s.instruction, a)
        seen |= set(stated)
    assert seen == {"time", "weather", "battery", "weather_position", "battery_position"}


def test_read_back_scores_each_stated_attribute_by_the_vqa_rules():
    from uvlm.eval.faithfulness import read_back, stated_in_instruction

    stated = stated_in_instruction("Draw a smart watch showing the time 02:07:00, with 51% battery, and the "
                                   "battery in the top-left corner.")
    reading = {"hour": 2, "minute": 7, "second": 30, "weather": "sunny", "weather_position": "top-right",
               "battery_position": "bottom-left", "battery": 41, "face_color": [0, 0, 0]}
    back = read_back(reading, stated)
    assert list(back) == ["time", "battery", "battery_position"]
    assert back["time"] == {"asked": "02:07:00", "read": "02:07:30", "score": pytest.approx(1 - (30 / 30) / 3)}
    assert back["battery"] == {"asked": "51%", "read": "41%", "score": pytest.approx(0.9)}
    assert back["battery_position"]["score"] == 0.0
    assert stated_in_instruction("Draw a smart watch.") == {}
    # two different values of one attribute state neither
    assert "weather" not in stated_in_instruction("Draw a watch showing sunny or cloudy weather.")
