"""Reports of a finished sweep: ``report.md`` beside the paper's numbers, and figures in the layout of the paper's.

:func:`write_report` turns a recipe's run records (see :mod:`uvlm.experiments.results`) into

- ``report.md``: the paper's table layout when the recipe names one (rows: the paper's models; per column ``ours``
  as ``mean ± std (n=seeds) [95% interval]`` beside the printed ``paper`` value; FID columns name their feature
  extractor, one column per extractor), then every metric of the sweep, the runs that did not finish, the figures;
- figures, each as PNG and PDF (matplotlib, Agg canvas), chosen by :attr:`ReportSpec.figures`:

  ``curves``    a metric against the samples seen during training, one line per group, mean and a band over seeds,
                one panel per metric (the paper's Figures 3, 5, 6);
  ``scaling``   the final metric against a label the sweep varies (understanding or generation samples), one line
                per series (variant), one panel per metric (Figure 4);
  ``transfer``  the same plot for a transfer sweep (weather accuracy against the biased share, one line per mode);
  ``bars``      the final metric per group with 95% Student-t error bars and the paper's value as a marker;
  ``tsne``      the t-SNE of the understanding tokens at the weather icon, one panel per group (its first finished
                seed's ``final.probe``), drawn by :func:`uvlm.eval.probe.plot_tsne` (Figure 7).

What a recipe wants is a :class:`ReportSpec`; nothing here knows recipe names. Every file is written atomically.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from uvlm.errors import UserError, check_keys, require
from uvlm.experiments.paper import FID_PATH, PAPER_FID_EXTRACTOR, VQA_PATHS, PaperRow, PaperTable, paper_table
from uvlm.experiments.results import Row, aggregate, aggregate_curves, failed_lines, final_values, metrics_table
from uvlm.experiments.stats import digits_for, fmt, format_summary
from uvlm.io import atomic_path, write_text_atomic

#: Figure kinds :attr:`ReportSpec.figures` may name.
FIGURE_KINDS = ("curves", "scaling", "transfer", "bars", "tsne")
#: Bands around the mean in line plots: min-max over seeds, ± one sample std, or the 95% Student-t interval.
BANDS = ("minmax", "std", "ci95")
#: Figure kinds that plot against a run label and need :attr:`ReportSpec.x_key`.
LABEL_AXIS_KINDS = ("scaling", "transfer")
#: Metric sections the paper's tables report; any other section is a uvlm addition.
PAPER_SECTIONS = ("vqa", "fid")
#: Short descriptions of the uvlm additions, by metric section, for the report's notes.
ADDITIONS = {
    "faithfulness": "faithfulness: the attributes a generation instruction states, read back from the generated image "
                    "by the SmartWatch reader and scored with the VQA rules, in percent (uvlm addition)",
    "conditioning": "conditioning: the teacher-forced text-conditioning gap, how much higher (in percent) the vision "
                    "loss of 128 test generations is when their instructions are shuffled; 0 means the generation "
                    "head ignores the instruction (`icon_gap`: at the weather icon's tokens, for instructions naming "
                    "the weather; uvlm addition)",
    "probe": "probe: linear-probe accuracy on the understanding vision tokens (the paper states 100% for its four "
             "models in the text of section 4.2, in no table)",
}
_BAND_TEXT = {"minmax": "min-max over seeds", "std": "± one sample std over seeds",
              "ci95": "95% Student-t interval over seeds"}


@dataclass(frozen=True)
class ReportSpec:
    """What a recipe's report contains."""

    table: str | None = None
    """The paper table to set ours beside (``1``, ``A3``, ``A4``, ``A5``, ``A6``), or ``None`` (or ``""``) for
    none."""
    figures: tuple[str, ...] = ("bars",)
    """Figure kinds to draw, from :data:`FIGURE_KINDS`."""
    metrics: tuple[str, ...] = VQA_PATHS + (FID_PATH,)
    """Metric paths to plot, one panel each (``vqa.weather``, ``fid.fid``); panels without data are left out."""
    x_key: str | None = None
    """The run label on the x axis of ``scaling`` / ``transfer`` figures (``understanding``, ``generation``,
    ``bias_share``)."""
    series_key: str = "variant"
    """The run label that makes one line in ``scaling`` / ``transfer`` figures (``variant``, ``mode``); runs
    without it form a line per group."""
    curve_x: str = "understanding_samples"
    """The curve-point field on the x axis of ``curves`` figures."""
    band: str = "minmax"
    """Band around the mean in line plots, from :data:`BANDS` (bar charts always show the 95% interval)."""
    paper_scale: Mapping[str, float] = field(default_factory=dict)
    """Label -> factor mapping this sweep's numeric labels onto the paper's (``{"understanding_samples": 50}`` when
    the sweep trains on 1/50 of the paper's samples), used to find the paper's row."""
    title: str | None = None
    """Report title; default: the recipe name."""

    def __post_init__(self) -> None:
        figures = (self.figures,) if isinstance(self.figures, str) else tuple(self.figures)
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        object.__setattr__(self, "figures", figures)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "paper_scale", dict(self.paper_scale or {}))
        if self.table is not None and not str(self.table).strip():
            object.__setattr__(self, "table", None)
        unknown = [k for k in figures if k not in FIGURE_KINDS]
        require(not unknown, f"unknown figure kind(s) {', '.join(map(str, unknown))}: use {', '.join(FIGURE_KINDS)}")
        require(self.band in BANDS, f"unknown band {self.band!r}: use one of {', '.join(BANDS)}")
        require(all(isinstance(m, str) and m for m in metrics) and metrics,
                f"metrics must be a non-empty list of metric paths such as vqa.weather, got {list(metrics)}")
        needs_x = [k for k in figures if k in LABEL_AXIS_KINDS]
        if needs_x and not self.x_key:
            raise UserError(f"figure kind {needs_x[0]} needs x_key: the run label the sweep varies, "
                            f"e.g. understanding or bias_share")
        for k, v in self.paper_scale.items():
            require(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                    f"paper_scale[{k!r}] must be a positive number, got {v!r}")
        if self.table is not None:
            paper_table(self.table)

    def paper(self) -> PaperTable | None:
        """The paper table, or ``None``."""
        return paper_table(self.table) if self.table is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["figures"], d["metrics"], d["paper_scale"] = list(self.figures), list(self.metrics), dict(self.paper_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReportSpec":
        """From a dict whose keys are the field names (as :meth:`to_dict` writes it)."""
        check_keys(cls, d, "report spec")
        return cls(**d)

    @classmethod
    def from_recipe(cls, report: Any) -> "ReportSpec":
        """From a recipe's ``[report]`` settings, a mapping or an object with the attributes ``table``, ``figures``,
        ``curve_metric`` (a VQA column: ``total``, ``weather``, ...) and ``x_axis`` (a run label). The curve metric's
        panel comes first, then the other VQA columns, FID and the probe accuracy (panels without data are left
        out)."""
        get = report.get if isinstance(report, Mapping) else (lambda k, d=None: getattr(report, k, d))
        unknown = sorted(set(report) - {"table", "figures", "curve_metric", "x_axis"}) if isinstance(
            report, Mapping) else []
        require(not unknown, f"unknown [report] key(s) {', '.join(unknown)}: use table, figures, curve_metric, x_axis")
        first = str(get("curve_metric", None) or "total")
        first = first if "." in first else f"vqa.{first}"
        metrics = (first, *(m for m in VQA_PATHS if m != first), FID_PATH, "probe.accuracy")
        figures = get("figures", None)
        return cls(table=get("table", None), figures=tuple(figures) if figures is not None else ("curves", "bars"),
                   metrics=metrics, x_key=get("x_axis", None))

    @classmethod
    def coerce(cls, spec: Any) -> "ReportSpec":
        """``spec`` itself, the default for ``None``, :meth:`from_recipe` for anything else."""
        if spec is None:
            return cls()
        return spec if isinstance(spec, cls) else cls.from_recipe(spec)


# ------------------------------------------------------------------------------------------------- labels


def metric_label(metric: str) -> str:
    """Short column name: ``vqa.weather`` -> ``weather``, ``fid.fid`` -> ``FID``, others as they are."""
    if metric == FID_PATH:
        return "FID"
    if metric.startswith("vqa."):
        return metric.split(".", 1)[1]
    return metric


def axis_label(metric: str, extractor: str | None = None) -> str:
    """Y-axis label of a metric."""
    if metric.startswith("vqa."):
        return f"{metric.split('.', 1)[1]} VQA score (%)"
    if metric == FID_PATH:
        return f"FID ({extractor} features)" if extractor else "FID"
    return metric


def _x_label(key: str) -> str:
    text = key.replace("_", " ")
    return f"{text} seen" if key.endswith("_samples") else text


def is_addition(metric: str) -> bool:
    """Whether a metric is not in the paper's tables (faithfulness, probe, ...)."""
    return metric.split(".", 1)[0] not in PAPER_SECTIONS


def pixel_decoded(row: Row, metric: str) -> bool:
    """Whether the FID of ``row`` was measured on images from uvlm's pixel decoder: a ``decoder`` qualifier naming a
    pixel decoder, or a variant whose generation target is continuous (SigLIP embeddings have no pixels of their
    own; the paper reports no FID for them)."""
    if metric != FID_PATH:
        return False
    decoder = row.qualifier(metric, "decoder")
    if decoder:
        return "pixel" in decoder.lower()
    from uvlm.model.targets import target_class
    from uvlm.train.config import parse_variant

    try:
        target = parse_variant(str(row.labels.get("variant", row.group)))["target"]
    except UserError:
        return False
    return target is not None and target_class(target).decoder == "pixel-decoder"


# ------------------------------------------------------------------------------------------------- paper table


def _paper_matches(rows: Sequence[Row], table: PaperTable, spec: ReportSpec
                   ) -> list[tuple[Row, PaperRow | None]]:
    """Rows with their paper row: matched rows in the paper's order, then the unmatched in sweep order."""
    matched = [(r, table.lookup(r.group, r.labels, spec.paper_scale)) for r in rows]
    order = {id(p): i for i, p in enumerate(table.rows)}
    hits = sorted([m for m in matched if m[1] is not None], key=lambda m: order[id(m[1])])
    return hits + [m for m in matched if m[1] is None]


def paper_table_markdown(rows: Sequence[Row], spec: ReportSpec) -> list[str]:
    """The paper table's layout with ours beside the paper's values (markdown lines with notes), or ``[]``."""
    table = spec.paper()
    if table is None:
        return []
    matches = _paper_matches(rows, table, spec)
    header = ["paper model", "our group", "seeds"]
    align = ["---", "---", "---:"]
    cols: list[tuple[str, str | None, bool]] = []  # (metric, extractor, is_paper)
    extractors_used: dict[str, list[str | None]] = {}
    for metric in table.columns:
        have = [r for r in rows if metric in r.metrics and r.metrics[metric].n]
        extractors = sorted({r.extractor(metric) for r in have}, key=lambda e: (e is None, e or ""))
        if metric == FID_PATH and not extractors:
            extractors = [None]
        extractors_used[metric] = extractors
        split = any(e is not None for e in extractors) or metric == FID_PATH
        for e in extractors or [None]:
            name = metric_label(metric) + " ours"
            if split:
                name += f" ({e})" if e else " (extractor not recorded)"
            cols.append((metric, e if split else "*", False))
            header.append(name)
            align.append("---:")
        cols.append((metric, None, True))
        header.append(metric_label(metric) + " paper" + (f" ({PAPER_FID_EXTRACTOR})" if metric == FID_PATH else ""))
        align.append("---:")
    digits = {m: digits_for([r.metrics[m].mean for r in rows if m in r.metrics]
                            + [v for p in table.rows if (v := table.value(p, m)) is not None]) for m in table.columns}

    marked = False
    lines = [f"## Table {table.name}: {table.caption}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row, prow in matches:
        cells = [prow.name if prow else "(not in the paper)", row.group, str(row.n_done)]
        for metric, extractor, is_paper in cols:
            if is_paper:
                cells.append(fmt(table.value(prow, metric), digits[metric], "-") if prow else "-")
                continue
            s = row.metrics.get(metric)
            if s is None or s.n == 0 or (extractor != "*" and row.extractor(metric) != extractor):
                cells.append("-")
                continue
            cell = format_summary(s, digits[metric], with_n=True)
            if pixel_decoded(row, metric):
                cell += " †"
                marked = True
            cells.append(cell)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    lines += ["", "ours: mean ± sample std (n = finished seeds) [95% Student-t interval]; n/a: one seed. paper: the "
                  "value printed in the paper; -: not reported."]
    shared: dict[int, list[Row]] = {}
    for row, prow in matches:
        if prow is not None:
            shared.setdefault(id(prow), []).append(row)
    for members in (m for m in shared.values() if len(m) > 1):
        differ = sorted({k for r in members for k in r.labels
                         if len({repr(x.labels.get(k)) for x in members}) > 1})
        lines += ["", f"Groups {', '.join(r.group for r in members)} all match the paper row "
                      f"{table.lookup(members[0].group, members[0].labels, spec.paper_scale).name} "
                      f"(they differ in {', '.join(differ) or 'labels the table does not key on'}): the paper's value "
                      f"belongs to the paper's setting only."]
    missing = [p.name for p in table.rows if all(p is not m for _, m in matches)]
    if missing:
        lines += ["", f"Paper rows without a group in this sweep: {', '.join(missing)}."]
    if spec.paper_scale:
        scale = ", ".join(f"{k} x {v:g}" for k, v in spec.paper_scale.items())
        lines += ["", f"Paper rows were found by mapping this sweep's labels onto the paper's: {scale}."]
    if FID_PATH in table.columns:
        named = [e for e in extractors_used.get(FID_PATH, []) if e]
        lines += ["", f"FID: ours uses {', '.join(named) if named else 'an unrecorded'} feature extractor"
                      f"{'s' if len(named) > 1 else ''}, one column per extractor (never mixed); the paper's FID is "
                      f"Heusel et al. (2017)'s, on {PAPER_FID_EXTRACTOR} features. The scales differ: compare trends "
                      f"and rankings, not values."]
    if marked:
        lines += ["", "†: uvlm addition, not in the paper: FID of images that uvlm's pixel decoder draws from "
                      "generated continuous embeddings (the paper reports no FID for models that generate SigLIP "
                      "embeddings)."]
    return lines


def additions_notes(rows: Sequence[Row]) -> list[str]:
    """Markdown notes on the uvlm additions present in ``rows``."""
    sections = {m.split(".", 1)[0] for r in rows for m in r.metrics if is_addition(m)}
    notes = [ADDITIONS.get(s, f"{s}: uvlm addition") for s in sorted(sections)]
    if any(pixel_decoded(r, m) for r in rows for m in r.metrics if m == FID_PATH):
        notes.append("FID with a pixel decoder: images drawn by uvlm's pixel decoder from generated continuous "
                     "embeddings (uvlm addition)")
    return [f"- {n}" for n in notes]


# ------------------------------------------------------------------------------------------------- figures


def _figure(n_panels: int, panel_width: float = 3.8, panel_height: float = 3.2, max_cols: int = 3):
    """A matplotlib Figure on the Agg canvas (no pyplot state) and its axes, in rows of up to ``max_cols``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n_panels, max_cols)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_width * cols, panel_height * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _save(fig, out: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` atomically (no timestamps in the PDF)."""
    paths = []
    for ext, kwargs in (("png", {"dpi": 150}), ("pdf", {"metadata": {"CreationDate": None}})):
        path = out / f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, **kwargs)
        paths.append(path)
    return paths


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _style_axis(ax, metric: str, extractor: str | None = None, clip: bool = True) -> None:
    ax.set_ylabel(axis_label(metric, extractor))
    if clip and metric.startswith("vqa."):
        ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)


