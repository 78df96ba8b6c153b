"""The training data pipeline: which samples, in which order, turned into model examples.

- Understanding samples are the VQA and caption samples of the training split; generation samples are its generation
  samples. ``mixed`` trains on both, ``understanding`` (the ``_u`` models) on the first, ``generation`` (the ``_g``
  models) on the second, through the same code, so the token accounting of every mode is the same.
- Order (:class:`SampleOrder`): understanding and generation samples are two streams, each permuted from the run
  seed once per epoch; a mixed run interleaves the generation stream into the understanding stream at evenly spaced
  positions. So runs of one seed are *paired*: every mode and every amount of generation data sees the same
  understanding samples in the same order. Global batches are consecutive slices; the data position is the integer
  number of samples consumed, so a resumed run continues exactly.
- Vision tensors come from the frozen-encoder feature cache (:class:`~uvlm.train.features.FeatureCache`), keyed by the
  source's identity and the images' key; texts come from the dataset (:func:`uvlm.data.datasets.open_dataset`) of the
  split: ``dataset.sample(task, i, with_image=False)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from uvlm.data.datasets import open_dataset
from uvlm.errors import UserError, require
from uvlm.train.config import RunConfig
from uvlm.train.features import FeatureCache

#: A training item: ``(task, index within the task)``.
Item = tuple[str, int]

UNDERSTANDING_TASKS = ("vqa", "caption")


def get_vision_source(kind: str, source: str = "tiny"):
    """The frozen vision source of ``kind`` (``siglip``, ``vq``, or the kind a generation target brings) named
    ``source`` (``tiny`` or a local path).

    Looked up lazily in :mod:`uvlm.vision.presets` (tests replace this function with a fake source).
    """
    try:
        presets = importlib.import_module("uvlm.vision.presets")
    except ImportError as e:
        raise UserError(f"vision sources are unavailable ({e}): install uvlm completely") from None
    return presets.vision_source(kind, source)


@dataclass
class Sources:
    """The run's vision sources: ``understanding`` (always) and ``generation`` (``None`` for ``_u`` models; the
    understanding source itself for targets without a source kind of their own, such as ``llm-embeds``, and for
    targets in the understanding encoder's own space)."""

    understanding: Any
    generation: Any | None

    def generation_targets(self, cached: torch.Tensor, target: str) -> torch.Tensor:
        """Cached generation-source rows -> the vectors or ids a ``target`` model is trained to generate (as the
        target class says: :meth:`uvlm.model.targets.Target.training_targets`)."""
        from uvlm.model.targets import target_class

        return target_class(target).training_targets(self, cached)

    def identities(self) -> dict[str, Any]:
        return {"understanding": self.understanding.identity(),
                "generation": None if self.generation is None else self.generation.identity()}


def load_sources(config: RunConfig) -> Sources:
    """Build the vision sources a run config names (one object per distinct kind)."""
    v = config.vision
    und = _pooled(get_vision_source(v.understanding, v.source_for(v.understanding)), v.pool)
    require(und.kind == v.understanding, f"vision source for {v.understanding!r} reports kind {und.kind!r}")
    gen = None
    target = config.model.target_class()
    if target is not None:
        def load(kind: str):
            src = _pooled(get_vision_source(kind, v.source_for(kind)), v.pool if target.poolable else 1)
            require(src.kind == kind, f"vision source for {kind!r} reports kind {src.kind!r}")
            return src

        gen = target.generation_source(und, load)
    return Sources(und, gen)


def _pooled(source, k: int):
    """``source`` with its token grid average-pooled ``k x k`` (continuous sources only; ``k == 1``: unchanged)."""
    if k == 1 or source.codebook is not None:
        return source
    from uvlm.vision.sources import PooledSource

    return PooledSource(source, k)


def feature_cache(source, split: Any, chunk: int) -> FeatureCache:
    """The cache of ``source``'s outputs for the images of the split config ``split``, at the source's resolution."""
    identity = source.cache_identity() if hasattr(source, "cache_identity") else source.identity()
    return FeatureCache(source.encode_cached, identity, open_dataset(split.with_(resolution=int(source.resolution))),
                        dtype=source.cache_dtype, chunk=chunk)


