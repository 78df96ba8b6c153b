"""Did the model draw what it was asked? Pixel faithfulness, judged by the SmartWatch reader.

The reader (:class:`uvlm.vision.reader.SmartWatchReader`) reads every attribute back from an image; each attribute
the generation instruction states is then scored against the instruction's ground truth with the VQA score rules of
:mod:`uvlm.data.scoring` (time by circular error, weather and corners exact, battery by absolute error), as if the
reading were the answer to a question about that attribute. Attributes the instruction leaves open are free and not
scored. The result has the shape of a VQA report (:meth:`uvlm.data.scoring.ScoreReport.to_dict`): per attribute and
per reported group, a percentage pooled over every stated attribute of every image, so the two can share a table.

The reader's own accuracy is the ceiling: the same function on the ground-truth images of the same samples says how
much of a low score is the reader's (see :func:`uvlm.eval.generation_metrics.evaluate_generation`).

    >>> faithfulness(reader, generated, samples)["scores"]["time"]      # 0..100
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from uvlm.data.attributes import TEXT_ATTRIBUTES, WatchAttributes
from uvlm.data.scoring import (GROUPS, REPORTED, ScoreReport, find_values, parse_answer, percent_values, score_answer,
                               score_value)
from uvlm.errors import UserError, require

#: The reading fields each stated attribute needs.
_FIELDS: dict[str, tuple[str, ...]] = {
    "time": ("hour", "minute", "second"),
    "weather": ("weather",),
    "battery": ("battery",),
    "weather_position": ("weather_position",),
    "battery_position": ("battery_position",),
}

#: The groups a faithfulness result reports, in order (the VQA report's).
REPORTED_GROUPS: tuple[str, ...] = (*REPORTED, "weather_position", "battery_position")


def _reading_text(reading: Mapping[str, Any], attribute: str) -> str:
    """The reading of one attribute written as the reference answer would be (``02:07:00``, ``51%``, ``sunny``)."""
    missing = [f for f in _FIELDS[attribute] if f not in reading]
    if missing:
        raise UserError(f"the reading {dict(reading)!r} lacks {', '.join(missing)}: a reader must return the "
                        f"WatchAttributes fields (see SmartWatchReader.read)")
    if attribute == "time":
        try:
            h, m, s = (int(reading[k]) for k in ("hour", "minute", "second"))
        except (TypeError, ValueError):
            raise UserError(f"the reading's time fields must be integers, got {dict(reading)!r}") from None
        return f"{h:02d}:{m:02d}:{s:02d}"
    if attribute == "battery":
        return f"{reading['battery']}%"
    return str(reading[attribute])


def score_reading(reading: Mapping[str, Any], attributes: WatchAttributes,
                  mentioned: Sequence[str]) -> dict[str, float]:
    """Score a reader's reading of one image against the attributes its instruction states.

    Args:
        reading: one dict of :meth:`SmartWatchReader.read` (``hour`` 0..11 or 0..12, ``minute``, ``second``,
            ``weather``, ``weather_position``, ``battery_position``, ``battery``; other keys are ignored).
        attributes: the instruction's ground truth (the sample's :class:`WatchAttributes`).
        mentioned: the attributes the instruction states (``Sample.mentioned``), from
            :data:`~uvlm.data.attributes.TEXT_ATTRIBUTES`.

    Returns:
        A score in [0, 1] per stated attribute, by :func:`uvlm.data.scoring.score_answer` on the reading written as
        an answer, plus ``position`` (mean of the stated position attributes) and ``total`` (mean of all stated ones)
        when they have any. Unstated attributes are absent; no stated attribute gives ``{}``.
    """
    unknown = [a for a in mentioned if a not in TEXT_ATTRIBUTES]
    require(not unknown, f"unknown stated attribute(s) {unknown}: use {', '.join(TEXT_ATTRIBUTES)}")
    stated = [a for a in TEXT_ATTRIBUTES if a in set(mentioned)]
    scores = {a: score_answer(a, attributes, _reading_text(reading, a)) for a in stated}
    for group in ("position", "total"):
        members = [scores[a] for a in GROUPS[group] if a in scores]
        if members:
            scores[group] = math.fsum(members) / len(members)
    return scores


_CLAUSE_RE = re.compile(r",|;|\band\b", re.IGNORECASE)


def stated_in_instruction(text: str) -> dict[str, Any]:
    """The attribute values a free-text generation instruction states, read with the VQA answer rules.

    The time, the weather and the battery (a number with a percent marker) are read from the whole text, each only
    when it names exactly one value; a corner belongs to the clause (between commas or "and") it stands in, as the
    weather's when the clause speaks of the weather, as the battery's when it speaks of the battery or the charge.
    Returns ``{attribute: value}`` with the value types of :func:`uvlm.data.scoring.find_values`.

        >>> stated_in_instruction("Draw a smart watch showing the time 02:07:00, with 51% battery, and the weather icon in the top-left corner.")
        {'time': ClockTime(hour=2, minute=7, second=0), 'battery': 51.0, 'weather_position': 'top-left'}
    """
    stated: dict[str, Any] = {}
    for attribute in ("time", "weather"):
        values = find_values(attribute, text)
        if len(values) == 1:
            stated[attribute] = next(iter(values))
    batteries = percent_values(text)
    if len(batteries) == 1:
        stated["battery"] = next(iter(batteries))
    for clause in _CLAUSE_RE.split(text):
        corners = find_values("weather_position", clause)
        if len(corners) != 1:
            continue
        low = clause.lower()
        owner = ("weather_position" if "weather" in low or find_values("weather", clause) else
                 "battery_position" if "battery" in low or "charge" in low else None)
        if owner is not None and owner not in stated:
            stated[owner] = next(iter(corners))
    return {a: stated[a] for a in TEXT_ATTRIBUTES if a in stated}


def _value_text(attribute: str, value: Any) -> str:
    if attribute == "time":
        return f"{value[0]:02d}:{value[1]:02d}:{value[2]:02d}"
    if attribute == "battery":
        return f"{value:g}%"
    return str(value)


def read_back(reading: Mapping[str, Any], stated: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Compare a reader's ``reading`` of one drawing with what its instruction ``stated``
    (:func:`stated_in_instruction`): ``{attribute: {"asked", "read", "score"}}``, the score in [0, 1] by the VQA
    rules (time by circular error, battery by absolute error, weather and corners exact)."""
    out: dict[str, dict[str, Any]] = {}
    for attribute, asked in stated.items():
        read = parse_answer(attribute, _reading_text(reading, attribute))
        out[attribute] = {"asked": _value_text(attribute, asked), "read": _value_text(attribute, read),
                          "score": score_value(attribute, asked, read)}
    return out


