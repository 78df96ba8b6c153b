"""SmartWatch as an lmms-eval task: the hooks the task YAML names, scored with uvlm's exact VQA score.

lmms-eval loads the VQA shards of a materialised split (``uvlm data generate DIR --split test``) with ``datasets``
(one row per conversation), then calls :func:`process_docs` once, which turns the rows into one document per
question (a test split has one question per conversation; a training split may have up to four). Each document
keeps the image, the question, the reference answer, the attribute asked and the image's ground truth, so that
:func:`process_results` needs nothing but the document and the model's answer.

Each metric of the task (``time``, ``weather``, ``position``, ``battery``, ``total``) aggregates the same per-question
records with :func:`uvlm.data.scoring.score_predictions`: the numbers are those of ``uvlm score`` on the same answers,
in percent. Each question of a multi-turn conversation is asked on its own, with only the image as context, as
``uvlm eval`` does.

Nothing here imports lmms-eval: the hooks are plain functions of ``datasets`` rows and strings.
"""

from __future__ import annotations

from typing import Any, Sequence

from uvlm.data.attributes import TEXT_ATTRIBUTES
from uvlm.data.scoring import GROUPS, REPORTED, Question, ScoreReport, score_predictions
from uvlm.data.storage import row_attributes
from uvlm.errors import require

#: The task's metrics, in the order of ``uvlm score``'s table.
METRICS: tuple[str, ...] = REPORTED

#: Ground-truth columns each document carries (those :func:`uvlm.data.storage.row_attributes` reads).
TRUTH_COLUMNS: tuple[str, ...] = ("hour", "minute", "second", "weather", "weather_position", "battery",
                                  "battery_position", "face_color")

#: The columns of a document, after :func:`process_docs`.
DOC_COLUMNS: tuple[str, ...] = ("question_id", "sample_id", "turn", "image", "question", "answer", "attribute",
                                *TRUTH_COLUMNS)


def _explode(batch: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {c: [] for c in DOC_COLUMNS}
    for i, sample_id in enumerate(batch["id"]):
        require(batch["task"][i] == "vqa", f"row {sample_id} is a {batch['task'][i]} sample: the SmartWatch task "
                                           f"reads the vqa/ shards of a split; point the task at SPLIT/vqa/*.parquet")
        for k, (q, a, attribute) in enumerate(zip(batch["questions"][i], batch["answers"][i],
                                                  batch["turn_attributes"][i])):
            require(attribute in TEXT_ATTRIBUTES, f"row {sample_id} turn {k} asks about {attribute!r}, not one of "
                                                  f"{', '.join(TEXT_ATTRIBUTES)}: regenerate the split")
            out["question_id"].append(f"{sample_id}.{k}")
            out["sample_id"].append(sample_id)
            out["turn"].append(k)
            out["image"].append(batch["image"][i])
            out["question"].append(q)
            out["answer"].append(a)
            out["attribute"].append(attribute)
            for c in TRUTH_COLUMNS:
                out[c].append(batch[c][i])
    return out


def process_docs(dataset):
    """One document per VQA question (columns :data:`DOC_COLUMNS`), in split order; images stay PNG bytes until
    :func:`doc_to_visual` decodes them. ``dataset`` is the ``datasets.Dataset`` of a split's VQA shards."""
    import datasets

    missing = sorted({"id", "task", "image", "questions", "answers", "turn_attributes", *TRUTH_COLUMNS}
                     - set(dataset.column_names))
    require(not missing, f"the task's data has no column(s) {', '.join(missing)}: point it at the vqa/*.parquet "
                         f"shards of a split written by uvlm data generate")
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    flat = raw.map(_explode, batched=True, remove_columns=raw.column_names, load_from_cache_file=False)
    return flat.cast_column("image", datasets.Image())


def doc_to_visual(doc: dict[str, Any]) -> list:
    """The document's image, as a one-element list of RGB ``PIL`` images."""
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question, between the task's ``pre_prompt`` and ``post_prompt`` (both empty by default, so a uvlm model
    sees exactly the question it was trained on)."""
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def doc_to_target(doc: dict[str, Any]) -> str:
    """The reference answer (``02:07:00``, ``51%``, ``sunny``, ``top-left``)."""
    return doc["answer"]


def process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One record per metric: the question (id, attribute, ground truth) and the model's answer ``results[0]``.
    Scoring happens in the aggregation, with the whole set of answers, exactly as ``uvlm score`` does."""
    prediction = results[0] if results else ""
    record = {"id": doc["question_id"], "attribute": doc["attribute"],
              "truth": {c: (list(doc[c]) if c == "face_color" else doc[c]) for c in TRUTH_COLUMNS},
              "prediction": prediction if isinstance(prediction, str) else str(prediction)}
    return {metric: record for metric in METRICS}


def report(records: Sequence[dict[str, Any]]) -> ScoreReport:
    """The :class:`~uvlm.data.scoring.ScoreReport` of the records :func:`process_results` made (one per question)."""
    questions = [Question(r["id"], r["attribute"], row_attributes(r["truth"])) for r in records]
    return score_predictions(questions, {r["id"]: r["prediction"] for r in records})


def _aggregate(group: str):
    assert group in GROUPS, group

    def aggregate(records: Sequence[dict[str, Any]]) -> float:
        score = report(records).score(group)
        return float("nan") if score is None else score

    aggregate.__name__ = f"aggregate_{group}"
    aggregate.__doc__ = f"The {group} score in percent (NaN when no question asks about it)."
    return aggregate


aggregate_time = _aggregate("time")
aggregate_weather = _aggregate("weather")
aggregate_position = _aggregate("position")
aggregate_battery = _aggregate("battery")
aggregate_total = _aggregate("total")

__all__ = ["METRICS", "DOC_COLUMNS", "process_docs", "doc_to_visual", "doc_to_text", "doc_to_target",
           "process_results", "report", "aggregate_time", "aggregate_weather", "aggregate_position",
           "aggregate_battery", "aggregate_total"]