def _band(kind: str, mean, std, low, high, ci_low, ci_high):
    if kind == "minmax":
        return low, high
    if kind == "std":
        return [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
    return ci_low, ci_high


def chance_level(metric: str) -> float | None:
    """The VQA score (%) of guessing uniformly, for the metrics scored by class (weather out of 3, a corner out of
    4); ``None`` for the others (time and battery are scored by distance)."""
    from uvlm.data.attributes import CORNERS, WEATHERS

    classes = {"vqa.weather": len(WEATHERS), "vqa.position": len(CORNERS), "vqa.weather_position": len(CORNERS),
               "vqa.battery_position": len(CORNERS)}.get(metric)
    return 100.0 / classes if classes else None


def _mark_chance_and_paper(ax, metric: str, rows: Sequence[Row], spec: ReportSpec, x_end: float) -> None:
    """A dotted chance line, and the paper's printed end point of every paper row our groups match (a grey star at
    the last point of our curves: the paper's models were trained on far more samples)."""
    chance = chance_level(metric)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.1f})")
    table = spec.paper()
    if table is None:
        return
    seen: list[str] = []
    for r in rows:
        prow = table.lookup(r.group, r.labels, spec.paper_scale)
        v = table.value(prow, metric) if prow is not None else None
        if v is None or prow.name in seen:
            continue
        seen.append(prow.name)
        ax.plot([x_end], [v], marker=("*", "P", "X", "D")[(len(seen) - 1) % 4], markersize=10, color="0.35",
                linestyle="none", label=f"paper {prow.name} (Table {table.name})")


