"""The SmartWatch VQA score (the metric of the paper's understanding tables).

Every VQA question is scored by the attribute it asks about, against the image's ground truth:

- ``time``: errors are circular per component, ``e_h = min(|dh| mod 12, 12 - (|dh| mod 12))`` and likewise
  ``e_m``, ``e_s`` on a circle of 60; the score is ``1 - (e_h/6 + e_m/30 + e_s/30) / 3``. Each error is at most half
  its circle, so each term is at most 1 and the score lies in [0, 1]; a uniform guess scores 0.5 on average.
  Hours are taken mod 12: 0 and 12 are the same dial position, and a 24-hour reading ``14:..`` is ``2``.
- ``battery``: ``1 - |predicted - true| / 100`` with the prediction clamped to [0, 100].
- ``weather``, ``weather_position``, ``battery_position``: 1 if the answer names the true value and no other value
  of that attribute, else 0 (an answer listing every value scores 0).
- An answer with no parsable value scores 0 and still counts.

Reported (as percentages): time, weather, position (weather and battery positions pooled), battery, and total = the
sum of all question scores divided by the number of questions.

How answers are read (:func:`parse_answer`), case-insensitively and ignoring surrounding words:

- time: ``H:MM:SS`` or ``HH:MM:SS`` anywhere in the text (``"The time is 02:07:00."``). ``HH:MM`` without seconds is
  read with seconds 0. Minutes and seconds must be 00..59 (``02:75:00`` is not a time); the hour may be any one- or
  two-digit number and is taken mod 12. AM/PM markers are irrelevant (the dial has 12 hours) and ignored.
- battery: a number followed by ``%``, ``percent`` or ``per cent`` (``"about 51 %"``, ``"51 percent"``); if the text
  has none, any bare number that is not part of a time (``"51"``). Decimals are kept (``51.5%``).
- weather: ``sun``/``sunny`` = sunny, ``cloud``/``clouds``/``cloudy`` = cloudy, ``rain``/``rainy``/``raining`` =
  raining, matched as whole words (``"Sunday"`` is not sunny).
- positions: ``top``/``upper`` or ``bottom``/``lower`` followed by ``left``/``right``, joined by spaces, ``-`` or
  ``_`` or nothing (``"top-left"``, ``"Top left corner"``, ``"upper left"``, ``"lower-right-hand"``,
  ``"top-rightmost"``). ``"left"`` or
  ``"top"`` alone is no position; the reversed order (``"left top"``) is not read.

An answer must name exactly one value of the attribute asked: repeating the same value is fine (``"02:07 (02:07:00)"``,
``"51%, i.e. 51 percent"``), several *different* values make the answer unparsable, for every attribute, so that
hedging never pays. Negations are not understood (``"not sunny"`` reads as sunny).

Prediction files are JSON lines, one object per question: ``{"id": "test-vqa-00000012.0", "prediction": "02:07:00"}``;
the id is :meth:`uvlm.data.smartwatch.Sample.question_id`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from uvlm.data.attributes import CORNERS, TEXT_ATTRIBUTES, WEATHERS, WatchAttributes
from uvlm.errors import UserError, require
from uvlm.io import write_text_atomic

#: The rows of the paper's tables, in order; ``position`` pools the two position attributes.
REPORTED: tuple[str, ...] = ("time", "weather", "position", "battery", "total")

#: Which question attributes each reported group (and each single attribute) averages over.
GROUPS: dict[str, tuple[str, ...]] = {
    "time": ("time",),
    "weather": ("weather",),
    "position": ("weather_position", "battery_position"),
    "battery": ("battery",),
    "total": TEXT_ATTRIBUTES,
    "weather_position": ("weather_position",),
    "battery_position": ("battery_position",),
}

#: Words read as each weather value (whole words, case-insensitive).
WEATHER_WORDS: dict[str, tuple[str, ...]] = {
    "sunny": ("sunny", "sun"),
    "cloudy": ("cloudy", "clouds", "cloud"),
    "raining": ("raining", "rainy", "rain"),
}
assert set(WEATHER_WORDS) == set(WEATHERS)

_WEATHER_RE = re.compile(
    r"\b(" + "|".join(w for words in WEATHER_WORDS.values() for w in words) + r")\b", re.IGNORECASE)
_WEATHER_OF = {w: value for value, words in WEATHER_WORDS.items() for w in words}

_CORNER_RE = re.compile(r"\b(top|upper|bottom|lower)[\s_-]*(left|right)(?:most)?\b", re.IGNORECASE)
_VERTICAL = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
assert {f"{v}-{h}" for v in ("top", "bottom") for h in ("left", "right")} == set(CORNERS)

# H:MM[:SS] not glued to other digits or colons (so "1:02:07:00" and "3:4" are not times).
_TIME_RE = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")
# A number followed by a percent marker.
_PERCENT_RE = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)\s*(?:%|percent\b|per\s+cent\b)", re.IGNORECASE)
# A bare number (not part of a word or of a longer number).
_NUMBER_RE = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?![\w]|\.\d)")


class ClockTime(NamedTuple):
    """A time read from an answer; ``hour`` is already taken mod 12 (0..11), ``minute`` and ``second`` are 0..59."""

    hour: int
    minute: int
    second: int


# ----- parsing -------------------------------------------------------------------------------------------------------
def _check_attribute(attribute: str) -> None:
    if attribute not in TEXT_ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {', '.join(TEXT_ATTRIBUTES)}")


def _times(text: str) -> set[ClockTime]:
    found = set()
    for m in _TIME_RE.finditer(text):
        h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if mi < 60 and s < 60:
            found.add(ClockTime(h % 12, mi, s))
    return found


def _batteries(text: str) -> set[float]:
    found = percent_values(text)
    if not found:
        without_times = _TIME_RE.sub(" ", text)
        found = {float(m.group(1)) for m in _NUMBER_RE.finditer(without_times)}
    return found


def percent_values(text: str) -> set[float]:
    """The numbers ``text`` marks as percentages (``51%``, ``51 percent``); bare numbers do not count."""
    return {float(m.group(1)) for m in _PERCENT_RE.finditer(text)}


def find_values(attribute: str, text: str) -> set:
    """Every distinct value of ``attribute`` that ``text`` names, read as the module docstring describes.

    Values are :class:`ClockTime` for ``time``, ``float`` (unclamped) for ``battery``, and the canonical strings of
    :data:`~uvlm.data.attributes.WEATHERS` / :data:`~uvlm.data.attributes.CORNERS` otherwise.
    """
    _check_attribute(attribute)
    if attribute == "time":
        return _times(text)
    if attribute == "battery":
        return _batteries(text)
    if attribute == "weather":
        return {_WEATHER_OF[m.group(1).lower()] for m in _WEATHER_RE.finditer(text)}
    return {f"{_VERTICAL[m.group(1).lower()]}-{m.group(2).lower()}" for m in _CORNER_RE.finditer(text)}


def parse_answer(attribute: str, text: str) -> ClockTime | float | str | None:
    """The one value of ``attribute`` that the answer ``text`` names, or ``None`` if it names none or several
    different ones. See :func:`find_values` for the value types."""
    values = find_values(attribute, text)
    return next(iter(values)) if len(values) == 1 else None


# ----- scoring -------------------------------------------------------------------------------------------------------
def _circular_error(a: int, b: int, period: int) -> int:
    d = abs(a - b) % period
    return min(d, period - d)


def time_score(truth: ClockTime | tuple[int, int, int], prediction: ClockTime | tuple[int, int, int]) -> float:
    """``1 - (e_h/6 + e_m/30 + e_s/30) / 3`` with circular errors; hours compared mod 12. In [0, 1]."""
    e_h = _circular_error(truth[0] % 12, prediction[0] % 12, 12)
    e_m = _circular_error(truth[1], prediction[1], 60)
    e_s = _circular_error(truth[2], prediction[2], 60)
    return 1.0 - (e_h / 6 + e_m / 30 + e_s / 30) / 3


def battery_score(truth: float, prediction: float) -> float:
    """``1 - |clamp(prediction, 0, 100) - truth| / 100``. In [0, 1] for a truth in [0, 100]."""
    return 1.0 - abs(min(max(float(prediction), 0.0), 100.0) - float(truth)) / 100.0


def score_answer(attribute: str, truth: WatchAttributes, prediction: str) -> float:
    """The score in [0, 1] of one answer ``prediction`` to a question about ``attribute`` of the image ``truth``.

    An answer with no parsable value, or with several different values, scores 0.
    """
    return _score_value(attribute, truth, parse_answer(attribute, prediction))


def _score_value(attribute: str, truth: WatchAttributes, value: ClockTime | float | str | None) -> float:
    if attribute == "time":
        return score_value(attribute, (truth.hour, truth.minute, truth.second), value)
    return score_value(attribute, getattr(truth, attribute), value)


def score_value(attribute: str, truth: Any, value: ClockTime | float | str | None) -> float:
    """The score in [0, 1] of one parsed ``value`` of ``attribute`` against the true value (``(h, m, s)`` for time,
    a number for battery, the canonical string otherwise); ``None`` (nothing parsed) scores 0."""
    if value is None:
        return 0.0
    if attribute == "time":
        return time_score(truth, value)  # type: ignore[arg-type]
    if attribute == "battery":
        return battery_score(truth, value)  # type: ignore[arg-type]
    return 1.0 if value == truth else 0.0


# ----- questions and reports -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """One VQA question of a test split."""

    id: str
    """``{sample id}.{turn}``, as in prediction files (:meth:`Sample.question_id`)."""
    attribute: str
    """What it asks about: one of :data:`~uvlm.data.attributes.TEXT_ATTRIBUTES`."""
    truth: WatchAttributes
    """The ground truth of the image it is asked about."""


def questions_from_samples(samples: Iterable) -> list[Question]:
    """One :class:`Question` per turn of each VQA :class:`~uvlm.data.smartwatch.Sample`, in order."""
    questions = []
    for s in samples:
        require(s.task == "vqa", f"sample {s.id} is a {s.task} sample: only VQA samples have scored questions; "
                                 f"pass the VQA samples of the test split")
        for k, turn in enumerate(s.turns):
            questions.append(Question(s.question_id(k), turn.attribute, s.attributes))
    return questions


def reference_predictions(questions: Iterable[Question]) -> dict[str, str]:
    """The ground-truth answers (``02:07:00``, ``51%``, ``sunny``, ``top-left``): a perfect model, scoring 100."""
    return {q.id: q.truth.value_text(q.attribute) for q in questions}


def _name_some(ids: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(repr(i) for i in ids[:k])
    return f"{len(ids)} ({shown}{', ...' if len(ids) > k else ''})"


@dataclass(frozen=True)
class ScoreReport:
    """Scores of a set of answers, per attribute and per reported group.

    ``sums``, ``counts`` and ``unparsed`` are keyed by the five question attributes; the groups of :data:`GROUPS`
    (including ``position`` and ``total``) are derived from them.
    """

    sums: dict[str, float]
    """Per attribute: the sum of its questions' scores (each in [0, 1])."""
    counts: dict[str, int]
    """Per attribute: how many questions ask about it."""
    unparsed: dict[str, int]
    """Per attribute: how many answers named no value (or several different values) and scored 0."""
    question_scores: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    """Each question's score in [0, 1], by question id (not part of :meth:`to_dict`)."""

    def count(self, group: str) -> int:
        """Number of questions in a group of :data:`GROUPS`."""
        return sum(self.counts.get(a, 0) for a in GROUPS[group])

    def score(self, group: str) -> float | None:
        """The group's mean score as a percentage in [0, 100]; ``None`` if it has no questions."""
        n = self.count(group)
        if n == 0:
            return None
        return 100.0 * math.fsum(self.sums.get(a, 0.0) for a in GROUPS[group]) / n

    @property
    def total(self) -> float | None:
        """All question scores summed, divided by the number of questions, as a percentage."""
        return self.score("total")

    def to_dict(self) -> dict:
        """``{"unit": "percent", "scores": {group: % or None}, "counts": {group: n}, "unparsed": {group: n}}`` over
        the reported groups followed by ``weather_position`` and ``battery_position``."""
        groups = (*REPORTED, "weather_position", "battery_position")
        return {
            "unit": "percent",
            "scores": {g: self.score(g) for g in groups},
            "counts": {g: self.count(g) for g in groups},
            "unparsed": {g: sum(self.unparsed.get(a, 0) for a in GROUPS[g]) for g in groups},
        }

    def format_table(self) -> str:
        """A Markdown table of the reported groups: score (%), number of questions, unparsable answers."""
        d = self.to_dict()
        header = ("metric", "score (%)", "questions", "unparsed")
        rows = [(g, "-" if d["scores"][g] is None else f"{d['scores'][g]:.2f}", str(d["counts"][g]),
                 str(d["unparsed"][g])) for g in REPORTED]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
            return "| " + " | ".join([first, *rest]) + " |"

        rule = "| " + " | ".join(["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]) + " |"
        return "\n".join([line(header), rule, *(line(r) for r in rows)])


def score_predictions(questions: Sequence[Question], predictions: Mapping[str, str]) -> ScoreReport:
    """Score one answer per question. Every question needs an answer and every answer a question
    (:class:`UserError` otherwise, naming the first few ids and the count)."""
    require(len(questions) > 0, "there are no questions to score: pass a test split with VQA samples")
    ids = [q.id for q in questions]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    require(not dup, f"duplicate question ids {_name_some(dup)}: each VQA question must have its own id")
    missing = [i for i in ids if i not in predictions]
    require(not missing, f"the predictions lack answers for {_name_some(missing)} of {len(ids)} questions: "
                         f"answer every VQA question of the test split")
    unknown = sorted(set(predictions) - set(ids))
    require(not unknown, f"{_name_some(unknown)} prediction ids are not questions of the test split: "
                         f"check that the predictions were made on this test split")
    per_attr: dict[str, list[float]] = {a: [] for a in TEXT_ATTRIBUTES}
    unparsed = {a: 0 for a in TEXT_ATTRIBUTES}
    scores: dict[str, float] = {}
    for q in questions:
        _check_attribute(q.attribute)
        value = parse_answer(q.attribute, predictions[q.id])
        s = _score_value(q.attribute, q.truth, value)
        if value is None:
            unparsed[q.attribute] += 1
        per_attr[q.attribute].append(s)
        scores[q.id] = s
    return ScoreReport(sums={a: math.fsum(v) for a, v in per_attr.items()},
                       counts={a: len(v) for a, v in per_attr.items()}, unparsed=unparsed, question_scores=scores)


# ----- prediction files ----------------------------------------------------------------------------------------------
_LINE_FORMAT = 'write one JSON object per line, like {"id": "test-vqa-00000000.0", "prediction": "02:07:00"}'


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Read a JSON-lines predictions file into ``{question id: answer text}``. Blank lines are skipped.

    A missing file, a line that is not a JSON object with string fields ``id`` and ``prediction``, or an id given
    twice raise :class:`UserError` naming the line and the fix.
    """
    from uvlm.io import found

    path = Path(path)
    require(path.exists(), f"predictions file {str(path)!r} not found: pass the JSON-lines file of answers "
                           f"({_LINE_FORMAT})")
    require(path.is_file(), f"predictions file {str(path)!r} is {found(path)}, not a file: pass the JSON-lines file "
                            f"of answers ({_LINE_FORMAT})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"predictions file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}): "
                        f"write it as UTF-8 JSON lines") from None
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}: line {n}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{where} is not valid JSON ({e.msg} at column {e.colno}): {_LINE_FORMAT}") from None
        except RecursionError:
            raise UserError(f"{where} is nested too deeply to be an answer: {_LINE_FORMAT}") from None
        require(isinstance(obj, dict), f"{where} is a JSON {type(obj).__name__}, not an object: {_LINE_FORMAT}")
        for key in ("id", "prediction"):
            require(key in obj, f"{where} has no {key!r} field: {_LINE_FORMAT}")
            require(isinstance(obj[key], str),
                    f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}: {_LINE_FORMAT}")
        qid = obj["id"]
        require(qid not in first_line, f"{where} repeats id {qid!r} first given on line {first_line.get(qid)}: "
                                       f"keep one answer per question")
        first_line[qid] = n
        out[qid] = obj["prediction"]
    return out


def write_predictions(path: str | os.PathLike, predictions: Mapping[str, str]) -> None:
    """Write ``{question id: answer text}`` as the JSON-lines file :func:`read_predictions` reads (atomically)."""
    lines = (json.dumps({"id": qid, "prediction": text}, ensure_ascii=False) for qid, text in predictions.items())
    write_text_atomic(path, "".join(line + "\n" for line in lines))
