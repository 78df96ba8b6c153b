"""From finished run records to per-configuration statistics: ``results.csv``, ``results.json``, ``results.md``.

A sweep expands a recipe into runs (variant x axis values x seed); each run leaves one record (a dict)::

    {"id": "3f2a...", "recipe": "transfer-weather", "group": "SigLIP-SigLIP",
     "labels": {"variant": "SigLIP-SigLIP", "bias": "weather"}, "seed": 0, "status": "done", "error": null,
     "final": {"vqa": {"time": 81.0, ..., "total": 71.3}, "fid": {"fid": 12.3, "extractor": "reader"}, ...},
     "curve": [{"step": 75, "understanding_samples": 1632, "generation_samples": 768, "vqa": {...}}, ...]}

Runs with the same ``group`` are the seeds of one configuration. :func:`aggregate` gives one :class:`Row` per group
(first-appearance order) with a :class:`~uvlm.experiments.stats.Summary` per metric path: the numeric leaves of
``final`` joined with dots (``vqa.weather``, ``fid.fid``, ``faithfulness.scores.total``, ``probe.accuracy``; lists
such as a t-SNE are ignored). Bookkeeping leaves (sample counts, sizes, seeds: :func:`is_bookkeeping`) are aggregated
too, for ``results.csv`` / ``results.json``, but left out of the readable tables. String leaves are *qualifiers*. Those that say how the numbers beside them were measured (``fid.extractor``, see
:data:`MEASUREMENT_QUALIFIERS`) must be the same for all runs of a group (averaging FIDs from two feature extractors
is meaningless) or :func:`aggregate` refuses; other strings are kept when all runs agree and dropped otherwise.
Runs whose status is not ``done`` are counted and listed (with their error) but never enter the statistics.

:func:`aggregate_curves` does the same for the evaluations over training: per group and per evaluation index, the
mean, std, min and max over seeds of one metric against the mean of the x values (seeds share one schedule).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from uvlm.errors import UserError
from uvlm.experiments.stats import Summary, digits_for, format_summary, summarize
from uvlm.io import write_json_atomic, write_text_atomic

#: String leaves that say how the numbers beside them were measured: the finished runs of a group must agree on them.
MEASUREMENT_QUALIFIERS = ("extractor", "decoder", "unit")
#: Numeric leaves that describe a measurement rather than score it (sample counts, sizes, seeds); they are aggregated
#: and written to ``results.csv`` / ``results.json`` like any metric, but the readable tables leave them out.
BOOKKEEPING = frozenset({"n", "n_real", "n_fake", "num_features", "n_train", "n_test", "dim", "grid", "resolution",
                         "seed", "seconds", "step", "steps"})
#: Sub-dicts whose numeric leaves are bookkeeping too (per-attribute question counts, token indices).
BOOKKEEPING_SECTIONS = frozenset({"counts", "cells"})

#: Columns of ``results.csv`` other than the label columns (which come between ``group`` and ``metric``).
CSV_FIELDS = ("metric", "extractor", "n", "mean", "std", "ci95_low", "ci95_high", "n_failed")


@dataclass(frozen=True)
class FailedRun:
    """A run of a group that did not finish (status other than ``done``)."""

    id: str
    """The run's id."""
    seed: int | None
    """Its seed."""
    status: str
    """Its status (``failed``, or whatever the record says)."""
    error: str | None
    """The error the runner recorded, if any."""


