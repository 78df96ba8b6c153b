"""Export a split folder to the LLaVA JSON layout, and read such an export back.

Layout (one JSON file per task, so a training mix can pick tasks by file)::

    OUT/
      export.json          what was exported: source split config and manifest checksums, counts, files
      vqa.json             [record, ...]   (only the tasks with samples)
      caption.json
      generation.json
      images/000123.png    each image once, named by image_index (VQA, caption and generation sample i share image i
                           in training splits); the PNG bytes are the split's own

One record::

    {"id": "train-vqa-00000123", "image": "images/000123.png", "task": "vqa",
     "conversations": [{"from": "human", "value": "<image>\\nWhat time does the watch show?"},
                       {"from": "gpt", "value": "02:07:00"}],
     "attributes": {"hour": 2, "minute": 7, "second": 0, "weather": "sunny", ...},
     "index": 123, "image_index": 123, "turn_attributes": ["time"], "mentioned": []}

Understanding tasks put ``<image>`` at the start of the first human turn; for generation the human turn is the
instruction and the gpt turn is ``<image>``. ``index``, ``image_index``, ``turn_attributes`` and ``mentioned`` are
extra keys that LLaVA loaders ignore; they let :func:`read_llava` rebuild the exact samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from uvlm.data import texts
from uvlm.data.attributes import WatchAttributes
from uvlm.data.config import TASKS
from uvlm.data.smartwatch import Sample
from uvlm.data.datasets import DEFAULT_DATASET, dataset_class
from uvlm.data.storage import check_out, decode_png, manifest_dataset, read_rows, row_attributes, verify
from uvlm.errors import UserError, require
from uvlm.io import atomic_path

FORMAT = "uvlm-llava"
META = "export.json"
IMAGE_DIR = "images"

_ATTRIBUTE_KEYS = ("hour", "minute", "second", "weather", "weather_position", "battery", "battery_position",
                   "face_color")


def _image_name(image_index: int, width: int) -> str:
    return f"{IMAGE_DIR}/{image_index:0{width}d}.png"


def export_llava(split_path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> dict[str, Any]:
    """Write the LLaVA export of the split folder ``split_path`` to ``out`` (layout in the module doc).

    Verifies the split's checksums first. ``out`` must be absent or empty unless ``overwrite`` (and then it must be an
    earlier export); it is replaced only once the export is complete. Memory does not grow with the split size: JSON
    records are streamed to disk. Returns the ``export.json`` metadata.
    """
    split_path, out = Path(split_path), Path(out)
    manifest = verify(split_path)
    check_out(out, overwrite, META, "LLaVA export")
    width = max(6, len(str(max(int(manifest.get("n_images", 0)) - 1, 0))))
    dataset = manifest_dataset(manifest)
    if dataset == DEFAULT_DATASET:
        def truth(row: dict[str, Any]) -> dict[str, Any]:
            return {"attributes": {key: row[key] for key in _ATTRIBUTE_KEYS}}
    else:  # the dataset says what a record keeps (CelebA: the source file and the attributes)
        cls = dataset_class(dataset)
        config = cls.config_from_dict(manifest["config"])

        def truth(row: dict[str, Any]) -> dict[str, Any]:
            return cls.export_fields(row, config)
    files: dict[str, str] = {}
    with atomic_path(out) as tmp:
        (tmp / IMAGE_DIR).mkdir(parents=True)
        n_images = 0
        for task in TASKS:
            if manifest["counts"].get(task, 0) == 0:
                continue
            files[task] = f"{task}.json"
            with open(tmp / files[task], "w", encoding="utf-8") as f:
                f.write("[\n")
                for k, row in enumerate(read_rows(split_path, task, verify=False)):
                    name = _image_name(int(row["image_index"]), width)
                    if not (tmp / name).exists():
                        (tmp / name).write_bytes(row["image"]["bytes"])
                        n_images += 1
                    record = {
                        "id": row["id"],
                        "image": name,
                        "conversations": row["conversations"],
                        "task": task,
                        **truth(row),
                        "index": row["index"],
                        "image_index": row["image_index"],
                        "turn_attributes": row["turn_attributes"],
                        "mentioned": row["mentioned"],
                    }
                    f.write((",\n" if k else "") + json.dumps(record, ensure_ascii=False))
                f.write("\n]\n")
        meta = {} if dataset == DEFAULT_DATASET else {"dataset": dataset}
        meta |= {
            "format": FORMAT,
            "source": {"config": manifest["config"], "shards": manifest["shards"], "versions": manifest["versions"]},
            "counts": {t: manifest["counts"].get(t, 0) for t in TASKS},
            "files": files,
            "image_dir": IMAGE_DIR,
            "n_images": n_images,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return meta


def _record_to_sample(folder: Path, rec: dict[str, Any], with_image: bool) -> Sample:
    task = rec["task"]
    conv = rec["conversations"]
    require(len(conv) >= 2 and len(conv) % 2 == 0, f"record {rec['id']} has an odd or empty conversation")
    if task == "generation":
        turns = [texts.Turn(conv[0]["value"], "", "generation")]
    else:
        attrs = rec.get("turn_attributes") or ["caption"] * (len(conv) // 2)
        turns = []
        for k in range(0, len(conv), 2):
            q = conv[k]["value"]
            if k == 0 and q.startswith(texts.IMAGE_TOKEN):
                q = q[len(texts.IMAGE_TOKEN):].lstrip("\n")
            turns.append(texts.Turn(q, conv[k + 1]["value"], attrs[k // 2]))
    image = None
    if with_image:
        f = folder / rec["image"]
        require(f.is_file(), f"image {f} of record {rec['id']} is missing: export again with uvlm data export-llava")
        try:
            image = decode_png(f.read_bytes())
        except (OSError, SyntaxError, ValueError) as e:
            raise UserError(f"image {f} does not decode ({e}): export again with uvlm data export-llava") from None
    attributes: WatchAttributes = row_attributes(rec["attributes"])
    return Sample(task, rec["id"], int(rec["index"]), int(rec["image_index"]), attributes, turns,
                  tuple(rec.get("mentioned", ())), image)


def iter_llava(folder: str | os.PathLike, task: str | None = None, with_images: bool = True) -> Iterator[Sample]:
    """Yield the samples of an export (one task, or all in task order)."""
    folder = Path(folder)
    meta_path = folder / META
    require(meta_path.is_file(),
            f"{folder} is not a uvlm LLaVA export (no {META}): make one with uvlm data export-llava SPLIT {folder}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"unreadable {meta_path} ({e}): export again with uvlm data export-llava --overwrite") from None
    require(isinstance(meta, dict) and meta.get("format") == FORMAT,
            f"{meta_path} is not a uvlm LLaVA export: export again with uvlm data export-llava --overwrite")
    dataset = meta.get("dataset", DEFAULT_DATASET)
    require(dataset == DEFAULT_DATASET, f"{folder} is a {dataset} export: reading it back into samples is supported "
                                        f"for SmartWatch exports only so far; read the JSON records directly")
    tasks = TASKS if task is None else (task,)
    require(task is None or task in TASKS, f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    for t in tasks:
        name = meta["files"].get(t)
        if name is None:
            continue
        f = folder / name
        require(f.is_file(), f"{f} is missing: export again with uvlm data export-llava --overwrite")
        try:
            records = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{f} is not valid JSON ({e}): export again with uvlm data export-llava --overwrite") \
                from None
        require(isinstance(records, list), f"{f} does not hold a list of records: export again with "
                                           f"uvlm data export-llava --overwrite")
        for rec in records:
            try:
                yield _record_to_sample(folder, rec, with_images)
            except (KeyError, TypeError, IndexError) as e:
                raise UserError(f"{f}: malformed record ({type(e).__name__}: {e}): export again with "
                                f"uvlm data export-llava --overwrite") from None


def read_llava(folder: str | os.PathLike, task: str | None = None, with_images: bool = True) -> list[Sample]:
    """The samples of an export, equal to those of the split it came from (images as PIL RGB)."""
    return list(iter_llava(folder, task, with_images))


__all__ = ["export_llava", "read_llava", "iter_llava"]