def plot_curves(records: Sequence[Mapping[str, Any]], rows: Sequence[Row], spec: ReportSpec, out: Path,
                title: str) -> list[Path]:
    """``curves.png`` / ``curves.pdf``: each metric over training, one line per group (mean) with a band; ``[]``
    when no finished run has a curve with these metrics."""
    panels = [(m, cs) for m in spec.metrics if (cs := aggregate_curves(records, m, spec.curve_x))]
    if not panels:
        return []
    colors = _colors([r.group for r in rows])
    fig, axes = _figure(len(panels))
    for ax, (metric, curves) in zip(axes, panels):
        for c in curves:
            color = colors.get(c.group)
            ax.plot(c.x, c.mean, marker="o", markersize=3, color=color, label=f"{c.group} (n={max(c.n)})")
            lo, hi = _band(spec.band, c.mean, c.std, c.low, c.high, c.ci_low, c.ci_high)
            ax.fill_between(c.x, lo, hi, color=color, alpha=0.18, linewidth=0)
        _mark_chance_and_paper(ax, metric, rows, spec, max(x for c in curves for x in c.x))
        ax.set_title(metric_label(metric))
        ax.set_xlabel(_x_label(spec.curve_x))
        _style_axis(ax, metric, clip=spec.band == "minmax")
    handles: dict[str, Any] = {}  # one legend for all panels: the chance line and the paper's markers vary by panel
    for ax in axes[:len(panels)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label if not label.startswith("chance") else "chance", h)
    # below the panels, so that no curve is hidden behind it
    fig.legend(list(handles.values()), [h.get_label() if k != "chance" else "chance (guessing uniformly)"
                                        for k, h in handles.items()], fontsize="small", loc="outside lower center",
               ncols=min(len(handles), 4))
    _suptitle(fig, f"{title}: over training (mean, band: {_BAND_TEXT[spec.band]})")
    return _save(fig, out, "curves")


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _panels(rows: Sequence[Row], metrics: Sequence[str]) -> list[tuple[str, str | None, list[Row]]]:
    """``(metric, extractor, rows with a value)`` per metric in order, one panel per feature extractor so that no
    axis mixes extractors; metrics without data are left out."""
    out = []
    for metric in metrics:
        by_extractor: dict[str | None, list[Row]] = {}
        for r in rows:
            if metric in r.metrics and r.metrics[metric].n:
                by_extractor.setdefault(r.extractor(metric), []).append(r)
        for extractor in sorted(by_extractor, key=lambda e: (e is None, e or "")):
            out.append((metric, extractor, by_extractor[extractor]))
    return out