@dataclass(frozen=True)
class Row:
    """The statistics of one group (one configuration over its seeds)."""

    group: str
    """The group name (the paper's model name, possibly with axis values)."""
    labels: dict[str, Any]
    """The labels every run of the group shares (variant, axis values)."""
    seeds: tuple[int | None, ...]
    """Seeds of the finished runs, in record order."""
    run_ids: tuple[str, ...]
    """Ids of the finished runs."""
    failed: tuple[FailedRun, ...]
    """Runs that did not finish; excluded from :attr:`metrics`."""
    metrics: dict[str, Summary]
    """Metric path -> summary over the finished runs (first-appearance order)."""
    qualifiers: dict[str, str] = field(default_factory=dict)
    """String leaves of ``final`` shared by all finished runs (``fid.extractor`` -> ``reader``)."""

    @property
    def n_done(self) -> int:
        """Number of finished runs."""
        return len(self.run_ids)

    def qualifier(self, metric: str, name: str) -> str | None:
        """The qualifier ``name`` recorded beside ``metric`` (``qualifier("fid.fid", "extractor")``)."""
        parent = metric.rsplit(".", 1)[0] if "." in metric else ""
        return self.qualifiers.get(f"{parent}.{name}" if parent else name)

    def extractor(self, metric: str) -> str | None:
        """The feature extractor recorded beside ``metric`` (FID), or ``None``."""
        return self.qualifier(metric, "extractor")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as ``null``)."""
        return {"group": self.group, "labels": self.labels, "seeds": list(self.seeds), "runs": list(self.run_ids),
                "failed": [vars(f) for f in self.failed], "qualifiers": self.qualifiers,
                "metrics": {k: s.to_dict() for k, s in self.metrics.items()}}



#: Metric path prefixes and the range their values cannot leave (intervals are cut to it; see ``summarize``).
METRIC_BOUNDS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("vqa.", (0.0, 100.0)), ("faithfulness.", (0.0, 100.0)), ("feature_probe.", (0.0, 1.0)),
    ("probe.accuracy", (0.0, 1.0)), ("probe.chance", (0.0, 1.0)), ("fid.", (0.0, math.inf)))


def metric_bounds(path: str) -> tuple[float, float] | None:
    """The range of the metric at ``path`` (``vqa.weather`` -> ``(0, 100)``), or ``None`` when it has none."""
    for prefix, bounds in METRIC_BOUNDS:
        if path.startswith(prefix):
            return bounds
    return None

def _flatten(d: Any, prefix: str, numbers: dict[str, float], strings: dict[str, str]) -> None:
    """Numeric leaves -> ``numbers``, string leaves -> ``strings``, keyed by dotted path; other leaves ignored."""
    if not isinstance(d, Mapping):
        return
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            _flatten(v, path, numbers, strings)
        elif isinstance(v, bool):
            continue
        elif isinstance(v, (int, float)):
            numbers[path] = float(v)
        elif v is None:
            numbers.setdefault(path, math.nan)
        elif isinstance(v, str):
            strings[path] = v


def flatten_metrics(final: Mapping[str, Any] | None) -> tuple[dict[str, float], dict[str, str]]:
    """``(metrics, qualifiers)`` of a record's ``final``: numeric leaves and string leaves by dotted path
    (``{"fid": {"fid": 12.3, "extractor": "reader"}}`` -> ``({"fid.fid": 12.3}, {"fid.extractor": "reader"})``).
    ``null`` values become NaN; booleans and lists are ignored."""
    numbers: dict[str, float] = {}
    strings: dict[str, str] = {}
    _flatten(final or {}, "", numbers, strings)
    return numbers, strings


def _check(records: Sequence[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise UserError(f"run record {i} is a {type(r).__name__}, not a JSON object: pass the runner's records")
        if not isinstance(r.get("group"), str) or not r["group"]:
            raise UserError(f"run record {r.get('id', i)!r} has no group name: every record needs a 'group' string")
        rid = str(r.get("id", f"{r['group']}/seed{r.get('seed')}"))
        if rid in seen:
            raise UserError(f"run record {rid!r} appears twice: pass each run once")
        seen.add(rid)


def run_id(record: Mapping[str, Any]) -> str:
    """A record's id (``group/seedN`` when it has none)."""
    return str(record.get("id", f"{record['group']}/seed{record.get('seed')}"))


def is_done(record: Mapping[str, Any]) -> bool:
    """Whether a record is a finished run (status ``done``)."""
    return record.get("status") == "done"


