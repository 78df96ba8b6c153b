"""SmartWatch texts: VQA questions, captions and generation instructions.

Every template set has about ten phrasings. Answers are bare values (``02:07:00``, ``sunny``, ``51%``,
``top-left``), as in the paper's data. The functions here are pure: they take a random generator and the
attributes, so a sample's text depends only on its own random stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from uvlm.data.attributes import TEXT_ATTRIBUTES, WatchAttributes

#: The placeholder that marks where the image goes in the first human turn (LLaVA convention).
IMAGE_TOKEN = "<image>"

QUESTIONS: dict[str, tuple[str, ...]] = {
    "time": (
        "What time does the watch show?",
        "What time is displayed on the smart watch?",
        "Read the time on the watch face.",
        "What is the time shown by the clock hands?",
        "Tell me the time on this watch.",
        "Which time do the hands of the watch indicate?",
        "What time is it according to the watch?",
        "Can you read the time from this watch face?",
        "What time is shown on the dial?",
        "What does the clock on the watch say?",
    ),
    "weather": (
        "What is the weather shown on the watch?",
        "Which weather does the icon display?",
        "What weather is displayed?",
        "What kind of weather does the watch show?",
        "Tell me the weather on the watch face.",
        "How is the weather according to the watch?",
        "What does the weather icon indicate?",
        "Which weather condition is shown?",
        "What is the weather forecast on the screen?",
        "Describe the weather shown by the icon.",
    ),
    "battery": (
        "What is the battery level?",
        "How much battery is left?",
        "What percentage of battery does the watch show?",
        "How charged is the watch?",
        "Read the battery percentage.",
        "What is the remaining battery?",
        "How full is the battery?",
        "Which battery level is displayed?",
        "What charge level does the battery indicator show?",
        "Tell me the battery percentage on the watch.",
    ),
    "weather_position": (
        "Where is the weather icon?",
        "In which corner is the weather displayed?",
        "Which corner shows the weather?",
        "Where on the screen is the weather shown?",
        "In which corner can you find the weather icon?",
        "Where is the weather information located?",
        "Which corner of the image holds the weather icon?",
        "Where does the weather appear?",
        "Locate the weather icon: which corner?",
        "In what position is the weather indicator?",
    ),
    "battery_position": (
        "Where is the battery?",
        "In which corner is the battery displayed?",
        "Which corner shows the battery level?",
        "Where on the screen is the battery indicator?",
        "In which corner can you find the battery?",
        "Where is the battery information located?",
        "Which corner of the image holds the battery icon?",
        "Where does the battery appear?",
        "Locate the battery indicator: which corner?",
        "In what position is the battery shown?",
    ),
}

CAPTION_QUESTIONS: tuple[str, ...] = (
    "Describe the image.",
    "Describe this smart watch.",
    "What does the watch display?",
    "Give a short description of the picture.",
    "Write a caption for this image.",
    "Summarize what the smart watch shows.",
    "What can you see on this watch face?",
    "Describe everything shown on the screen.",
    "Provide a one-sentence description of the image.",
    "Caption this picture of a smart watch.",
)

#: Caption openings; they always state the time.
CAPTION_TIME: tuple[str, ...] = (
    "A smart watch showing the time {v}",
    "The smart watch displays the time {v}",
    "A watch whose hands point to {v}",
    "The watch reads {v}",
    "A smart watch with the time {v}",
    "The clock on the watch shows {v}",
    "A smartwatch face telling the time {v}",
    "This watch shows {v}",
    "The time on the watch is {v}",
    "A watch displaying {v}",
)

#: Generation openings ("Can you draw a smart watch, showing the time 02:07:00, ...").
INSTRUCTION_TIME: tuple[str, ...] = (
    "Can you draw a smart watch, showing the time {v}",
    "Draw a smart watch showing the time {v}",
    "Generate an image of a smart watch displaying {v}",
    "Please create a picture of a smartwatch with the time {v}",
    "Render a smart watch whose hands show {v}",
    "Make an image of a watch reading {v}",
    "Produce a smart watch picture with the time {v}",
    "Could you generate a smart watch showing {v}",
    "Create a smartwatch face that tells the time {v}",
    "Paint a smart watch with its clock at {v}",
)

#: Openings for the rare text that does not state the time (a bias on ``time`` with ``caption_share`` < 1).
CAPTION_NO_TIME: tuple[str, ...] = ("A smart watch", "A smartwatch face", "The smart watch", "A watch", "This watch")
INSTRUCTION_NO_TIME: tuple[str, ...] = (
    "Can you draw a smart watch", "Draw a smart watch", "Generate an image of a smart watch",
    "Please create a picture of a smartwatch", "Render a smart watch",
)

#: Caption and instruction fragments for the other attributes.
FRAGMENTS: dict[str, tuple[str, ...]] = {
    "weather": (
        "with {v} weather displayed",
        "showing {v} weather",
        "with a {v} weather icon",
        "where the weather is {v}",
        "with the weather shown as {v}",
        "displaying {v} weather",
        "indicating {v} weather",
        "with the forecast {v}",
        "with {v} weather on the screen",
        "showing that it is {v}",
    ),
    "weather_position": (
        "the weather icon in the {v} corner",
        "the weather shown at the {v}",
        "the weather placed {v}",
        "weather information at the {v}",
        "the weather indicator in the {v} corner",
        "the weather icon at the {v}",
        "the weather displayed in the {v} corner",
        "the weather sitting {v}",
        "the weather located at the {v}",
        "the weather drawn in the {v} corner",
    ),
    "battery": (
        "with {v} battery",
        "with a battery level of {v}",
        "with {v} battery remaining",
        "showing a battery at {v}",
        "with the battery charged to {v}",
        "with {v} charge left",
        "indicating {v} battery",
        "with its battery at {v}",
        "displaying {v} battery",
        "with a {v} battery level",
    ),
    "battery_position": (
        "the battery in the {v} corner",
        "the battery shown at the {v}",
        "the battery placed {v}",
        "battery information at the {v}",
        "the battery indicator in the {v} corner",
        "the battery icon at the {v}",
        "the battery displayed in the {v} corner",
        "the battery sitting {v}",
        "the battery located at the {v}",
        "the battery drawn in the {v} corner",
    ),
}


@dataclass(frozen=True)
class Turn:
    """One question and its answer; ``attribute`` says what it asks about (or ``caption`` / ``generation``)."""

    question: str
    answer: str
    attribute: str


def conversations(task: str, turns: Sequence[Turn]) -> list[dict[str, str]]:
    """LLaVA-style turns of a sample of any dataset. Understanding: ``<image>`` opens the first human turn.
    Generation: the human gives the instruction (the first turn's question) and the gpt turn is ``<image>`` (the
    image is the answer)."""
    if task == "generation":
        return [{"from": "human", "value": turns[0].question}, {"from": "gpt", "value": IMAGE_TOKEN}]
    conv = []
    for k, t in enumerate(turns):
        q = f"{IMAGE_TOKEN}\n{t.question}" if k == 0 else t.question
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": t.answer}]
    return conv


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def vqa_turns(rng: np.random.Generator, attrs: WatchAttributes, question_probs: dict[str, float],
              max_extra_turns: int, extra_turn_prob: float) -> list[Turn]:
    """One question, then each of ``max_extra_turns`` more with probability ``extra_turn_prob``."""
    n = 1 + int((rng.random(max_extra_turns) < extra_turn_prob).sum()) if max_extra_turns else 1
    probs = np.array([question_probs[a] for a in TEXT_ATTRIBUTES], dtype=np.float64)
    probs = probs / probs.sum()
    asked = rng.choice(len(TEXT_ATTRIBUTES), size=n, p=probs)
    turns = []
    for a in asked:
        attr = TEXT_ATTRIBUTES[int(a)]
        turns.append(Turn(_pick(rng, QUESTIONS[attr]), attrs.value_text(attr), attr))
    return turns


def _mentions(rng: np.random.Generator, probs: dict[str, float]) -> tuple[str, ...]:
    draws = rng.random(len(TEXT_ATTRIBUTES))
    return tuple(a for a, u in zip(TEXT_ATTRIBUTES, draws) if u < probs[a])


def _sentence(rng: np.random.Generator, attrs: WatchAttributes, openings: tuple[str, ...],
              no_time: tuple[str, ...], mentioned: tuple[str, ...]) -> str:
    parts = []
    for attr in mentioned:
        if attr == "time":
            continue
        parts.append(_pick(rng, FRAGMENTS[attr]).format(v=attrs.value_text(attr)))
    head = _pick(rng, openings).format(v=attrs.time) if "time" in mentioned else _pick(rng, no_time)
    if not parts:
        return head + "."
    if len(parts) == 1:
        return f"{head}, {parts[0]}."
    return f"{head}, " + ", ".join(parts[:-1]) + f", and {parts[-1]}."


def caption(rng: np.random.Generator, attrs: WatchAttributes, probs: dict[str, float]) -> tuple[Turn, tuple[str, ...]]:
    """A caption sample: a describe-the-image question and one sentence. Returns the turn and what it states."""
    mentioned = _mentions(rng, probs)
    question = _pick(rng, CAPTION_QUESTIONS)
    return Turn(question, _sentence(rng, attrs, CAPTION_TIME, CAPTION_NO_TIME, mentioned), "caption"), mentioned


def instruction(rng: np.random.Generator, attrs: WatchAttributes, probs: dict[str, float]) -> tuple[str, tuple[str, ...]]:
    """A generation instruction built with the caption probabilities. Returns the text and what it states."""
    mentioned = _mentions(rng, probs)
    return _sentence(rng, attrs, INSTRUCTION_TIME, INSTRUCTION_NO_TIME, mentioned), mentioned