def _panel_title(metric: str, extractor: str | None) -> str:
    return metric_label(metric) + (f" ({extractor})" if extractor else "")


def _suptitle(fig, text: str) -> None:
    fig.suptitle(textwrap.fill(text, max(40, int(fig.get_figwidth() * 12))), fontsize="medium")


def plot_against_label(records: Sequence[Mapping[str, Any]], rows: Sequence[Row], spec: ReportSpec, out: Path,
                       stem: str, title: str) -> list[Path]:
    """``{stem}.png`` / ``.pdf``: each metric's final value against the run label :attr:`ReportSpec.x_key`, one line
    per :attr:`ReportSpec.series_key` value, mean with the spec's band; one panel per metric and feature extractor.
    Groups without a numeric ``x_key`` label are left out; ``[]`` when no panel has data."""
    x_key = spec.x_key
    assert x_key is not None
    usable = [r for r in rows if _numeric(r.labels.get(x_key))]
    if not usable:
        raise UserError(f"no group of this sweep has a numeric label {x_key!r} for the {stem} figure: set the "
                        f"report's x_key to the label the sweep varies")
    series_of = {r.group: str(r.labels.get(spec.series_key, r.group)) for r in usable}
    panels = _panels(usable, spec.metrics)
    if not panels:
        return []
    colors = _colors(list(dict.fromkeys(series_of.values())))
    fig, axes = _figure(len(panels))
    for ax, (metric, extractor, have) in zip(axes, panels):
        raw = final_values(records, metric)
        lines: dict[str, list[Row]] = {}
        for r in have:
            lines.setdefault(series_of[r.group], []).append(r)
        for series, members in lines.items():
            members = sorted(members, key=lambda r: float(r.labels[x_key]))
            xs = [float(r.labels[x_key]) for r in members]
            summaries = [r.metrics[metric] for r in members]
            mean = [v.mean for v in summaries]
            lo, hi = _band(spec.band, mean, [v.std for v in summaries], [min(raw[r.group]) for r in members],
                           [max(raw[r.group]) for r in members], [v.ci_low for v in summaries],
                           [v.ci_high for v in summaries])
            ns = sorted({v.n for v in summaries})
            n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
            ax.plot(xs, mean, marker="o", color=colors[series], label=f"{series} (n={n})")
            ax.fill_between(xs, lo, hi, color=colors[series], alpha=0.18, linewidth=0)
        ax.set_title(_panel_title(metric, extractor))
        ax.set_xlabel(x_key.replace("_", " "))
        _style_axis(ax, metric, extractor, clip=spec.band == "minmax")
        ax.legend(fontsize="small")
    _suptitle(fig, f"{title}: final scores against {x_key.replace('_', ' ')} (mean, band: {_BAND_TEXT[spec.band]})")
    return _save(fig, out, stem)