def groups_of(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records by group, groups in first-appearance order."""
    _check(records)
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(r["group"], []).append(r)
    return out


def _shared_labels(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = dict(runs[0].get("labels") or {})
    return {k: v for k, v in first.items() if all((r.get("labels") or {}).get(k, object()) == v for r in runs[1:])}


def aggregate(records: Sequence[Mapping[str, Any]]) -> list[Row]:
    """One :class:`Row` per group, in first-appearance order.

    Every numeric leaf of a finished run's ``final`` is a metric (dotted path); its :class:`Summary` is taken over
    the group's finished runs that report it (NaN / ``null`` dropped). Runs with another status are listed in
    :attr:`Row.failed` only. Raises :class:`~uvlm.errors.UserError` when a record has no group, an id repeats, or
    the finished runs of a group disagree on a measurement qualifier (:data:`MEASUREMENT_QUALIFIERS`) such as
    ``fid.extractor``; other strings on which they disagree (a run folder) are dropped from :attr:`Row.qualifiers`.
    """
    rows = []
    for group, runs in groups_of(records).items():
        done = [r for r in runs if is_done(r)]
        failed = tuple(FailedRun(run_id(r), r.get("seed"), str(r.get("status")), r.get("error"))
                       for r in runs if not is_done(r))
        values: dict[str, list[float]] = {}
        qualifiers: dict[str, str] = {}
        qualifier_runs: dict[str, dict[str, list[str]]] = {}
        for r in done:
            numbers, strings = flatten_metrics(r.get("final"))
            for path, v in numbers.items():
                values.setdefault(path, []).append(v)
            for path, s in strings.items():
                qualifier_runs.setdefault(path, {}).setdefault(s, []).append(run_id(r))
                qualifiers.setdefault(path, s)
        for path, by_value in qualifier_runs.items():
            if len(by_value) == 1:
                continue
            if path.rsplit(".", 1)[-1] in MEASUREMENT_QUALIFIERS:
                seen = "; ".join(f"{v} in {', '.join(ids)}" for v, ids in by_value.items())
                raise UserError(f"the runs of group {group!r} disagree on {path} ({seen}): their metrics cannot be "
                                f"averaged; score every run of a group the same way")
            del qualifiers[path]  # a per-run note (a folder, a checkpoint name): not a property of the group
        rows.append(Row(group=group, labels=_shared_labels(runs), seeds=tuple(r.get("seed") for r in done),
                        run_ids=tuple(run_id(r) for r in done), failed=failed,
                        metrics={p: summarize(v, bounds=metric_bounds(p)) for p, v in values.items()},
                        qualifiers=qualifiers))
    return rows


def final_values(records: Sequence[Mapping[str, Any]], metric: str) -> dict[str, list[float]]:
    """Per group (first-appearance order), the finite values of ``metric`` in the finished runs' ``final``."""
    out: dict[str, list[float]] = {}
    for group, runs in groups_of(records).items():
        vals = [get_path(r.get("final"), metric) for r in runs if is_done(r)]
        out[group] = [float(v) for v in vals
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)]
    return out


#: Metric sections listed first in tables, in this order (the rest follow in first-appearance order).
SECTION_ORDER = ("vqa", "fid", "faithfulness", "conditioning", "probe")


def is_bookkeeping(path: str) -> bool:
    """Whether a metric path is bookkeeping (:data:`BOOKKEEPING`, :data:`BOOKKEEPING_SECTIONS`), not a score."""
    parts = path.split(".")
    return parts[-1] in BOOKKEEPING or any(p in BOOKKEEPING_SECTIONS for p in parts[:-1])


def metric_paths(rows: Iterable[Row]) -> list[str]:
    """All metric paths of ``rows``: sections in :data:`SECTION_ORDER` first, each in first-appearance order."""
    out: dict[str, None] = {}
    for row in rows:
        for p in row.metrics:
            out.setdefault(p, None)
    rank = {s: i for i, s in enumerate(SECTION_ORDER)}
    return sorted(out, key=lambda p: rank.get(p.split(".", 1)[0], len(rank)))


def label_keys(rows: Iterable[Row]) -> list[str]:
    """All label names of ``rows``, in first-appearance order."""
    out: dict[str, None] = {}
    for row in rows:
        for k in row.labels:
            out.setdefault(k, None)
    return list(out)


def get_path(d: Any, path: str) -> Any:
    """``d["vqa"]["weather"]`` for ``path == "vqa.weather"``; ``None`` when any step is missing."""
    for part in path.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return None
        d = d[part]
    return d


# --------------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """One group's metric over training: per evaluation index, statistics over the seeds."""

    group: str
    """The group name."""
    labels: dict[str, Any]
    """The group's shared labels."""
    metric: str
    """The metric path inside a curve point (``vqa.weather``)."""
    x_key: str
    """The curve point field on the x axis (``understanding_samples``)."""
    x: tuple[float, ...]
    """Mean over seeds of the x value at each evaluation index."""
    mean: tuple[float, ...]
    """Mean over seeds at each index."""
    std: tuple[float, ...]
    """Sample std over seeds at each index (NaN with one seed)."""
    low: tuple[float, ...]
    """Minimum over seeds at each index."""
    high: tuple[float, ...]
    """Maximum over seeds at each index."""
    ci_low: tuple[float, ...]
    """Lower end of the 95% Student-t interval at each index (NaN with one seed)."""
    ci_high: tuple[float, ...]
    """Upper end of the 95% Student-t interval at each index (NaN with one seed)."""
    n: tuple[int, ...]
    """Seeds with a value at each index."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as ``null``)."""
        def clean(xs: Iterable[float]) -> list[float | None]:
            return [None if math.isnan(v) else v for v in xs]
        return {"group": self.group, "labels": self.labels, "metric": self.metric, "x_key": self.x_key,
                "x": clean(self.x), "mean": clean(self.mean), "std": clean(self.std), "min": clean(self.low),
                "max": clean(self.high), "ci95_low": clean(self.ci_low), "ci95_high": clean(self.ci_high),
                "n": list(self.n)}