def read_images(reader, images: torch.Tensor | Sequence[Image.Image], batch_size: int = 250) -> list[dict[str, Any]]:
    """The reader's reading of each image (float ``(N, 3, H, W)`` in [0, 1] or PIL images, resized to the reader's
    side), ``batch_size`` images per call."""
    from uvlm.vision.base import to_float_batch

    readings: list[dict[str, Any]] = []
    for b in range(0, len(images), batch_size):
        chunk = images[b:b + batch_size]
        x = to_float_batch(chunk if isinstance(chunk, torch.Tensor) else list(chunk), reader.resolution, resize=True)
        readings += reader.read(x)
    return readings


def faithfulness(reader, images: torch.Tensor | Sequence[Image.Image], samples: Sequence,
                 batch_size: int = 250) -> dict[str, Any]:
    """How faithfully ``images`` show what the generation ``samples`` ask for, as read by ``reader``.

    Args:
        reader: a :class:`~uvlm.vision.reader.SmartWatchReader` (or any object with ``resolution`` and
            ``read(float (B, 3, R, R)) -> list[dict]``).
        images: image ``i`` answers sample ``i``; float ``(N, 3, H, W)`` in [0, 1] or RGB PIL images. Images of
            another side than ``reader.resolution`` are resized to it (bicubic).
        samples: the generation samples (each with ``attributes`` and ``mentioned``).
        batch_size: images per ``read`` call.

    Returns:
        ``{"unit": "percent", "scores": {group: % or None}, "counts": {group: scored attributes}, "n": N}`` over the
        groups ``time, weather, position, battery, total, weather_position, battery_position``. Each stated
        attribute of each image counts once (as each VQA question does), so ``position`` and ``total`` pool their
        attributes; a group no instruction states scores ``None``.
    """
    n = len(samples)
    require(n > 0, "there are no samples to score: pass at least one generation sample and its image")
    require(len(images) == n, f"got {len(images)} images for {n} samples: pass one image per sample, in order")
    require(isinstance(batch_size, int) and batch_size > 0,
            f"batch_size must be a positive integer, got {batch_size!r}")
    readings = read_images(reader, images, batch_size)
    require(len(readings) == n, f"the reader returned {len(readings)} readings for {n} images")
    per_attr: dict[str, list[float]] = {a: [] for a in TEXT_ATTRIBUTES}
    for reading, sample in zip(readings, samples):
        for a, s in score_reading(reading, sample.attributes, sample.mentioned).items():
            if a in per_attr:  # the groups are derived below
                per_attr[a].append(s)
    report = ScoreReport(sums={a: math.fsum(v) for a, v in per_attr.items()},
                         counts={a: len(v) for a, v in per_attr.items()}, unparsed={a: 0 for a in TEXT_ATTRIBUTES})
    return {"unit": "percent", "scores": {g: report.score(g) for g in REPORTED_GROUPS},
            "counts": {g: report.count(g) for g in REPORTED_GROUPS}, "n": n}


__all__ = ["REPORTED_GROUPS", "faithfulness", "score_reading", "stated_in_instruction", "read_back", "read_images"]