def training_items(split: Any, mode: str) -> list[Item]:
    """The unpermuted sample list of a mode: VQA then caption (understanding), then generation."""
    tasks = {"mixed": ("vqa", "caption", "generation"), "understanding": UNDERSTANDING_TASKS,
             "generation": ("generation",)}[mode]
    return [(t, i) for t in tasks for i in range(split.count(t))]


#: Salts of the two streams' permutations (part of the data order's definition: changing them changes every run).
_UND_STREAM, _GEN_STREAM = 1, 2


class SampleOrder:
    """The deterministic, *paired* order of the training items, addressed by position.

    Understanding items (VQA, caption) and generation items are two streams, each permuted by its own seeded
    permutation per epoch (epoch ``e`` of a stream uses the seed ``(seed, e, stream)``). A mode reads:

    - ``understanding``: the understanding stream alone;
    - ``generation``: the generation stream alone;
    - ``mixed``: the understanding stream with the generation items interleaved at evenly spaced positions (within
      each epoch of ``N = N_u + N_g`` positions, position ``q`` is a generation item iff ``floor((q + 1) N_g / N)``
      exceeds ``floor(q N_g / N)``), so every batch holds the same share of generation samples.

    Hence the paired design: at the same seed, an understanding-only run and every mixed run (whatever its alpha or
    its amount of generation data) see identical understanding samples in identical order; the mixed runs only add
    generation samples between them. Position ``p`` (samples consumed so far) is all a resumed run needs.
    """

    def __init__(self, understanding: Sequence[Item], generation: Sequence[Item], seed: int):
        self.understanding = list(understanding)
        self.generation = list(generation)
        require(len(self) > 0, "the training split has no samples for this mode: raise the sample counts")
        self.seed = int(seed)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def for_mode(cls, split: Any, mode: str, seed: int) -> "SampleOrder":
        und = training_items(split, "understanding") if mode != "generation" else []
        gen = training_items(split, "generation") if mode != "understanding" else []
        return cls(und, gen, seed)

    @property
    def items(self) -> list[Item]:
        return self.understanding + self.generation

    def __len__(self) -> int:
        return len(self.understanding) + len(self.generation)

    def permutation(self, stream: int, epoch: int) -> np.ndarray:
        """The permutation of one stream (``1`` understanding, ``2`` generation) in one epoch."""
        key = (stream, epoch)
        perm = self._perms.get(key)
        if perm is None:
            n = len(self.understanding) if stream == _UND_STREAM else len(self.generation)
            perm = np.random.default_rng([self.seed, epoch, 0x0DA7A, stream]).permutation(n)
            self._perms = {k: v for k, v in self._perms.items() if k[0] != stream}  # one epoch per stream
            self._perms[key] = perm
        return perm

    def take(self, position: int, count: int) -> list[Item]:
        """Items ``position .. position + count - 1``."""
        n, g = len(self), len(self.generation)
        out = []
        for p in range(position, position + count):
            e, q = divmod(p, n)
            before = q * g // n  # generation items before position q of this epoch
            if (q + 1) * g // n > before:
                out.append(self.generation[int(self.permutation(_GEN_STREAM, e)[before])])
            else:
                out.append(self.understanding[int(self.permutation(_UND_STREAM, e)[q - before])])
        return out


def total_steps(config: RunConfig, n_items: int) -> int:
    """Optimiser steps of a run: ``optim.steps``, or ``epochs`` passes over ``n_items`` samples (last partial batch
    dropped)."""
    o = config.optim
    if o.steps is not None:
        return o.steps
    steps = int(o.epochs * n_items) // o.batch_size
    require(steps > 0, f"{o.epochs} epoch(s) of {n_items} samples make no full batch of {o.batch_size}: lower "
                       f"optim.batch_size or set optim.steps")
    return steps