def aggregate_curves(records: Sequence[Mapping[str, Any]], metric: str = "vqa.total",
                     x_key: str = "understanding_samples") -> list[Curve]:
    """Per group (first-appearance order), ``metric`` over training from the finished runs' ``curve`` lists.

    Seeds share one evaluation schedule, so points are matched by index; the curves are cut to the shortest finished
    run's length, and when the x values differ across seeds the x of a point is their mean. Groups whose finished
    runs have no curve, or no value of ``metric`` at any point, are left out.
    """
    out = []
    for group, runs in groups_of(records).items():
        curves = [r.get("curve") or [] for r in runs if is_done(r)]
        curves = [c for c in curves if c]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        xs, stats = [], []
        for i in range(length):
            x = [get_path(c[i], x_key) for c in curves]
            x = [float(v) for v in x if isinstance(v, (int, float)) and not isinstance(v, bool)]
            xs.append(float(np.mean(x)) if x else math.nan)
            y = [get_path(c[i], metric) for c in curves]
            y = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in y]
            finite = [v for v in y if not math.isnan(v)]
            s = summarize(finite, bounds=metric_bounds(metric))
            stats.append((s, min(finite) if finite else math.nan, max(finite) if finite else math.nan))
        if all(s.n == 0 for s, _, _ in stats):
            continue
        out.append(Curve(group=group, labels=_shared_labels(runs), metric=metric, x_key=x_key, x=tuple(xs),
                         mean=tuple(s.mean for s, _, _ in stats), std=tuple(s.std for s, _, _ in stats),
                         low=tuple(lo for _, lo, _ in stats), high=tuple(hi for _, _, hi in stats),
                         ci_low=tuple(s.ci_low for s, _, _ in stats), ci_high=tuple(s.ci_high for s, _, _ in stats),
                         n=tuple(s.n for s, _, _ in stats)))
    return out


def find_curve_metrics(records: Sequence[Mapping[str, Any]], x_key: str = "understanding_samples") -> list[str]:
    """Numeric metric paths found in the finished runs' curve points (first-appearance order), except the step and
    sample counters and bookkeeping (:func:`is_bookkeeping`)."""
    out: dict[str, None] = {}
    skip = {"step", x_key, "understanding_samples", "generation_samples"}
    for r in records:
        if not is_done(r):
            continue
        for point in r.get("curve") or []:
            numbers, _ = flatten_metrics(point)
            for p in numbers:
                if p not in skip and not is_bookkeeping(p):
                    out.setdefault(p, None)
    return list(out)


# --------------------------------------------------------------------------------------------------- files


def _cell(v: Any) -> str:
    """A CSV cell: strings as they are, NaN / None empty, numbers in full precision, anything else as JSON."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return json.dumps(v)


def results_csv(rows: Sequence[Row]) -> str:
    """The CSV text: one line per group x metric; columns ``group``, the label names, then :data:`CSV_FIELDS`.
    A label named like a fixed column is written as ``label.NAME``."""
    labels = label_keys(rows)
    fixed = {"group", *CSV_FIELDS}
    label_cols = [f"label.{k}" if k in fixed else k for k in labels]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", *label_cols, *CSV_FIELDS])
    for row in rows:
        for path, s in row.metrics.items():
            w.writerow([row.group, *(_cell(row.labels.get(k)) for k in labels), path, row.extractor(path) or "",
                        s.n, _cell(s.mean), _cell(s.std), _cell(s.ci_low), _cell(s.ci_high), len(row.failed)])
    return buf.getvalue()


def _md_escape(s: Any) -> str:
    return str(s).replace("|", "\\|")


def metrics_table(rows: Sequence[Row], paths: Sequence[str] | None = None,
                  marks: Mapping[str, str] | None = None) -> list[str]:
    """Markdown table lines: one row per group (its labels that differ from the group name, the finished seeds),
    one column per metric path (default: all but bookkeeping) as ``mean ± std [ci95_low, ci95_high]``. A column
    whose values carry a feature extractor names it (several: each, comma-separated; a row never averages across
    extractors). ``marks`` appends a marker to a column's header (``{"faithfulness.total": " †"}``)."""
    paths = list(paths) if paths is not None else [p for p in metric_paths(rows) if not is_bookkeeping(p)]
    marks = marks or {}
    labels = [k for k in label_keys(rows) if not all(r.labels.get(k) == r.group for r in rows if k in r.labels)]
    digits = {p: digits_for(r.metrics[p].mean for r in rows if p in r.metrics) for p in paths}

    def head(p: str) -> str:
        ex = {r.extractor(p) for r in rows if p in r.metrics} - {None}
        return (f"{p} ({', '.join(sorted(ex))})" if ex else p) + marks.get(p, "")

    lines = ["| group | " + "".join(f"{_md_escape(k)} | " for k in labels) + "seeds | "
             + " | ".join(_md_escape(head(p)) for p in paths) + " |",
             "|---|" + "---|" * len(labels) + "---:|" + "---:|" * len(paths)]
    for r in rows:
        cells = [format_summary(r.metrics.get(p), digits[p]) for p in paths]
        lines.append(f"| {_md_escape(r.group)} | " + "".join(f"{_md_escape(_cell(r.labels.get(k)))} | " for k in labels)
                     + f"{r.n_done} | " + " | ".join(cells) + " |")
    return lines