def _comparable_to_paper(metric: str, extractor: str | None) -> bool:
    """Whether ours can share an axis with the paper's value: metrics without an extractor (VQA) always, FID only
    when ours uses Inception features too."""
    return extractor is None and metric != FID_PATH or (extractor is not None and "inception" in extractor.lower())


def plot_bars(rows: Sequence[Row], spec: ReportSpec, out: Path, title: str) -> list[Path]:
    """``bars.png`` / ``bars.pdf``: each metric's final mean per group with 95% Student-t error bars (none with one
    seed), one panel per metric and feature extractor; when the spec names a paper table, the paper's value is a
    black diamond (on FID panels only when ours also uses Inception features)."""
    import numpy as np

    table = spec.paper()
    panels = _panels(rows, spec.metrics)
    if not panels:
        return []
    colors = _colors([r.group for r in rows])
    width = max(3.8, 0.42 * max(len(have) for _, _, have in panels) + 1.2)
    fig, axes = _figure(len(panels), panel_width=width, panel_height=3.6)
    for ax, (metric, extractor, have) in zip(axes, panels):
        x = np.arange(len(have))
        s = [r.metrics[metric] for r in have]
        mean = np.array([v.mean for v in s])
        err = np.array([[v.mean - v.ci_low, v.ci_high - v.mean] if v.n > 1 else [np.nan, np.nan] for v in s]).T
        ax.bar(x, mean, color=[colors[r.group] for r in have], alpha=0.85)
        ok = ~np.isnan(err[0])
        if ok.any():
            ax.errorbar(x[ok], mean[ok], yerr=err[:, ok], fmt="none", ecolor="black", capsize=3, linewidth=1)
        if table is not None and metric in table.columns and _comparable_to_paper(metric, extractor):
            paper = [(i, table.value(p, metric)) for i, r in enumerate(have)
                     if (p := table.lookup(r.group, r.labels, spec.paper_scale)) is not None]
            paper = [(i, v) for i, v in paper if v is not None]
            if paper:
                ax.scatter([i for i, _ in paper], [v for _, v in paper], marker="D", color="black", zorder=3,
                           s=18, label=f"paper (Table {table.name})")
        ax.set_xticks(x, [r.group for r in have], rotation=40, ha="right", fontsize="small")
        ax.set_title(_panel_title(metric, extractor))
        # no clipping: an interval reaching past 100% is what the seeds say and must stay visible
        _style_axis(ax, metric, extractor, clip=False)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:  # one legend below the panels, so that no bar is hidden behind it
        fig.legend(list(handles.values()), list(handles), fontsize="small", loc="outside lower center")
    _suptitle(fig, f"{title}: final scores (mean over seeds, 95% Student-t interval)")
    return _save(fig, out, "bars")


