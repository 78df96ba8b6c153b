"""The SmartWatch VQA score: parsing, per-attribute scores, reports, prediction files and ``uvlm score``."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest

from uvlm.cli.main import main
from uvlm.data import CORNERS, WEATHERS, SmartWatch, SplitConfig, WatchAttributes
from uvlm.data.scoring import (
    ClockTime,
    Question,
    find_values,
    parse_answer,
    questions_from_samples,
    read_predictions,
    reference_predictions,
    score_answer,
    score_predictions,
    write_predictions,
)
from uvlm.errors import UserError


def watch(hour=2, minute=7, second=0, weather="sunny", weather_position="top-left", battery=51,
          battery_position="bottom-right") -> WatchAttributes:
    return WatchAttributes(hour, minute, second, weather, weather_position, battery, battery_position, (1, 2, 3))


# ----- parsing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("02:07:00", ClockTime(2, 7, 0)),
    ("The time is 02:07:00.", ClockTime(2, 7, 0)),
    ("2:07:00", ClockTime(2, 7, 0)),
    ("02:07", ClockTime(2, 7, 0)),            # no seconds: seconds are 0
    ("It is 14:07:59 now", ClockTime(2, 7, 59)),  # 24-hour reading, hour mod 12
    ("12:30:00", ClockTime(0, 30, 0)),
    ("02:75:00", None),                        # not a clock reading
    ("1:02:07:00", None),                      # four fields: not a time
    ("seven past two", None),
    ("02:07:00 or 03:07:00", None),            # two different times: hedging is unparsable
    ("02:07 (that is 02:07:00)", ClockTime(2, 7, 0)),  # the same time twice is fine
])
def test_parse_time(text, expected):
    assert parse_answer("time", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("51%", 51.0), ("about 51 %", 51.0), ("51 percent", 51.0), ("The battery is at 51 per cent.", 51.0),
    ("51", 51.0), ("Battery: 51.5%", 51.5), ("51%, i.e. 51 percent", 51.0),
    ("It shows 51% at 02:07:00", 51.0),   # the time's digits are not a battery level
    ("51% or 52%", None), ("full", None), ("", None),
])
def test_parse_battery(text, expected):
    assert parse_answer("battery", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("sunny", "sunny"), ("The sun is shining", "sunny"), ("It is rainy", "raining"), ("rain", "raining"),
    ("RAINING.", "raining"), ("Cloudy", "cloudy"), ("clouds", "cloudy"), ("a cloud", "cloudy"),
    ("Sunday", None), ("clouded", None), ("sunny or cloudy", None),
])
def test_parse_weather(text, expected):
    assert parse_answer("weather", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("top-left", "top-left"), ("Top left", "top-left"), ("top-left corner", "top-left"), ("upper left", "top-left"),
    ("In the upper-right-hand corner.", "top-right"), ("bottom_left", "bottom-left"), ("lower right", "bottom-right"),
    ("BOTTOM-LEFT", "bottom-left"), ("topleft", "top-left"), ("the top-rightmost corner", "top-right"),
    ("left", None), ("top leftover", None), ("on the left", None), ("top", None), ("stop left", None), ("left top", None),
])
def test_parse_position(text, expected):
    assert parse_answer("weather_position", text) == expected
    assert parse_answer("battery_position", text) == expected


def test_corners_are_told_apart():
    assert find_values("weather_position", "bottom-left") == {"bottom-left"}
    assert find_values("weather_position", "top-left and bottom-left") == {"top-left", "bottom-left"}
    assert find_values("battery_position", "bottom-right, top-right") == {"bottom-right", "top-right"}


def test_every_ground_truth_text_parses_back():
    for h in range(13):
        for m in (0, 7, 59):
            assert parse_answer("time", watch(hour=h, minute=m, second=m).time) == ClockTime(h % 12, m, m)
    for b in range(101):
        assert parse_answer("battery", watch(battery=b).battery_text) == b
    for w in WEATHERS:
        assert parse_answer("weather", w) == w
    for c in CORNERS:
        assert parse_answer("weather_position", c) == c


def test_unknown_attribute_is_rejected():
    with pytest.raises(ValueError, match="colour"):
        parse_answer("colour", "red")


# ----- per-answer scores -----------------------------------------------------------------------------------------
def test_exact_answers_score_one():
    sw = SmartWatch(SplitConfig.train(n_vqa=40))
    n = 0
    for s in sw.stream("vqa", with_image=False):
        for t in s.turns:
            assert score_answer(t.attribute, s.attributes, t.answer) == 1.0
            n += 1
    assert n > 40  # some conversations have several questions


def test_time_wraps_around():
    # e_h = e_m = e_s = 1: 1 - (1/6 + 1/30 + 1/30) / 3 = 1 - 7/90
    assert score_answer("time", watch(11, 59, 59), "00:00:00") == pytest.approx(1 - 7 / 90)
    # minute 58 vs 02: 4 minutes apart, not 56
    assert score_answer("time", watch(3, 58, 0), "03:02:00") == pytest.approx(1 - (4 / 30) / 3)
    assert score_answer("time", watch(3, 2, 0), "03:58:00") == pytest.approx(1 - (4 / 30) / 3)


def test_hour_zero_is_twelve():
    assert score_answer("time", watch(0, 15, 30), "12:15:30") == 1.0
    assert score_answer("time", watch(12, 15, 30), "00:15:30") == 1.0
    assert score_answer("time", watch(2, 15, 30), "14:15:30") == 1.0


def test_time_score_divides_by_three():
    # e_h = 3 (term 0.5), e_m = 15 (term 0.5), e_s = 30 (term 1): 1 - 2/3; without the /3 it would be -1
    assert score_answer("time", watch(2, 7, 0), "05:22:30") == pytest.approx(1 / 3)
    # the farthest time on every hand scores exactly 0
    assert score_answer("time", watch(0, 0, 0), "06:30:30") == pytest.approx(0.0)


def test_time_score_is_half_for_random_guessing():
    # exactly: a uniform guess over all 12*60*60 dial positions averages 0.5 against any truth
    truth = watch(12, 41, 3)
    grid = [score_answer("time", truth, f"{h:02d}:{m:02d}:{s:02d}")
            for h in range(12) for m in range(60) for s in range(60)]
    assert math.fsum(grid) / len(grid) == pytest.approx(0.5)
    # statistically: uniform dial guesses on test-split truths (hours 0..12, where 0 and 12 coincide)
    sw = SmartWatch(SplitConfig.test(n_vqa=3000))
    rng = np.random.default_rng(0)
    guesses = rng.integers([0, 0, 0], [12, 60, 60], size=(3000, 3))
    scores = [score_answer("time", sw.attributes(i), "%02d:%02d:%02d" % tuple(g)) for i, g in enumerate(guesses)]
    assert abs(np.mean(scores) - 0.5) < 0.02


def test_battery_is_linear_and_clamped():
    assert score_answer("battery", watch(battery=51), "40%") == pytest.approx(0.89)
    assert score_answer("battery", watch(battery=51), "about 61 percent") == pytest.approx(0.90)
    assert score_answer("battery", watch(battery=80), "150%") == pytest.approx(0.80)  # read as 100
    assert score_answer("battery", watch(battery=10), "-20%") == pytest.approx(0.90)  # read as 0
    assert score_answer("battery", watch(battery=0), "100%") == 0.0


def test_listing_every_value_scores_zero():
    t = watch(weather="cloudy", weather_position="top-right", battery_position="bottom-left")
    assert score_answer("weather", t, "sunny, cloudy or raining") == 0.0
    assert score_answer("weather_position", t, " ".join(CORNERS)) == 0.0
    assert score_answer("battery_position", t, "bottom-left or top-left") == 0.0
    assert score_answer("weather", t, "It is cloudy.") == 1.0
    assert score_answer("weather", t, "It is sunny.") == 0.0
    assert score_answer("weather_position", t, "upper right corner") == 1.0
    assert score_answer("battery_position", t, "Lower left.") == 1.0


def test_unparsable_answers_score_zero():
    t = watch()
    for attr in ("time", "weather", "battery", "weather_position", "battery_position"):
        assert score_answer(attr, t, "I don't know") == 0.0


# ----- questions and reports -------------------------------------------------------------------------------------
def test_questions_from_samples_one_per_turn():
    sw = SmartWatch(SplitConfig.train(n_vqa=30))
    samples = list(sw.stream("vqa", with_image=False))
    qs = questions_from_samples(samples)
    assert len(qs) == sum(len(s.turns) for s in samples)
    assert len({q.id for q in qs}) == len(qs)
    multi = next(s for s in samples if len(s.turns) > 1)
    ours = [q for q in qs if q.id.startswith(multi.id + ".")]
    assert [q.id for q in ours] == [multi.question_id(k) for k in range(len(multi.turns))]
    assert [q.attribute for q in ours] == [t.attribute for t in multi.turns]
    with pytest.raises(UserError, match="caption sample"):
        questions_from_samples([SmartWatch(SplitConfig.train(n_caption=1)).sample("caption", 0, with_image=False)])


def test_report_counts_unparsable_and_pools_positions():
    t = watch(battery=51, weather_position="top-left", battery_position="bottom-right")
    qs = [Question("t", "time", t), Question("w", "weather", t), Question("b", "battery", t),
          Question("wp1", "weather_position", t), Question("wp2", "weather_position", t),
          Question("bp", "battery_position", t)]
    preds = {"t": "02:07:00", "w": "no idea", "b": "1%", "wp1": "top-left", "wp2": "top-right", "bp": "bottom right"}
    r = score_predictions(qs, preds)
    assert r.score("time") == pytest.approx(100.0)
    assert r.score("weather") == pytest.approx(0.0)
    assert r.score("battery") == pytest.approx(50.0)
    assert r.score("weather_position") == pytest.approx(50.0)
    assert r.score("battery_position") == pytest.approx(100.0)
    assert r.score("position") == pytest.approx(200 / 3)  # pooled over 3 questions, not the mean of 50 and 100
    assert r.total == pytest.approx(100 * (1 + 0 + 0.5 + 1 + 0 + 1) / 6)  # the unparsable answer counts as 0
    d = r.to_dict()
    assert d["counts"] == {"time": 1, "weather": 1, "position": 3, "battery": 1, "total": 6,
                           "weather_position": 2, "battery_position": 1}
    assert d["unparsed"]["weather"] == 1 and d["unparsed"]["total"] == 1
    assert r.question_scores["b"] == pytest.approx(0.5)
    json.dumps(d)  # serialisable
    table = r.format_table().splitlines()
    assert len(table) == 2 + 5 and len({len(line) for line in table}) == 1  # aligned
    assert table[-1].split("|")[1].strip() == "total" and f"{r.total:.2f}" in table[-1]


def test_report_with_an_empty_group():
    t = watch()
    r = score_predictions([Question("t", "time", t)], {"t": "02:07:00"})
    assert r.score("battery") is None and r.to_dict()["scores"]["battery"] is None
    assert "| battery  |         - |" in r.format_table()


def test_reference_predictions_score_100():
    qs = questions_from_samples(SmartWatch(SplitConfig.test(n_vqa=100)).stream("vqa", with_image=False))
    r = score_predictions(qs, reference_predictions(qs))
    assert r.total == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for v in r.to_dict()["scores"].values())


def test_missing_and_unknown_ids_are_named():
    qs = [Question(f"q{i}", "weather", watch()) for i in range(10)]
    preds = reference_predictions(qs)
    for i in range(5):
        del preds[f"q{i}"]
    with pytest.raises(UserError, match=r"lack answers for 5 \('q0', 'q1', 'q2', \.\.\.\) of 10"):
        score_predictions(qs, preds)
    preds = {**reference_predictions(qs), "zz": "sunny"}
    with pytest.raises(UserError, match=r"1 \('zz'\) prediction ids are not questions"):
        score_predictions(qs, preds)
    with pytest.raises(UserError, match="duplicate question ids"):
        score_predictions(qs + qs[:1], reference_predictions(qs))
    with pytest.raises(UserError, match="no questions"):
        score_predictions([], {})


# ----- prediction files ------------------------------------------------------------------------------------------
def test_predictions_round_trip(tmp_path):
    preds = {"a.0": "02:07:00", "a.1": "It is \"sunny\" ☀", "b.0": ""}
    path = tmp_path / "p.jsonl"
    write_predictions(path, preds)
    assert read_predictions(path) == preds
    path.write_text(path.read_text() + "\n\n")  # blank lines are skipped
    assert read_predictions(path) == preds


@pytest.mark.parametrize("lines, match", [
    (['{"id": "a", "prediction": "x"}', '{"id": "b", "prediction": "y"}', '{"id": "c", "predict'],
     r"line 3 is not valid JSON"),
    (['{"id": "a"}'], r"line 1 has no 'prediction' field"),
    (['{"prediction": "x"}'], r"line 1 has no 'id' field"),
    (['{"id": "a", "prediction": 5}'], r"line 1: 'prediction' must be a string"),
    (['["a", "x"]'], r"line 1 is a JSON list, not an object"),
    (['{"id": "a", "prediction": "x"}', '', '{"id": "a", "prediction": "y"}'],
     r"line 3 repeats id 'a' first given on line 1"),
])
def test_bad_prediction_files(tmp_path, lines, match):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=match) as e:
        read_predictions(path)
    assert "\n" not in str(e.value)


def test_missing_prediction_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_predictions(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="is a folder, not a file"):
        read_predictions(tmp_path)  # a folder is not a file


# ----- uvlm score (storage faked) --------------------------------------------------------------------------------
@pytest.fixture
def fake_storage(monkeypatch):
    """Stand in for ``uvlm.data.storage.read_samples`` with an on-the-fly test split; records the calls."""
    sw = SmartWatch(SplitConfig.test(n_vqa=60))
    calls = []

    def read_samples(path, task, with_images=True):
        calls.append((str(path), task, with_images))
        return sw.stream(task, with_image=with_images)

    module = types.ModuleType("uvlm.data.storage")
    module.read_samples = read_samples
    module.read_manifest = lambda path: {}
    module.require_dataset = lambda path, dataset, what: {}  # a manifest naming no dataset: SmartWatch
    monkeypatch.setitem(sys.modules, "uvlm.data.storage", module)
    return sw, calls


def test_cli_scores_predictions(tmp_path, fake_storage, capsys):
    sw, calls = fake_storage
    qs = questions_from_samples(sw.stream("vqa", with_image=False))
    preds = reference_predictions(qs)
    preds[qs[0].id] = "no idea"
    write_predictions(tmp_path / "p.jsonl", preds)
    split = tmp_path / "test"
    split.mkdir()
    assert main(["score", "--test", str(split), "--predictions", str(tmp_path / "p.jsonl"), "--json"]) == 0
    assert calls == [(str(split), "vqa", False)]
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["total"] == 60
    assert out["scores"]["total"] == pytest.approx(100 * 59 / 60)
    assert set(out["scores"]) >= {"time", "weather", "position", "battery", "total", "weather_position",
                                  "battery_position"}
    assert main(["score", "--test", str(split), "--predictions", str(tmp_path / "p.jsonl")]) == 0
    table = capsys.readouterr().out
    assert "| total" in table and f"{100 * 59 / 60:.2f}" in table


def test_cli_bad_input_is_one_line(tmp_path, fake_storage, capsys):
    split = tmp_path / "test"
    split.mkdir()
    (tmp_path / "p.jsonl").write_text('{"id": "x", "prediction": "sunny"}\n{oops\n')
    assert main(["score", "--test", str(split), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uvlm: error:") and "line 2" in err and err.count("\n") == 1
    (tmp_path / "p.jsonl").write_text('{"id": "x", "prediction": "sunny"}\n')
    assert main(["score", "--test", str(split), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "lack answers for 60" in capsys.readouterr().err
    assert main(["score", "--test", str(tmp_path / "nope"), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "test split folder" in capsys.readouterr().err