@dataclass
class Counts:
    """What a set of examples contains (the log's token accounting)."""

    understanding_samples: int = 0
    generation_samples: int = 0
    text_tokens: int = 0
    """Real (non-padding) positions that are not image positions."""
    image_tokens: int = 0
    """Understanding input positions plus generated image positions."""
    answer_tokens: int = 0
    """Text positions with a label (what the text loss averages over)."""

    def add(self, other: "Counts") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_list(self) -> list[int]:
        return [getattr(self, k) for k in self.__dataclass_fields__]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Counts":
        return cls(*[int(v) for v in values])

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def tokens(self) -> int:
        return self.text_tokens + self.image_tokens


class TrainData:
    """Turns training items into the model's examples, reading vision tensors from the feature cache.

    Args:
        config: the run.
        sources: its vision sources.
        sequences: the model's :class:`~uvlm.model.sequence.SequenceBuilder`.
    """

    def __init__(self, config: RunConfig, sources: Sources, sequences):
        self.config = config
        self.split = config.data.train
        self.mode = config.mode
        self.sources = sources
        self.sequences = sequences
        self.dataset = open_dataset(self.split)
        chunk = config.data.feature_chunk
        target = config.model.target_class()
        self.und_cache = (feature_cache(sources.understanding, self.split, chunk)
                          if self.mode != "generation" or (target is not None and target.source_kind is None)
                          else None)
        self.gen_cache = None
        if self.mode != "understanding" and sources.generation is not None:
            self.gen_cache = (self.und_cache if sources.generation is sources.understanding and self.und_cache
                              else feature_cache(sources.generation, self.split, chunk))
        self.order = SampleOrder.for_mode(self.split, self.mode, config.seed)

    def prepare(self, progress=None) -> None:
        """Compute any missing cached features of the training images up front."""
        for cache in {id(c): c for c in (self.und_cache, self.gen_cache) if c is not None}.values():
            cache.ensure(self.split.n_images, progress)

    def examples(self, items: Sequence[Item]) -> tuple[list, Counts]:
        """Items -> model examples (in order) and their :class:`Counts`."""
        samples = [self.dataset.sample(t, i, with_image=False) for t, i in items]
        und = [k for k, s in enumerate(samples) if s.task != "generation"]
        gen = [k for k, s in enumerate(samples) if s.task == "generation"]
        feats: dict[int, torch.Tensor] = {}
        targs: dict[int, torch.Tensor] = {}
        if und:
            x = self.sources.understanding.to_inputs(self.und_cache.get([samples[k].image_index for k in und]))
            feats = dict(zip(und, x))
        if gen:
            require(self.gen_cache is not None, "generation samples need a generation source")
            cached = self.gen_cache.get([samples[k].image_index for k in gen])
            targs = dict(zip(gen, self.sources.generation_targets(cached, self.config.model.target)))
        examples, counts = [], Counts()
        for k, s in enumerate(samples):
            e = self.sequences.example(s, features=feats.get(k), targets=targs.get(k))
            examples.append(e)
            n_img = int(e.understanding_mask.sum() + e.generation_mask.sum())
            counts.add(Counts(understanding_samples=int(s.task != "generation"),
                              generation_samples=int(s.task == "generation"),
                              text_tokens=len(e.input_ids) - n_img, image_tokens=n_img,
                              answer_tokens=int((e.labels[1:] != -100).sum())))
        return examples, counts


def length_groups(examples: Sequence[Any], groups: int) -> list[list[Any]]:
    """``examples`` sorted by length (stable) and cut into ``groups`` contiguous, near-equal parts (fewer when there
    are fewer examples): batches of similar length waste less compute on padding."""
    ranked = sorted(examples, key=lambda e: len(e.input_ids))
    k = max(1, min(groups, len(ranked)))
    bounds = [round(i * len(ranked) / k) for i in range(k + 1)]
    return [ranked[bounds[i]:bounds[i + 1]] for i in range(k)]


__all__ = ["get_vision_source", "load_sources", "Sources", "feature_cache", "training_items", "SampleOrder",
           "total_steps", "Counts", "TrainData", "length_groups"]