def plot_tsne(records: Sequence[Mapping[str, Any]], rows: Sequence[Row], out: Path) -> list[Path]:
    """``tsne.png`` / ``tsne.pdf`` (:func:`uvlm.eval.probe.plot_tsne`): per group, the t-SNE stored in the first
    finished seed's ``final.probe``; ``[]`` when no run carries one."""
    from uvlm.eval.probe import plot_tsne as draw

    results: dict[str, dict[str, Any]] = {}
    for r in records:
        probe = (r.get("final") or {}).get("probe") if r.get("status") == "done" else None
        if isinstance(probe, Mapping) and probe.get("tsne") is not None and probe.get("labels") is not None:
            results.setdefault(r["group"], dict(probe))
    order = [row.group for row in rows if row.group in results]
    if not order:
        return []
    return list(draw({g: results[g] for g in order}, out / "tsne.png"))


_CAPTIONS = {
    "curves": "Scores over training: mean over seeds per group, band: {band}.",
    "scaling": "Final scores against {x}: mean over seeds per {series}, band: {band}.",
    "transfer": "Final scores against {x}: mean over seeds per {series}, band: {band}.",
    "bars": "Final scores per group: mean over seeds, error bars: 95% Student-t interval{paper}.",
    "tsne": "t-SNE of the understanding tokens at the weather icon (first finished seed per group), coloured by "
            "weather; panel titles give that seed's linear-probe accuracy.",
}


