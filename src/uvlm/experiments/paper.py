"""The published numbers of "Are Unified VLMs Necessary" (arXiv 2505.23043), for side-by-side reports.

VQA scores in percent (time, weather, position, battery, total); FID where the paper gives one. The plain dicts
(``TABLE_A3``, ``TABLE_A5``, ``TABLE_A6``, ``TABLE_A4_ROWS``) are the tables as printed in appendix E; Table 1 of the
main text (the affine distortion) is, for SmartWatch, exactly the total VQA score and FID of Table A3's plain and
starred rows, so it is built as a view of A3 here (its CelebA columns are not reproduced: uvlm has no CelebA).

:class:`PaperTable` wraps a table for reports: its columns are metric paths of a run record (``vqa.time``, ...,
``fid.fid``) and its rows are found from a run's labels (see :meth:`PaperTable.lookup`). Get one with
:func:`paper_table` (``"1"``, ``"A3"``, ``"A4"``, ``"A5"``, ``"A6"``).

The paper's FID is computed as in Heusel et al. (2017), whose standard feature network is Inception-v3; uvlm's FID
uses other feature extractors (named in every record), so only trends, not values, are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from uvlm.errors import UserError

COLUMNS = ("time", "weather", "position", "battery", "total")

#: Table A3: mixed vs task-specific (SmartWatch, default data). FID in the last entry (None: not reported).
TABLE_A3: dict[str, tuple[float | None, ...]] = {
    "SigLIP_u": (49.7, 100.0, 93.4, 56.3, 76.6, None),
    "SigLIP-VQ": (66.5, 100.0, 100.0, 69.2, 85.6, 198.2),
    "SigLIP-SigLIP": (95.8, 100.0, 100.0, 98.4, 98.7, None),
    "VQ_u": (50.8, 100.0, 100.0, 61.6, 80.5, None),
    "VQ_g": (None, None, None, None, None, 210.9),
    "VQ-SigLIP": (45.8, 100.0, 100.0, 81.2, 85.5, None),
    "VQ-VQ": (52.7, 100.0, 100.0, 96.8, 89.3, 190.2),
    "SigLIP*_u": (50.4, 100.0, 98.8, 49.5, 78.2, None),
    "SigLIP*-SigLIP": (54.3, 100.0, 100.0, 98.9, 91.3, None),
    "VQ*_u": (52.4, 100.0, 97.9, 56.9, 78.9, None),
    "VQ*-VQ": (60.0, 100.0, 100.0, 80.6, 85.1, 195.8),
}

#: Table A5: weather-biased training data.
TABLE_A5: dict[str, tuple[float, ...]] = {
    "SigLIP_u": (52.9, 28.6, 100.0, 99.7, 78.7),
    "SigLIP-SigLIP": (81.7, 100.0, 100.0, 97.2, 95.9),
    "SigLIP-SigLIP-D": (99.6, 100.0, 100.0, 99.9, 99.9),
    "SigLIP-VQ": (52.2, 100.0, 100.0, 98.6, 90.8),
    "VQ_u": (50.9, 54.3, 81.3, 77.5, 70.0),
    "VQ-VQ": (49.1, 97.1, 100.0, 94.4, 88.7),
    "VQ-VQ-D": (50.7, 100.0, 100.0, 97.4, 90.3),
    "VQ-SigLIP": (52.8, 100.0, 100.0, 80.6, 86.6),
}

#: Table A6: battery-biased training data.
TABLE_A6: dict[str, tuple[float, ...]] = {
    "SigLIP_u": (55.7, 100.0, 100.0, 70.3, 84.7),
    "SigLIP-SigLIP": (96.6, 100.0, 100.0, 98.0, 98.9),
    "SigLIP-SigLIP-D": (89.3, 100.0, 100.0, 97.2, 97.4),
    "SigLIP-VQ": (53.6, 100.0, 100.0, 95.8, 90.4),
    "VQ_u": (50.1, 100.0, 100.0, 61.3, 81.5),
    "VQ-VQ": (49.8, 100.0, 100.0, 69.4, 83.4),
    "VQ-VQ-D": (48.8, 100.0, 100.0, 74.5, 84.4),
    "VQ-SigLIP": (46.8, 100.0, 86.3, 67.1, 76.7),
}

#: Table A4: data scaling (Figure 4), as printed: (model, understanding samples, generation samples, time, weather,
#: position, battery, total, FID). The 120K/60K rows are printed twice (once per block) with the same numbers; their
#: FID (192.2 for VQ-VQ) differs from Table A3's 190.2 for the same setting, as printed. The 0K-understanding rows
#: carry only the generation-only FID, the 0K-generation rows the understanding-only scores.
TABLE_A4_ROWS: tuple[tuple[Any, ...], ...] = (
    ("VQ-VQ", 0, 60_000, None, None, None, None, None, 210.9),
    ("VQ-VQ", 120_000, 60_000, 52.7, 100.0, 100.0, 96.8, 89.3, 192.2),
    ("VQ-VQ", 180_000, 60_000, 56.0, 100.0, 100.0, 97.5, 90.2, 188.1),
    ("VQ-VQ", 240_000, 60_000, 73.7, 100.0, 100.0, 97.9, 94.0, 165.1),
    ("VQ-VQ", 300_000, 60_000, 62.8, 100.0, 100.0, 98.4, 91.8, 152.0),
    ("VQ-VQ", 120_000, 0, 50.8, 100.0, 100.0, 61.6, 80.5, None),
    ("VQ-VQ", 120_000, 60_000, 52.7, 100.0, 100.0, 96.8, 89.3, 192.2),
    ("VQ-VQ", 120_000, 90_000, 48.3, 100.0, 100.0, 96.2, 88.3, 180.8),
    ("VQ-VQ", 120_000, 120_000, 48.3, 100.0, 100.0, 80.7, 84.5, 171.4),
    ("VQ-VQ", 120_000, 180_000, 60.0, 100.0, 100.0, 98.1, 89.3, 116.4),
    ("SigLIP-VQ", 0, 60_000, None, None, None, None, None, 210.9),
    ("SigLIP-VQ", 120_000, 60_000, 66.5, 100.0, 100.0, 69.2, 85.6, 198.2),
    ("SigLIP-VQ", 180_000, 60_000, 80.4, 100.0, 100.0, 100.0, 95.9, 183.0),
    ("SigLIP-VQ", 240_000, 60_000, 54.9, 100.0, 100.0, 100.0, 90.6, 162.4),
    ("SigLIP-VQ", 300_000, 60_000, 97.0, 100.0, 100.0, 100.0, 99.3, 157.0),
    ("SigLIP-VQ", 120_000, 0, 49.7, 100.0, 93.4, 56.3, 76.6, None),
    ("SigLIP-VQ", 120_000, 60_000, 66.5, 100.0, 100.0, 69.2, 85.6, 198.2),
    ("SigLIP-VQ", 120_000, 90_000, 50.8, 100.0, 100.0, 100.0, 89.7, 156.5),
    ("SigLIP-VQ", 120_000, 120_000, 55.0, 100.0, 100.0, 100.0, 90.6, 165.6),
    ("SigLIP-VQ", 120_000, 180_000, 96.3, 100.0, 100.0, 100.0, 99.2, 131.8),
)

#: Table 1 (SmartWatch columns): (model, affine) -> the Table A3 row holding the same numbers. Table 1 prints the
#: total VQA score and the FID; the generation-only VQ_g has no understanding adapter to distort, and Table 1 prints
#: its FID unchanged (210.9) with the transformation.
TABLE_1_VIEW: dict[tuple[str, bool], str] = {
    ("SigLIP_u", False): "SigLIP_u", ("SigLIP_u", True): "SigLIP*_u",
    ("VQ_u", False): "VQ_u", ("VQ_u", True): "VQ*_u",
    ("VQ_g", False): "VQ_g", ("VQ_g", True): "VQ_g",
    ("SigLIP-SigLIP", False): "SigLIP-SigLIP", ("SigLIP-SigLIP", True): "SigLIP*-SigLIP",
    ("VQ-VQ", False): "VQ-VQ", ("VQ-VQ", True): "VQ*-VQ",
}

#: Table 1 (SmartWatch): (model, affine) -> (total VQA score, FID), from Table A3.
TABLE_1: dict[tuple[str, bool], tuple[float | None, float | None]] = {
    key: (TABLE_A3[name][4], TABLE_A3[name][5]) for key, name in TABLE_1_VIEW.items()
}

#: Metric paths of the paper's value columns, in the order of :data:`COLUMNS`.
VQA_PATHS = tuple(f"vqa.{c}" for c in COLUMNS)
#: Metric path of the FID column.
FID_PATH = "fid.fid"
#: What the paper's FID is computed with (for column headers).
PAPER_FID_EXTRACTOR = "Inception-v3"


@dataclass(frozen=True)
class PaperRow:
    """One printed row of a paper table."""

    name: str
    """The model as the paper prints it (``SigLIP*_u``, ``VQ-VQ (und 120K, gen 60K)``)."""
    key: tuple[Any, ...]
    """Values of the table's :attr:`PaperTable.key_labels`, in order."""
    values: tuple[float | None, ...]
    """One value per :attr:`PaperTable.columns` (``None``: printed as ``-``)."""