def failed_lines(rows: Sequence[Row]) -> list[str]:
    """Markdown bullet lines, one per run that did not finish (empty when all finished)."""
    return [f"- {_md_escape(r.group)}, seed {f.seed} ({f.id}): {f.status}" + (f": {f.error}" if f.error else "")
            for r in rows for f in r.failed]


def results_markdown(rows: Sequence[Row], recipe: str) -> str:
    """A readable table: one row per group, one column per metric as ``mean ± std [ci95_low, ci95_high]``, then the
    runs that did not finish."""
    n_done = sum(r.n_done for r in rows)
    n_failed = sum(len(r.failed) for r in rows)
    lines = [f"# {recipe}: results", "",
             f"{len(rows)} groups, {n_done} finished runs, {n_failed} not finished. Each cell: mean ± sample std "
             f"[95% Student-t interval] over the finished seeds; n/a: one seed only; -: not measured.", "",
             *metrics_table(rows)]
    failed = failed_lines(rows)
    if failed:
        lines += ["", "Runs that did not finish (excluded from the statistics):", "", *failed]
    return "\n".join(lines) + "\n"


def results_json(rows: Sequence[Row], recipe: str, curves: Mapping[str, Sequence[Curve]] | None = None
                 ) -> dict[str, Any]:
    """The JSON document: recipe, confidence, one entry per group, and the aggregated curves by metric."""
    return {"recipe": recipe, "confidence": 0.95, "groups": [r.to_dict() for r in rows],
            "curves": {m: [c.to_dict() for c in cs] for m, cs in (curves or {}).items()}}


def write_results(out_dir: str | Path, records: Sequence[Mapping[str, Any]], recipe: str, *,
                  curve_metrics: Sequence[str] | None = None, x_key: str = "understanding_samples") -> list[Path]:
    """Write ``results.csv``, ``results.json`` and ``results.md`` into ``out_dir`` (each atomically) and return
    their paths.

    ``results.json`` also holds the curves of ``curve_metrics`` (default: every metric found in the curve points)
    against ``x_key``, aggregated by :func:`aggregate_curves`.
    """
    if not records:
        raise UserError(f"no run records for {recipe!r}: run the sweep first")
    out = Path(out_dir)
    rows = aggregate(records)
    metrics = list(curve_metrics) if curve_metrics is not None else find_curve_metrics(records, x_key)
    curves = {m: aggregate_curves(records, m, x_key) for m in metrics}
    paths = [out / "results.csv", out / "results.json", out / "results.md"]
    write_text_atomic(paths[0], results_csv(rows))
    write_json_atomic(paths[1], results_json(rows, recipe, curves))
    write_text_atomic(paths[2], results_markdown(rows, recipe))
    return paths


def read_results_json(path: str | Path) -> list[Row]:
    """The rows of a ``results.json`` written by :func:`write_results`."""
    doc = json.loads(Path(path).read_text())
    return [Row(group=g["group"], labels=g["labels"], seeds=tuple(g["seeds"]), run_ids=tuple(g["runs"]),
                failed=tuple(FailedRun(**f) for f in g["failed"]), qualifiers=g.get("qualifiers", {}),
                metrics={k: Summary.from_dict(s) for k, s in g["metrics"].items()}) for g in doc["groups"]]


__all__ = ["BOOKKEEPING", "BOOKKEEPING_SECTIONS", "CSV_FIELDS", "MEASUREMENT_QUALIFIERS", "SECTION_ORDER", "Curve",
           "FailedRun", "Row", "aggregate", "aggregate_curves", "failed_lines", "final_values", "find_curve_metrics",
           "flatten_metrics", "get_path", "groups_of", "is_bookkeeping", "is_done", "label_keys", "metric_paths",
           "metrics_table", "read_results_json", "results_csv", "results_json", "results_markdown", "run_id",
           "write_results"]