# ------------------------------------------------------------------------------------------------- report


def report_markdown(recipe_name: str, rows: Sequence[Row], spec: ReportSpec,
                    figures: Mapping[str, Sequence[Path]]) -> str:
    """The text of ``report.md``."""
    title = spec.title or recipe_name
    n_done = sum(r.n_done for r in rows)
    n_failed = sum(len(r.failed) for r in rows)
    seeds = sorted({r.n_done for r in rows})
    lines = [f"# {title}", "",
             f"Recipe `{recipe_name}`: {len(rows)} groups, {n_done} finished runs "
             f"({'/'.join(map(str, seeds))} seeds per group), {n_failed} not finished.", ""]
    paper = paper_table_markdown(rows, spec)
    if paper:
        lines += [*paper, ""]
    marks = {m: " †" for r in rows for m in r.metrics if is_addition(m)}
    if any(pixel_decoded(r, FID_PATH) for r in rows):
        marks[FID_PATH] = " †"
    lines += ["## All metrics", "",
              "Each cell: mean ± sample std [95% Student-t interval] over the finished seeds; n/a: one seed only; "
              "-: not measured.", "", *metrics_table(rows, marks=marks)]
    notes = additions_notes(rows)
    if notes:
        lines += ["", "† not in the paper's tables:", "", *notes]
    failed = failed_lines(rows)
    if failed:
        lines += ["", "## Runs that did not finish", "", "Excluded from every statistic above.", "", *failed]
    if figures:
        lines += ["", "## Figures"]
        table = spec.paper()
        for kind, paths in figures.items():
            png = next(p for p in paths if p.suffix == ".png")
            pdf = next(p for p in paths if p.suffix == ".pdf")
            caption = _CAPTIONS[kind].format(
                band=_BAND_TEXT[spec.band], x=spec.x_key, series=spec.series_key,
                paper=(f", black diamonds: the paper's Table {table.name} (not on FID panels of other feature "
                       f"extractors)") if table is not None else "")
            lines += ["", f"![{kind}]({png.name})", "", f"{caption} ([PDF]({pdf.name}))"]
    return "\n".join(lines) + "\n"