def _same(a: Any, b: Any) -> bool:
    """Label equality: booleans only equal booleans, numbers compare to a relative 1e-6."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


@dataclass(frozen=True)
class PaperTable:
    """A paper table whose rows can be found from a run's labels."""

    name: str
    """The paper's name for it: ``1``, ``A3``, ..."""
    caption: str
    """What the table shows."""
    columns: tuple[str, ...]
    """Metric paths of the value columns (``vqa.time``, ..., ``fid.fid``)."""
    key_labels: tuple[str, ...]
    """Run labels that pick a row, in key order. ``variant`` falls back to the run's group name."""
    rows: tuple[PaperRow, ...]
    """The printed rows, in the paper's order (exact duplicates dropped)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Key label values assumed when a run does not carry that label (the paper's fixed setting)."""
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Other run label names accepted for a key label (``understanding`` may also come as ``understanding_samples``)."""
    not_the_paper: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: {"alpha": (0,)})
    """Run label values of a condition the paper never ran, whose runs have no paper row whatever their variant: by
    default ``alpha = 0`` (a unified model with no generation gradient, a uvlm control); the biased-data tables add
    ``bias = "none"`` (the unbiased control)."""

    def _label(self, labels: Mapping[str, Any], key: str) -> tuple[str | None, Any]:
        for name in (key, *self.aliases.get(key, ())):
            if name in labels:
                return name, labels[name]
        return None, None

    def key_for(self, group: str, labels: Mapping[str, Any], scale: Mapping[str, float] | None = None) -> tuple:
        """The row key of a run: its labels in :attr:`key_labels` order (or an alias, else the default), numeric
        labels named in ``scale`` (by the run's label name or the key label) multiplied by their factor, to map a
        sweep labelled in its own sample counts onto the paper's. A variant name with ``*`` (the
        paper's mark for the affine distortion) means ``affine = True`` when ``affine`` is a key label."""
        scale = scale or {}
        found = {k: self._label(labels, k) for k in self.key_labels}
        values = {k: v for k, (name, v) in found.items() if name is not None}
        variant = str(labels.get("variant", group))
        if "affine" in self.key_labels and "*" in variant:
            variant = variant.replace("*", "")
            values.setdefault("affine", True)
        values["variant"] = variant
        key = []
        for k in self.key_labels:
            v = values.get(k, self.defaults.get(k))
            name = found[k][0]
            factor = scale.get(name, scale.get(k)) if name is not None else None
            if factor is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = v * float(factor)
            key.append(v)
        return tuple(key)

    def lookup(self, group: str, labels: Mapping[str, Any], scale: Mapping[str, float] | None = None
               ) -> PaperRow | None:
        """The paper row of a run (see :meth:`key_for`), or ``None`` when the paper has none."""
        if any(k in labels and any(_same(labels[k], v) for v in vs) for k, vs in self.not_the_paper.items()):
            return None
        key = self.key_for(group, labels, scale)
        for row in self.rows:
            if len(row.key) == len(key) and all(_same(a, b) for a, b in zip(row.key, key)):
                return row
        return None

    def value(self, row: PaperRow, metric: str) -> float | None:
        """The printed value of ``row`` in the column of ``metric`` (``None``: not printed or no such column)."""
        return row.values[self.columns.index(metric)] if metric in self.columns else None


def _k(n: int) -> str:
    return f"{n // 1000}K"


def _unique(rows: list[PaperRow]) -> tuple[PaperRow, ...]:
    seen: dict[tuple, PaperRow] = {}
    for r in rows:
        if r.key in seen:
            if seen[r.key].values != r.values:
                raise AssertionError(f"paper rows disagree for {r.key}")
            continue
        seen[r.key] = r
    return tuple(seen.values())


def _split_star(name: str) -> tuple[str, bool]:
    return name.replace("*", ""), "*" in name


PAPER_TABLES: dict[str, PaperTable] = {
    "1": PaperTable(
        "1", "Effect of the affine transformation (SmartWatch columns: total VQA score and FID)",
        ("vqa.total", FID_PATH), ("variant", "affine"),
        tuple(PaperRow(f"{name} {'w-Affine' if affine else 'w/o-Affine'}", (name, affine), TABLE_1[(name, affine)])
              for (name, affine) in TABLE_1_VIEW),
        {"affine": False}),
    "A3": PaperTable(
        "A3", "Unified VLMs vs understanding-only (_u) and generation-only (_g) models; * = affine transformation",
        VQA_PATHS + (FID_PATH,), ("variant", "affine"),
        tuple(PaperRow(name, _split_star(name), values) for name, values in TABLE_A3.items()),
        {"affine": False}),
    "A4": PaperTable(
        "A4", "Unified VLMs along the increase of understanding or generation data",
        VQA_PATHS + (FID_PATH,), ("variant", "understanding", "generation"),
        _unique([PaperRow(f"{r[0]} (und {_k(r[1])}, gen {_k(r[2])})", (r[0], r[1], r[2]), tuple(r[3:]))
                 for r in TABLE_A4_ROWS]),
        {"understanding": 120_000, "generation": 60_000},
        {"understanding": ("understanding_samples",), "generation": ("generation_samples",)}),
    "A5": PaperTable(
        "A5", "Unified VLMs trained on weather-biased understanding data", VQA_PATHS, ("variant",),
        tuple(PaperRow(name, (name,), values) for name, values in TABLE_A5.items()),
        not_the_paper={"alpha": (0,), "bias": ("none",)}),
    "A6": PaperTable(
        "A6", "Unified VLMs trained on battery-biased understanding data", VQA_PATHS, ("variant",),
        tuple(PaperRow(name, (name,), values) for name, values in TABLE_A6.items()),
        not_the_paper={"alpha": (0,), "bias": ("none",)}),
}


def paper_table(name: str) -> PaperTable:
    """The paper table called ``name`` (``"A5"``, ``"Table A5"``, ``"1"``, case-insensitive)."""
    key = str(name).strip().upper().removeprefix("TABLE").strip()
    if key not in PAPER_TABLES:
        raise UserError(f"unknown paper table {name!r}: use one of {', '.join(PAPER_TABLES)}")
    return PAPER_TABLES[key]


__all__ = ["COLUMNS", "FID_PATH", "PAPER_FID_EXTRACTOR", "PAPER_TABLES", "PaperRow", "PaperTable", "TABLE_1",
           "TABLE_1_VIEW", "TABLE_A3", "TABLE_A4_ROWS", "TABLE_A5", "TABLE_A6", "VQA_PATHS", "paper_table"]
