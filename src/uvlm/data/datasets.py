"""The dataset protocol and the registry of datasets.

Every layer above ``uvlm.data`` (training, evaluation, the command line) reaches a dataset's samples, images and
score through :class:`Dataset` only, so a dataset is one module with a class that satisfies the protocol plus one
line of :data:`DATASETS`.

A dataset is opened from its split config (:func:`open_dataset`); the config's class says which dataset it is. A
dataset declares

- its identity: :attr:`Dataset.name` (the registry name, ``data.dataset`` of a run config) and
  :meth:`Dataset.image_key`, what its images depend on (the key of the frozen-encoder feature cache);
- its attributes (:attr:`Dataset.attribute_names`, what VQA questions ask about; :meth:`Dataset.attributes`, the
  ground truth of one image) and the columns its score reports
  (:attr:`Dataset.metric_columns`, the last one ``total``);
- its samples by index (:meth:`Dataset.sample`, :meth:`Dataset.stream`, :meth:`Dataset.count`) and its images at any
  resolution (:meth:`Dataset.image`);
- its score (:meth:`Dataset.questions`, :meth:`Dataset.score`, :meth:`Dataset.reference_answers`);
- its split presets, its config's JSON form and its words (the class methods :meth:`Dataset.split`,
  :meth:`Dataset.config_from_dict` and :meth:`Dataset.vocabulary_words`).

    >>> from uvlm.data.datasets import dataset_class, open_dataset
    >>> ds = open_dataset(dataset_class("smartwatch").split("test", n_vqa=4))
    >>> qs = ds.questions(ds.stream("vqa", with_image=False))
    >>> ds.score(qs, ds.reference_answers(qs)).total
    100.0
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from PIL import Image

from uvlm.errors import UserError, require

#: The registered datasets, ``name -> "module:Class"``, imported on first use. Adding a dataset is its module and one
#: line here. The first entry is the default of a run config's ``data.dataset``.
DATASETS: dict[str, str] = {
    "smartwatch": "uvlm.data.smartwatch:SmartWatch",
    "celeba": "uvlm.data.celeba:CelebA",
}

DEFAULT_DATASET = next(iter(DATASETS))


class SampleLike(Protocol):
    """What every dataset's sample offers (SmartWatch's :class:`~uvlm.data.smartwatch.Sample` is one)."""

    task: str
    id: str
    index: int
    image_index: int
    attributes: Any
    turns: list
    mentioned: tuple[str, ...]
    image: Image.Image | None

    @property
    def instruction(self) -> str: ...

    def question_id(self, turn: int) -> str: ...

    def conversations(self) -> list[dict[str, str]]: ...


class ScoreLike(Protocol):
    """What a dataset's score report offers: ``to_dict()`` gives ``{"unit", "scores", "counts", "unparsed"}``, each
    keyed by the metric columns (and possibly more)."""

    @property
    def total(self) -> float | None: ...

    def to_dict(self) -> dict: ...


@runtime_checkable
class Dataset(Protocol):
    """One split of a dataset: samples by index, images, attributes, the score."""

    name: ClassVar[str]
    """The registry name (a key of :data:`DATASETS`)."""
    config_class: ClassVar[type]
    """The split config's class (a frozen dataclass with ``name``, ``seed``, ``resolution``, per-task counts,
    ``n_images``, ``image_index``, ``with_``, ``to_dict``)."""
    config: Any

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The attributes VQA questions ask about (and a bias may under-represent)."""
        ...

    def attributes(self, image_index: int) -> Any:
        """The ground truth of image ``image_index`` (the dataset's own type)."""
        ...

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """The columns of the score, in the order reports show them; the last is ``total``."""
        ...

    @property
    def tasks(self) -> tuple[str, ...]: ...

    def count(self, task: str) -> int: ...

    def sample(self, task: str, i: int, with_image: bool = True) -> SampleLike: ...

    def stream(self, task: str, start: int = 0, stop: int | None = None,
               with_image: bool = True) -> Iterator[SampleLike]: ...

    def image(self, image_index: int, resolution: int | None = None) -> Image.Image:
        """Image ``image_index`` of the split at ``resolution`` (default: the split's)."""
        ...

    def image_key(self) -> dict[str, Any]:
        """JSON-able: everything image ``i`` depends on besides ``i`` (not the counts or the bias), so that splits
        showing the same images share one feature cache."""
        ...

    def questions(self, samples: Iterable[SampleLike]) -> list: ...

    def score(self, questions: Sequence, predictions: Mapping[str, str]) -> ScoreLike: ...

    def reference_answers(self, questions: Iterable) -> dict[str, str]:
        """The true answers: a perfect model's predictions."""
        ...

    @classmethod
    def split(cls, kind: str, **kw: Any) -> Any:
        """A split config from a preset, ``train`` or ``test``, with fields overridden by ``kw``."""
        ...

    @classmethod
    def config_from_dict(cls, d: dict[str, Any]) -> Any: ...

    @classmethod
    def parse_bias(cls, text: str) -> Any:
        """The split config's bias from ``attribute[:vqa_share[:caption_share]]`` (the ``--bias`` flag)."""
        ...

    @classmethod
    def vocabulary_words(cls) -> tuple[str, ...]:
        """Texts whose words a word-level tokenizer must know beyond SmartWatch's (its base vocabulary)."""
        ...


def dataset_names() -> tuple[str, ...]:
    return tuple(DATASETS)


def dataset_class(name: str) -> type:
    """The class registered as ``name``."""
    require(isinstance(name, str) and name in DATASETS,
            f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    module, _, attr = DATASETS[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"dataset {name!r} cannot be loaded ({e}): install uvlm completely") from None
    return cls


def dataset_of_config(config: Any) -> str:
    """The registry name of the dataset a split config belongs to."""
    for name in DATASETS:
        if type(config) is dataset_class(name).config_class:
            return name
    raise UserError(f"{type(config).__name__} is not the split config of a registered dataset: use one of "
                    f"{', '.join(DATASETS)}")


def open_dataset(config: Any) -> Dataset:
    """The dataset split that ``config`` describes."""
    return dataset_class(dataset_of_config(config))(config)


__all__ = ["DATASETS", "DEFAULT_DATASET", "Dataset", "SampleLike", "ScoreLike", "dataset_class", "dataset_names",
           "dataset_of_config", "open_dataset"]