def write_report(recipe_name: str, records: Sequence[Mapping[str, Any]], out_dir: str | Path,
                 spec: ReportSpec | Mapping[str, Any] | Any | None = None, **overrides: Any) -> list[Path]:
    """Write ``report.md`` and the spec's figures (PNG and PDF each) into ``out_dir``; return their paths,
    ``report.md`` first.

    ``spec`` says what to include: a :class:`ReportSpec` (default ``ReportSpec()``) or a recipe's ``[report]``
    settings (see :meth:`ReportSpec.from_recipe`); keyword ``overrides`` replace its fields
    (``write_report(name, records, out, table="A5", figures=("curves", "bars"))``). Runs whose status is not
    ``done`` are listed and left out of every statistic. Raises :class:`~uvlm.errors.UserError` for an empty sweep,
    an unknown spec field, table or figure kind, or runs of one group measured differently (see
    :func:`~uvlm.experiments.results.aggregate`).
    """
    names = {f.name for f in fields(ReportSpec)}
    unknown = sorted(set(overrides) - names)
    require(not unknown, f"unknown report option(s) {', '.join(unknown)}: use {', '.join(sorted(names))}")
    spec = replace(ReportSpec.coerce(spec), **overrides)
    if not records:
        raise UserError(f"no run records for {recipe_name!r}: run the sweep first")
    rows = aggregate(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = spec.title or recipe_name
    figures: dict[str, list[Path]] = {}
    for kind in spec.figures:
        if kind == "curves":
            paths = plot_curves(records, rows, spec, out, title)
        elif kind in LABEL_AXIS_KINDS:
            paths = plot_against_label(records, rows, spec, out, kind, title)
        elif kind == "tsne":
            paths = plot_tsne(records, rows, out)
        else:
            paths = plot_bars(rows, spec, out, title)
        if paths:
            figures[kind] = paths
    report = out / "report.md"
    write_text_atomic(report, report_markdown(recipe_name, rows, spec, figures))
    return [report, *(p for paths in figures.values() for p in paths)]


__all__ = ["ADDITIONS", "BANDS", "FIGURE_KINDS", "LABEL_AXIS_KINDS", "ReportSpec", "axis_label", "is_addition",
           "metric_label", "paper_table_markdown", "pixel_decoded", "plot_against_label", "plot_bars", "plot_curves",
           "plot_tsne", "report_markdown", "write_report"]
