"""The VQA score of a model on the test split (the paper's understanding metric).

Answers are greedy by default (:func:`uvlm.model.generate.answer`) from the understanding features of the test images
(read through the same feature cache as training), then scored by the test split's dataset
(:meth:`uvlm.data.datasets.Dataset.score`; SmartWatch: :mod:`uvlm.data.scoring`). Each question of a multi-turn
sample is asked on its own, with only the image as context (the test split has one question per sample).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from typing import Any, Callable

from uvlm.data.datasets import ScoreLike, open_dataset
from uvlm.data.scoring import write_predictions
from uvlm.errors import require
from uvlm.model.config import SamplingConfig


def vqa_questions(test_config: Any, n_questions: int) -> tuple[list, list[tuple[int, str]]]:
    """The first ``n_questions`` VQA questions of the split (all if fewer) and, per question, its image index and
    question text."""
    require(n_questions > 0, f"n_questions must be positive, got {n_questions}")
    require(test_config.n_vqa > 0, f"the test split {test_config.name!r} has no VQA samples: set n_vqa")
    ds = open_dataset(test_config)
    questions: list = []
    asks: list[tuple[int, str]] = []
    for i in range(test_config.n_vqa):
        s = ds.sample("vqa", i, with_image=False)
        for q, turn in zip(ds.questions([s]), s.turns):
            questions.append(q)
            asks.append((s.image_index, turn.question))
            if len(questions) == n_questions:
                return questions, asks
    return questions, asks


@torch.no_grad()
def vqa_predictions(model, source, test_config: Any, n_questions: int, *, batch_size: int = 64,
                    max_new_tokens: int = 16, sampling: SamplingConfig | None = None,
                    feature_chunk: int = 2048) -> tuple[list, dict[str, str]]:
    """Answer the first ``n_questions`` test questions: ``(questions, {question id: answer})``."""
    from uvlm.model.generate import answer
    from uvlm.train.data import feature_cache

    questions, asks = vqa_questions(test_config, n_questions)
    cache = feature_cache(source, test_config, feature_chunk)
    was_training = model.training
    model.eval()
    predictions: dict[str, str] = {}
    try:
        for b in range(0, len(asks), batch_size):
            chunk = asks[b:b + batch_size]
            feats = source.to_inputs(cache.get([img for img, _ in chunk]))
            texts = answer(model, feats, [q for _, q in chunk], sampling=sampling, max_new_tokens=max_new_tokens)
            for q, a in zip(questions[b:b + batch_size], texts):
                predictions[q.id] = a
    finally:
        model.train(was_training)
    return questions, predictions


def evaluate_vqa(model, source, test_config: Any, n_questions: int, *, batch_size: int = 64,
                 max_new_tokens: int = 16, sampling: SamplingConfig | None = None, feature_chunk: int = 2048,
                 predictions_path: str | os.PathLike | None = None) -> ScoreLike:
    """The VQA score report of ``model`` on the first ``n_questions`` test questions, as the test split's dataset
    scores them (SmartWatch: :class:`~uvlm.data.scoring.ScoreReport`).

    Args:
        model: a :class:`~uvlm.model.unified.UnifiedVLM` (unwrapped).
        source: the understanding :class:`~uvlm.vision.sources.VisionSource` the model was trained on.
        test_config: the test split.
        predictions_path: also write the answers there as JSON lines (``uvlm score`` re-scores them).
    """
    questions, predictions = vqa_predictions(model, source, test_config, n_questions, batch_size=batch_size,
                                             max_new_tokens=max_new_tokens, sampling=sampling,
                                             feature_chunk=feature_chunk)
    if predictions_path is not None:
        Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
        write_predictions(predictions_path, predictions)
    return open_dataset(test_config).score(questions, predictions)


def vqa_evaluator(config, sources, out: str | os.PathLike) -> Callable[[Any, int, bool], dict[str, Any]]:
    """The periodic evaluation of a training run (``train(..., evaluator=vqa_evaluator)``): ``evaluate(model, step,
    final)`` answers the first ``config.eval.questions`` test questions (``final_questions`` at the last step, if
    set), writes them to ``out/predictions/step-NNNNNN.jsonl`` and returns the score's ``to_dict()`` with the
    dataset's ``columns`` and the ``predictions`` path (relative to ``out``)."""
    out = Path(out)
    e, test = config.eval, config.data.test
    columns = open_dataset(test).metric_columns

    def evaluate(model, step: int, final: bool = False) -> dict[str, Any]:
        path = out / "predictions" / f"step-{step:06d}.jsonl"
        n = e.final_questions if final and e.final_questions else e.questions
        report = evaluate_vqa(model, sources.understanding, test, n, batch_size=e.batch_size,
                              max_new_tokens=e.max_new_tokens, feature_chunk=config.data.feature_chunk,
                              predictions_path=path)
        return {**report.to_dict(), "columns": columns, "predictions": str(path.relative_to(out))}

    return evaluate


__all__ = ["evaluate_vqa", "vqa_evaluator", "vqa_predictions", "vqa_questions"]
