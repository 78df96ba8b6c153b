"""The SmartWatch generator: index-addressable, deterministic, streamable.

Sample ``i`` of task ``t`` in a split depends only on ``(config, i)``: its image's attributes come from the random
stream ``(seed, split, "attributes", image_index)`` and its text from ``(seed, split, t, i)``. Nothing depends on worker
count, order or batch size, so a materialized split and an on-the-fly stream give the same bytes.

    >>> from uvlm.data import SmartWatch, SplitConfig
    >>> sw = SmartWatch(SplitConfig.train(n_vqa=10, n_caption=10, n_generation=10))
    >>> s = sw.sample("vqa", 3)
    >>> s.turns[0].question, s.turns[0].answer, s.image.size
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

from PIL import Image

from uvlm.data import scoring, texts
from uvlm.data.attributes import TEXT_ATTRIBUTES, WatchAttributes, rng_for, sample_attributes
from uvlm.data.config import TASKS, Bias, SplitConfig
from uvlm.data.render import Renderer
from uvlm.errors import require


@dataclass
class Sample:
    """One SmartWatch sample of one task."""

    task: str
    """``vqa``, ``caption`` or ``generation``."""
    id: str
    """Globally unique within a split: ``{split}-{task}-{index:08d}``."""
    index: int
    """Position within its task."""
    image_index: int
    """Which image of the split it shows (VQA, caption and generation sample i share image i in training data)."""
    attributes: WatchAttributes
    turns: list[texts.Turn]
    """VQA: 1 to 4 question/answer turns. Caption: one turn. Generation: one turn whose question is the instruction and
    whose answer is empty (the image is the target)."""
    mentioned: tuple[str, ...] = ()
    """Caption and generation: the attributes the text states."""
    image: Image.Image | None = field(default=None, repr=False)

    @property
    def instruction(self) -> str:
        require(self.task == "generation", f"sample {self.id} is a {self.task} sample, not a generation sample")
        return self.turns[0].question

    def question_id(self, turn: int) -> str:
        """The id of one VQA question, as used in prediction files: ``{sample id}.{turn}``."""
        return f"{self.id}.{turn}"

    def conversations(self) -> list[dict[str, str]]:
        """LLaVA-style turns (:func:`uvlm.data.texts.conversations`)."""
        return texts.conversations(self.task, self.turns)


class SmartWatch:
    """A SmartWatch split: random access (``sample``) and streaming (``stream``); a
    :class:`~uvlm.data.datasets.Dataset`."""

    name: ClassVar[str] = "smartwatch"
    config_class: ClassVar[type] = SplitConfig

    def __init__(self, config: SplitConfig):
        require(isinstance(config, SplitConfig), f"a SmartWatch split needs a SplitConfig, got {type(config).__name__}")
        self.config = config
        self.renderer = Renderer(config.resolution)
        self._qprobs = config.question_probs()
        self._cprobs = config.caption_probs()
        self._iprobs = config.instruction_probs()

    def __repr__(self) -> str:
        c = self.config
        return (f"SmartWatch(name={c.name!r}, seed={c.seed}, resolution={c.resolution}, vqa={c.n_vqa}, "
                f"caption={c.n_caption}, generation={c.n_generation}, bias={c.bias})")

    def count(self, task: str) -> int:
        return self.config.count(task)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks with at least one sample."""
        return tuple(t for t in TASKS if self.count(t) > 0)

    # ----- the dataset protocol ------------------------------------------------------------------------------------
    @property
    def attribute_names(self) -> tuple[str, ...]:
        """What VQA questions ask about: time, weather, battery, weather_position, battery_position."""
        return TEXT_ATTRIBUTES

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """The paper's rows: time, weather, position (both positions pooled), battery, total."""
        return scoring.REPORTED

    def image_key(self) -> dict[str, Any]:
        """An image depends only on the seed, the split name and its index (and the resolution)."""
        c = self.config
        return {"seed": c.seed, "split": c.name, "resolution": c.resolution}

    def questions(self, samples: Iterable[Sample]) -> list[scoring.Question]:
        return scoring.questions_from_samples(samples)

    def score(self, questions: Sequence[scoring.Question], predictions: Mapping[str, str]) -> scoring.ScoreReport:
        return scoring.score_predictions(questions, predictions)

    def reference_answers(self, questions: Iterable[scoring.Question]) -> dict[str, str]:
        return scoring.reference_predictions(questions)

    @classmethod
    def split(cls, kind: str, **kw: Any) -> SplitConfig:
        require(kind in ("train", "test"), f"unknown split preset {kind!r}: use train or test")
        return SplitConfig.test(**kw) if kind == "test" else SplitConfig.train(**kw)

    @classmethod
    def config_from_dict(cls, d: dict[str, Any]) -> SplitConfig:
        return SplitConfig.from_dict(d)

    @classmethod
    def parse_bias(cls, text: str) -> Bias:
        return Bias.parse(text)

    @classmethod
    def vocabulary_words(cls) -> tuple[str, ...]:
        """None: the word-level tokenizer's base vocabulary is SmartWatch's (:mod:`uvlm.data.tokenizer`)."""
        return ()

    # ----- images ----------------------------------------------------------------------------------------------------
    def attributes(self, image_index: int) -> WatchAttributes:
        """The ground truth of image ``image_index``."""
        c = self.config
        return sample_attributes(rng_for(c.seed, c.name, "attributes", image_index))

    def image(self, image_index: int, resolution: int | None = None) -> Image.Image:
        if resolution is None or resolution == self.config.resolution:
            return self.renderer.render(self.attributes(image_index))
        return Renderer(resolution).render(self.attributes(image_index))

    def sample(self, task: str, i: int, with_image: bool = True) -> Sample:
        c = self.config
        n = self.count(task)
        require(0 <= i < n, f"sample index {i} out of range for task {task!r} with {n} samples")
        img_i = c.image_index(task, i)
        attrs = self.attributes(img_i)
        rng = rng_for(c.seed, c.name, task, i)
        mentioned: tuple[str, ...] = ()
        if task == "vqa":
            turns = texts.vqa_turns(rng, attrs, self._qprobs, c.max_extra_turns, c.extra_turn_prob)
        elif task == "caption":
            turn, mentioned = texts.caption(rng, attrs, self._cprobs)
            turns = [turn]
        else:
            text, mentioned = texts.instruction(rng, attrs, self._iprobs)
            turns = [texts.Turn(text, "", "generation")]
        image = self.renderer.render(attrs) if with_image else None
        return Sample(task, f"{c.name}-{task}-{i:08d}", i, img_i, attrs, turns, mentioned, image)

    def stream(self, task: str, start: int = 0, stop: int | None = None, with_image: bool = True) -> Iterator[Sample]:
        """Yield samples ``start..stop-1`` of ``task`` one at a time; memory does not grow with the count."""
        stop = self.count(task) if stop is None else min(stop, self.count(task))
        for i in range(start, stop):
            yield self.sample(task, i, with_image=with_image)
