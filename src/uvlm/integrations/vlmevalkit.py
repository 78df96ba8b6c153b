"""A SmartWatch split's VQA questions as a VLMEvalKit benchmark TSV.

VLMEvalKit reads a benchmark it does not know from ``$LMUData/{NAME}.tsv`` as a custom VQA dataset: one row per
question with ``index``, ``image`` (the image file's bytes in base64), ``question`` and ``answer``. The TSV written
here has those four columns first, then:

- ``id``: the question id of uvlm's prediction files (``test-vqa-00000012.0``), so answers map back to questions;
- ``category``: the attribute asked (``time``, ``weather``, ``battery``, ``weather_position``,
  ``battery_position``), the column VLMEvalKit splits its report by.

``image`` holds the split's own PNG bytes, so decoding it gives exactly the split's pixels. Rows follow the split's
order (sample, then turn); ``index`` counts them from 0. Fields never contain tabs or newlines (questions and answers
are single-line by construction; this is checked), so the file is plain tab-separated text without quoting.

Score a model's answers with uvlm's exact score through :func:`predictions_from_table` (a VLMEvalKit result table
keeps the input columns and adds ``prediction``) and ``uvlm score``.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from pathlib import Path
from typing import Any, Iterator

from uvlm.errors import UserError, require

COLUMNS: tuple[str, ...] = ("index", "image", "question", "answer", "id", "category")


def _rows(split_dir: Path) -> Iterator[dict[str, Any]]:
    from uvlm.data.storage import read_rows

    index = 0
    for row in read_rows(split_dir, "vqa"):
        png = base64.b64encode(row["image"]["bytes"]).decode("ascii")
        for k, (q, a, attribute) in enumerate(zip(row["questions"], row["answers"], row["turn_attributes"])):
            for what, text in (("question", q), ("answer", a)):
                require("\t" not in text and "\n" not in text and "\r" not in text,
                        f"the {what} of {row['id']} turn {k} contains a tab or line break: it cannot go into a TSV "
                        f"field; regenerate the split")
            yield {"index": index, "image": png, "question": q, "answer": a, "id": f"{row['id']}.{k}",
                   "category": attribute}
            index += 1


def export_tsv(split_dir: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the VQA questions of the split folder ``split_dir`` to the TSV file ``out`` (atomically); returns the
    number of questions. The split's checksums are verified first."""
    from uvlm.data.storage import read_manifest, verify
    from uvlm.io import atomic_path

    split_dir, out = Path(split_dir), Path(out)
    manifest = read_manifest(split_dir)
    require(int(manifest["counts"].get("vqa", 0)) > 0,
            f"the split in {str(split_dir)!r} has no VQA samples: generate a test split with uvlm data generate DIR "
            f"--split test")
    require(out.suffix.lower() == ".tsv", f"output {str(out)!r} must end in .tsv (VLMEvalKit reads "
                                          f"$LMUData/NAME.tsv)")
    require(not out.is_dir(), f"output {str(out)!r} is a folder: give a file path ending in .tsv")
    verify(split_dir)
    n = 0
    with atomic_path(out, suffix=".tsv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(COLUMNS) + "\n")
            for row in _rows(split_dir):
                f.write("\t".join(str(row[c]) for c in COLUMNS) + "\n")
                n += 1
    return n


def _read_table(path: Path) -> list[dict[str, str]]:
    require(path.is_file(), f"table {str(path)!r} not found: pass a TSV written by uvlm harness vlmevalkit, or "
                            f"VLMEvalKit's result table for it")
    csv.field_size_limit(1 << 30)  # base64 images are long fields
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"table {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}): pass a TSV "
                        f"file") from None
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    rows = list(reader)
    return rows


def read_tsv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a TSV written by :func:`export_tsv`: ``index`` as int, ``image`` decoded to a PIL RGB image, the
    other columns as text."""
    from uvlm.data.storage import decode_png

    path = Path(path)
    rows = _read_table(path)
    require(rows, f"table {str(path)!r} has no rows: export it again with uvlm harness vlmevalkit")
    missing = [c for c in COLUMNS if c not in rows[0]]
    require(not missing, f"table {str(path)!r} has no column(s) {', '.join(missing)}: export it again with uvlm "
                         f"harness vlmevalkit")
    out = []
    for n, row in enumerate(rows, start=2):
        try:
            image = decode_png(base64.b64decode(row["image"], validate=True))
            index = int(row["index"])
        except Exception as e:  # bad base64, bad PNG or a bad index
            raise UserError(f"{path}: line {n} does not decode ({type(e).__name__}): export it again with uvlm "
                            f"harness vlmevalkit") from None
        out.append({**row, "index": index, "image": image})
    return out


def predictions_from_table(path: str | os.PathLike) -> dict[str, str]:
    """``{question id: prediction}`` from a table with ``id`` and ``prediction`` columns (a VLMEvalKit result table
    saved as TSV or CSV keeps the ``id`` column of the exported TSV); write them with
    :func:`uvlm.data.scoring.write_predictions` and score with ``uvlm score``."""
    path = Path(path)
    rows = _read_table(path)
    require(rows and "id" in rows[0] and "prediction" in rows[0],
            f"table {str(path)!r} needs 'id' and 'prediction' columns: pass VLMEvalKit's result table (TSV or CSV) "
            f"for a TSV written by uvlm harness vlmevalkit")
    out: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):
        qid = row["id"]
        require(qid not in out, f"{path}: line {n} repeats id {qid!r}: keep one answer per question")
        out[qid] = row["prediction"] or ""
    return out


__all__ = ["COLUMNS", "export_tsv", "read_tsv", "predictions_from_table"]
