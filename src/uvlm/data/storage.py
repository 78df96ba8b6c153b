"""Dataset splits on disk: sharded Parquet that ``datasets`` loads, with a manifest of checksums.

SmartWatch's layout is below. Another registered dataset stores the same shared columns (``id``, ``task``,
``index``, ``image_index``, ``image``, then the texts) around its own truth columns (its class's ``row_columns``;
CelebA: ``source_image`` and one bool per attribute), and its manifest names it (``"dataset": "celeba"``; absent for
SmartWatch).

Layout of a materialized split folder::

    OUT/
      manifest.json                         split config, counts, library versions, per-shard sha256 and rows
      README.md                             dataset card; its YAML ``configs:`` serves ``datasets.load_dataset``
      vqa/shard-00000-of-00012.parquet      rows 0..4999 of the VQA task
      caption/...                           (a task with 0 samples has no folder)
      generation/...

One row is one self-contained :class:`~uvlm.data.smartwatch.Sample`:

==================  ====================================  =====================================================
column              Arrow type                            meaning
==================  ====================================  =====================================================
id                  string                                ``{split}-{task}-{index:08d}``
task                string                                ``vqa``, ``caption`` or ``generation``
index               int64                                 position within the task
image_index         int64                                 which image of the split the sample shows
image               struct<bytes: binary, path: string>   PNG bytes (the ``datasets.Image`` layout; path is null)
hour                int8                                  0..12
minute, second      int8                                  0..59
weather             string                                ``sunny`` / ``cloudy`` / ``raining``
weather_position    string                                a corner, e.g. ``top-left``
battery             int8                                  0..100
battery_position    string                                a corner (never the weather's)
face_color          fixed_size_list<uint8>[3]             RGB of the watch face
conversations       list<struct<from, value>>             :meth:`Sample.conversations` (LLaVA turns)
turn_attributes     list<string>                          per turn what it asks (``caption`` / ``generation``)
mentioned           list<string>                          caption / generation: the attributes the text states
questions, answers  list<string>                          the turns' texts (generation answers are ``""``)
==================  ====================================  =====================================================

The Parquet schema carries the ``datasets`` features metadata, so ``datasets`` decodes ``image`` to a PIL image.

Sample ``i`` of a task depends only on the split config and ``i``, and PNG encoding is fixed (``compress_level=6``,
no optimisation), so the shard bytes are the same for any worker count or completion order. Everything is written
into a temporary folder beside ``OUT`` and renamed at the end: an error or Ctrl-C leaves nothing at ``OUT``.

    >>> from uvlm.data import SplitConfig
    >>> from uvlm.data.storage import materialize, read_samples
    >>> materialize(SplitConfig.train(n_vqa=20, n_caption=20, n_generation=20), "/tmp/sw", overwrite=True)
    >>> next(read_samples("/tmp/sw", "vqa")).turns[0].answer
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import PIL
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import uvlm
from uvlm.data import texts
from uvlm.data.attributes import WatchAttributes
from uvlm.data.config import TASKS, SplitConfig
from uvlm.data.datasets import DEFAULT_DATASET, dataset_class, dataset_of_config, open_dataset
from uvlm.data.smartwatch import Sample
from uvlm.errors import UserError, require
from uvlm.io import atomic_path, sha256_file

#: Bumped whenever the folder layout or the row schema changes incompatibly.
SCHEMA_VERSION = 1
#: ``manifest.json`` ``format`` value that marks a folder as a uvlm split.
FORMAT = "uvlm-smartwatch-split"
MANIFEST = "manifest.json"
#: Fixed PNG settings: part of the byte-determinism contract.
PNG_OPTIONS: dict[str, Any] = {"optimize": False, "compress_level": 6}
#: Rows per Parquet row group (and per in-memory batch while writing or reading).
ROW_GROUP_SIZE = 256
PARQUET_COMPRESSION = "zstd"

#: Every column, in file order.
COLUMNS: tuple[str, ...] = (
    "id", "task", "index", "image_index", "image", "hour", "minute", "second", "weather", "weather_position",
    "battery", "battery_position", "face_color", "conversations", "turn_attributes", "mentioned", "questions",
    "answers",
)


def _regen_hint(path: Path) -> str:
    return f"regenerate with uvlm data generate {path} ... --overwrite"


def hf_features():
    """The rows' ``datasets.Features`` (built with ``datasets`` itself, so its loaders understand the metadata)."""
    import datasets

    s = datasets.Value("string")
    return datasets.Features({
        "id": s,
        "task": s,
        "index": datasets.Value("int64"),
        "image_index": datasets.Value("int64"),
        "image": datasets.Image(),
        "hour": datasets.Value("int8"),
        "minute": datasets.Value("int8"),
        "second": datasets.Value("int8"),
        "weather": s,
        "weather_position": s,
        "battery": datasets.Value("int8"),
        "battery_position": s,
        "face_color": datasets.Sequence(datasets.Value("uint8"), length=3),
        "conversations": [{"from": s, "value": s}],
        "turn_attributes": [s],
        "mentioned": [s],
        "questions": [s],
        "answers": [s],
    })


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a shard, with the ``huggingface`` features metadata."""
    schema = hf_features().arrow_schema
    assert tuple(schema.names) == COLUMNS, schema.names
    return schema


# ----- other datasets' rows: the shared columns around the dataset's own ---------------------------------------------
_SHARED_HEAD = ("id", "task", "index", "image_index", "image")
_SHARED_TAIL = ("conversations", "turn_attributes", "mentioned", "questions", "answers")


def _check_storable(dataset: str) -> None:
    cls = dataset_class(dataset)
    require(dataset == DEFAULT_DATASET or hasattr(cls, "row_columns"),
            f"dataset {dataset!r} cannot be stored as a split folder yet: it has no row layout (row_columns)")


def columns_of(dataset: str, config: Any) -> tuple[str, ...]:
    """The columns of a stored row of ``dataset`` (SmartWatch: :data:`COLUMNS`)."""
    if dataset == DEFAULT_DATASET:
        return COLUMNS
    _check_storable(dataset)
    return (*_SHARED_HEAD, *dataset_class(dataset).row_columns(config), *_SHARED_TAIL)


def _features_of(dataset: str, config: Any):
    if dataset == DEFAULT_DATASET:
        return hf_features()
    import datasets

    s = datasets.Value("string")
    own = {k: datasets.Value(t) for k, t in dataset_class(dataset).row_columns(config).items()}
    return datasets.Features({"id": s, "task": s, "index": datasets.Value("int64"),
                              "image_index": datasets.Value("int64"), "image": datasets.Image(), **own,
                              "conversations": [{"from": s, "value": s}], "turn_attributes": [s], "mentioned": [s],
                              "questions": [s], "answers": [s]})


def _schema_of(dataset: str, config: Any) -> pa.Schema:
    schema = _features_of(dataset, config).arrow_schema
    assert tuple(schema.names) == columns_of(dataset, config), schema.names
    return schema


def _to_row(dataset: str, sample: Any) -> dict[str, Any]:
    if dataset == DEFAULT_DATASET:
        return sample_to_row(sample)
    require(sample.image is not None, f"sample {sample.id} has no image to store")
    return {"id": sample.id, "task": sample.task, "index": sample.index, "image_index": sample.image_index,
            "image": {"bytes": encode_png(sample.image), "path": None}, **dataset_class(dataset).row_values(sample),
            "conversations": sample.conversations(), "turn_attributes": [t.attribute for t in sample.turns],
            "mentioned": list(sample.mentioned), "questions": [t.question for t in sample.turns],
            "answers": [t.answer for t in sample.turns]}


def _from_row(dataset: str, config: Any, row: dict[str, Any], with_image: bool) -> Any:
    if dataset == DEFAULT_DATASET:
        return row_to_sample(row, with_image=with_image)
    turns = [texts.Turn(q, a, t) for q, a, t in zip(row["questions"], row["answers"], row["turn_attributes"])]
    image = decode_png(row["image"]["bytes"]) if with_image else None
    return dataset_class(dataset).sample_from_row(row, config, turns, image)


def manifest_dataset(manifest: dict[str, Any]) -> str:
    """The registered dataset a split folder holds (``smartwatch`` when its manifest names none)."""
    return manifest.get("dataset", DEFAULT_DATASET)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with the fixed settings of :data:`PNG_OPTIONS` (same image, same bytes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", **PNG_OPTIONS)
    return buf.getvalue()


def decode_png(data: bytes) -> Image.Image:
    """A fully loaded RGB ``PIL.Image`` from PNG bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def sample_to_row(sample: Sample, png: bytes | None = None) -> dict[str, Any]:
    """One Parquet row (a dict keyed by :data:`COLUMNS`). ``png`` defaults to encoding ``sample.image``."""
    a = sample.attributes
    if png is None:
        require(sample.image is not None, f"sample {sample.id} has no image to store")
        png = encode_png(sample.image)
    return {
        "id": sample.id,
        "task": sample.task,
        "index": sample.index,
        "image_index": sample.image_index,
        "image": {"bytes": png, "path": None},
        "hour": a.hour,
        "minute": a.minute,
        "second": a.second,
        "weather": a.weather,
        "weather_position": a.weather_position,
        "battery": a.battery,
        "battery_position": a.battery_position,
        "face_color": list(a.face_color),
        "conversations": sample.conversations(),
        "turn_attributes": [t.attribute for t in sample.turns],
        "mentioned": list(sample.mentioned),
        "questions": [t.question for t in sample.turns],
        "answers": [t.answer for t in sample.turns],
    }


def row_attributes(row: dict[str, Any]) -> WatchAttributes:
    """The :class:`WatchAttributes` of a row (or of any dict with the attribute keys)."""
    return WatchAttributes(int(row["hour"]), int(row["minute"]), int(row["second"]), str(row["weather"]),
                           str(row["weather_position"]), int(row["battery"]), str(row["battery_position"]),
                           tuple(int(c) for c in row["face_color"]))  # type: ignore[arg-type]


def row_to_sample(row: dict[str, Any], with_image: bool = True) -> Sample:
    """Rebuild the :class:`Sample` a row was made from (image as a PIL RGB image, or ``None``)."""
    turns = [texts.Turn(q, a, t) for q, a, t in zip(row["questions"], row["answers"], row["turn_attributes"])]
    image = decode_png(row["image"]["bytes"]) if with_image else None
    return Sample(row["task"], row["id"], int(row["index"]), int(row["image_index"]), row_attributes(row), turns,
                  tuple(row["mentioned"]), image)


# ----- writing -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ShardJob:
    """One shard to render and write: rows ``start..stop-1`` of ``task`` into ``folder / rel_path``."""

    config: Any
    task: str
    start: int
    stop: int
    folder: str
    rel_path: str
    schema: pa.Schema


def _write_shard(job: _ShardJob) -> dict[str, Any]:
    """Render and write one shard; returns its manifest entry. Memory: one row group of rows at a time."""
    ds = open_dataset(job.config)
    path = Path(job.folder) / job.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, job.schema, compression=PARQUET_COMPRESSION) as writer:
        for lo in range(job.start, job.stop, ROW_GROUP_SIZE):
            hi = min(lo + ROW_GROUP_SIZE, job.stop)
            rows = [_to_row(ds.name, s) for s in ds.stream(job.task, lo, hi)]
            writer.write_table(pa.Table.from_pylist(rows, schema=job.schema), row_group_size=ROW_GROUP_SIZE)
    return {"path": job.rel_path, "rows": job.stop - job.start, "start": job.start, "sha256": sha256_file(path)}


def _ignore_sigint() -> None:
    # Workers leave Ctrl-C to the parent, which terminates the pool and removes the temporary folder.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _mp_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where available (fork is unsafe once torch has started threads), else ``spawn``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["uvlm.data.storage"])
        return ctx
    return multiprocessing.get_context("spawn")


def _cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def check_out(out: Path, overwrite: bool, marker: str, what: str) -> None:
    """Refuse to write over a non-empty folder unless ``overwrite``; even then only over a folder of the same kind."""
    if not out.exists():
        return
    require(out.is_dir(), f"output {out} exists and is a file: choose a folder path for the {what}")
    if not any(out.iterdir()):
        return
    require(overwrite, f"output folder {out} is not empty: pass --overwrite to replace it, or choose another folder")
    require((out / marker).is_file(),
            f"output folder {out} is not empty and is not a {what} (no {marker}), so --overwrite will not replace "
            f"it: choose another folder or empty it yourself")


def _hf_split_name(name: str) -> str:
    return name if re.fullmatch(r"\w+(\.\w+)*", name) else "train"


def dataset_card(manifest: dict[str, Any]) -> str:
    """README.md with the YAML ``configs:`` section ``datasets.load_dataset(folder, task)`` reads."""
    cfg = manifest["config"]
    split = _hf_split_name(cfg["name"])
    tasks = [t for t in TASKS if manifest["counts"][t] > 0]
    yaml = ["---"] + (["configs:"] if tasks else [])
    for k, t in enumerate(tasks):
        yaml += [f"- config_name: {t}", "  data_files:", f"  - split: {split}", f"    path: {t}/*.parquet"]
        if k == 0:
            yaml.append("  default: true")
    dataset = manifest_dataset(manifest)
    if dataset == DEFAULT_DATASET:
        title, text, tags = (f"SmartWatch split `{cfg['name']}`",
                             "Synthetic smart-watch images (analog time, weather icon, battery level, their corners) "
                             "with VQA conversations, captions and text-to-image instructions,", ["synthetic",
                                                                                                  "smartwatch"])
    else:
        title, text, tags = dataset_class(dataset).card(cfg)
    yaml += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    counts = ", ".join(f"{t} {manifest['counts'][t]:,}" for t in TASKS)
    bias = cfg["bias"]
    bias_text = "none" if bias is None else (
        f"{bias['attribute']} (VQA share {bias['vqa_share']}, caption share {bias['caption_share']})")
    body = [
        f"# {title}",
        "",
        f"{text} generated by uvlm {manifest['versions']['uvlm']}.",
        "",
        f"- seed {cfg['seed']}, resolution {cfg['resolution']} px, bias: {bias_text}",
        f"- samples: {counts}",
        f"- images shared across tasks: {'yes' if cfg['share_images'] else 'no'}",
        "",
        "Load one task with the `datasets` library (no network needed):",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("path/to/this/folder", "{tasks[0] if tasks else "vqa"}")["{split}"]',
        "```",
        "",
        "or with uvlm, which also checks the shard checksums in `manifest.json`:",
        "",
        "```python",
        "from uvlm.data.storage import read_samples",
        f'samples = read_samples("path/to/this/folder", "{tasks[0] if tasks else "vqa"}")',
        "```",
        "",
        "The same samples can be regenerated exactly with `uvlm data generate` and the config in `manifest.json`.",
        "",
    ]
    return "\n".join(yaml + body)


def versions() -> dict[str, str]:
    """The library versions whose output bytes a split depends on."""
    return {"uvlm": uvlm.__version__, "pyarrow": pa.__version__, "pillow": PIL.__version__,
            "numpy": np.__version__, "python": ".".join(map(str, sys.version_info[:3]))}


def materialize(config: SplitConfig, out: str | os.PathLike, workers: int | None = None, shard_size: int = 5000,
                overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Write ``config`` as a split folder at ``out`` (see the module doc) and return its manifest.

    ``workers`` processes (default: all usable cores) each render and write whole shards of ``shard_size`` rows; the
    bytes do not depend on ``workers``. ``out`` must be absent or empty unless ``overwrite``; it is replaced only once
    the new split is complete. ``progress`` shows a tqdm bar over rows on stderr.

    Workers are started with ``forkserver`` (or ``spawn``), which re-imports the calling script: a script that calls
    this with ``workers > 1`` must do so under ``if __name__ == "__main__":``.
    """
    dataset = dataset_of_config(config)
    _check_storable(dataset)
    require(isinstance(shard_size, int) and not isinstance(shard_size, bool) and shard_size >= 1,
            f"shard size must be a positive integer, got {shard_size!r}")
    workers = _cpu_count() if workers is None else workers
    require(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1,
            f"workers must be a positive integer, got {workers!r}")
    out = Path(out)
    check_out(out, overwrite, MANIFEST, "uvlm split")
    schema = _schema_of(dataset, config)
    open_dataset(config)  # the dataset's own files are read (and checked) before anything is written

    with atomic_path(out) as tmp:
        tmp.mkdir()
        jobs: list[_ShardJob] = []
        for task in TASKS:
            n = config.count(task)
            n_shards = math.ceil(n / shard_size)
            for k in range(n_shards):
                rel = f"{task}/shard-{k:05d}-of-{n_shards:05d}.parquet"
                jobs.append(_ShardJob(config, task, k * shard_size, min(n, (k + 1) * shard_size), str(tmp), rel,
                                      schema))
        entries = _run_jobs(jobs, workers, progress)
        by_path = {e["path"]: e for e in entries}
        shards = {t: [by_path[j.rel_path] for j in jobs if j.task == t] for t in TASKS}
        manifest = {} if dataset == DEFAULT_DATASET else {"dataset": dataset}
        manifest |= {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "config": config.to_dict(),
            "seed": config.seed,
            "counts": {t: config.count(t) for t in TASKS},
            "n_images": config.n_images,
            "shard_size": shard_size,
            "columns": list(columns_of(dataset, config)),
            "png": dict(PNG_OPTIONS),
            "parquet": {"compression": PARQUET_COMPRESSION, "row_group_size": ROW_GROUP_SIZE},
            "versions": versions(),
            "shards": shards,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(dataset_card(manifest), encoding="utf-8")
    return manifest


def _run_jobs(jobs: Sequence[_ShardJob], workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=sum(j.stop - j.start for j in jobs), unit="img", disable=not progress, file=sys.stderr,
               leave=False)
    entries = []
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                entries.append(_write_shard(job))
                bar.update(entries[-1]["rows"])
        else:
            ctx = _mp_context()
            with ctx.Pool(min(workers, len(jobs)), initializer=_ignore_sigint) as pool:
                for entry in pool.imap_unordered(_write_shard, jobs):
                    entries.append(entry)
                    bar.update(entry["rows"])
    finally:
        bar.close()
    return entries


# ----- reading -------------------------------------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the split folder ``path``; :class:`UserError` if it is not a (readable, current) split."""
    from uvlm.io import found

    path = Path(path)
    require(path.exists(), f"split folder {path} does not exist: generate it with uvlm data generate {path}")
    require(path.is_dir(), f"split folder {path} is {found(path)}, not a folder: pass the folder that uvlm data "
                           f"generate wrote")
    mpath = path / MANIFEST
    require(mpath.exists(),
            f"{path} is not a uvlm split (no {MANIFEST}): generate one with uvlm data generate {path}")
    require(mpath.is_file(), f"{mpath} is {found(mpath)}, not a file: {_regen_hint(path)}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"unreadable {mpath} ({e}): {_regen_hint(path)}") from None
    except RecursionError:
        raise UserError(f"unreadable {mpath} (nested too deeply to be a manifest): {_regen_hint(path)}") from None
    require(isinstance(manifest, dict) and manifest.get("format") == FORMAT,
            f"{mpath} is not a uvlm split manifest: {_regen_hint(path)}")
    version = manifest.get("schema_version")
    require(version == SCHEMA_VERSION,
            f"split {path} has schema version {version}, this uvlm reads version {SCHEMA_VERSION}: "
            f"{_regen_hint(path)}")
    for key in ("config", "counts", "shards"):
        require(key in manifest, f"{mpath} has no {key!r} entry: {_regen_hint(path)}")
    _check_counts(path, manifest)
    return manifest


def _check_counts(path: Path, manifest: dict[str, Any]) -> None:
    """The manifest's counts agree with its config and with the rows its shard entries list."""
    counts, shards = manifest["counts"], manifest["shards"]
    require(isinstance(counts, dict) and isinstance(shards, dict) and isinstance(manifest["config"], dict),
            f"split {path} is inconsistent: its {MANIFEST} entries have the wrong form: {_regen_hint(path)}")
    try:
        config = dataset_class(manifest_dataset(manifest)).config_from_dict(manifest["config"])
        listed = {t: sum(int(e["rows"]) for e in shards.get(t, [])) for t in TASKS}
    except (UserError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"split {path} is inconsistent: its {MANIFEST} config or shard list is damaged ({e}): "
                        f"{_regen_hint(path)}") from None
    for t in TASKS:
        n = counts.get(t, 0)
        require(n == config.count(t) and n == listed[t],
                f"split {path} is inconsistent: {MANIFEST} counts {n!r} {t} samples, its config "
                f"{config.count(t)} and its shards {listed[t]} rows: {_regen_hint(path)}")


def require_dataset(path: str | os.PathLike, dataset: str, what: str) -> dict[str, Any]:
    """The manifest of the split folder ``path``, which must hold ``dataset`` (one-line error naming ``what``, the
    command that supports only that dataset so far, otherwise)."""
    manifest = read_manifest(path)
    held = manifest_dataset(manifest)
    require(held == dataset, f"{what} is not supported for {held} splits yet ({path} holds one): it reads {dataset} "
                             f"splits only so far")
    return manifest


def split_config(path: str | os.PathLike) -> Any:
    """The split config a split folder was generated from (SmartWatch: a :class:`SplitConfig`)."""
    manifest = read_manifest(path)
    return dataset_class(manifest_dataset(manifest)).config_from_dict(manifest["config"])


def _shard_file(path: Path, entry: dict[str, Any]) -> Path:
    f = path / entry["path"]
    require(f.is_file(), f"shard {f} is missing: {_regen_hint(path)}")
    return f


def _check_checksum(path: Path, entry: dict[str, Any]) -> None:
    f = _shard_file(path, entry)
    require(sha256_file(f) == entry["sha256"],
            f"shard {f} is corrupt or truncated (sha256 does not match {MANIFEST}): {_regen_hint(path)}")


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Check every shard of a split (present, sha256 as in the manifest, readable Parquet with the manifest's rows and
    columns). Returns the manifest; raises :class:`UserError` naming the first bad shard."""
    path = Path(path)
    manifest = read_manifest(path)
    for task in TASKS:
        entries = manifest["shards"].get(task, [])
        require(sum(e["rows"] for e in entries) == manifest["counts"].get(task, 0),
                f"{path / MANIFEST} lists {sum(e['rows'] for e in entries)} {task} rows but counts "
                f"{manifest['counts'].get(task, 0)}: {_regen_hint(path)}")
        for entry in entries:
            _check_checksum(path, entry)
            pf = _open_shard(path, entry, _manifest_columns(manifest))
            # a checksum only proves the bytes are the ones the manifest lists: decode every image too
            for batch in pf.iter_batches(batch_size=ROW_GROUP_SIZE, columns=["id", "image"]):
                for row in batch.to_pylist():
                    try:
                        decode_png(row["image"]["bytes"])
                    except Exception as e:  # PIL raises many kinds for bad bytes
                        raise UserError(f"split {path}: the image of {row['id']} in shard {entry['path']} does not "
                                        f"decode ({type(e).__name__}): {_regen_hint(path)}") from None
    return manifest


def _manifest_columns(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The columns of a split's rows, from its dataset and config (read_manifest has checked both)."""
    dataset = manifest_dataset(manifest)
    if dataset == DEFAULT_DATASET:
        return COLUMNS
    return columns_of(dataset, dataset_class(dataset).config_from_dict(manifest["config"]))


def _open_shard(path: Path, entry: dict[str, Any], columns: Sequence[str] = COLUMNS) -> pq.ParquetFile:
    f = _shard_file(path, entry)
    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UserError(f"shard {f} is not readable Parquet ({type(e).__name__}): {_regen_hint(path)}") from None
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    require(not missing, f"shard {f} lacks columns {missing}: {_regen_hint(path)}")
    require(pf.metadata.num_rows == entry["rows"],
            f"shard {f} has {pf.metadata.num_rows} rows, {MANIFEST} says {entry['rows']}: {_regen_hint(path)}")
    return pf


def read_rows(path: str | os.PathLike, task: str, columns: Sequence[str] | None = None,
              verify: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the raw rows (dicts keyed by column; ``image`` is ``{"bytes": PNG, "path": None}``) of one task in index
    order, one row group in memory at a time. ``verify`` checks each shard's sha256 before reading it."""
    path = Path(path)
    manifest = read_manifest(path)
    require(task in TASKS, f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    known = _manifest_columns(manifest)
    cols = list(known if columns is None else columns)
    unknown = [c for c in cols if c not in known]
    require(not unknown, f"unknown columns {unknown}: use some of {', '.join(known)}")
    for entry in manifest["shards"].get(task, []):
        if verify:
            _check_checksum(path, entry)
        pf = _open_shard(path, entry, known)
        batches = pf.iter_batches(batch_size=ROW_GROUP_SIZE, columns=cols)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError, ValueError) as e:
                raise UserError(f"shard {path / entry['path']} is corrupt ({type(e).__name__}): "
                                f"{_regen_hint(path)}") from None
            if batch is None:
                break
            yield from batch.to_pylist()


def read_samples(path: str | os.PathLike, task: str, with_images: bool = True,
                 verify: bool = True) -> Iterator[Sample]:
    """Yield the samples of one task of a split folder, in index order; each equals
    ``open_dataset(split_config(path)).sample(task, i)`` (images as PIL RGB, or ``None`` without ``with_images``)."""
    manifest = read_manifest(path)
    dataset = manifest_dataset(manifest)
    config = dataset_class(dataset).config_from_dict(manifest["config"])
    cols = [c for c in _manifest_columns(manifest) if with_images or c != "image"]
    for row in read_rows(path, task, cols, verify=verify):
        try:
            yield _from_row(dataset, config, row, with_images)
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for undecodable image bytes
            raise UserError(f"split {path}: the image of {row['id']} does not decode ({e}): "
                            f"{_regen_hint(Path(path))}") from None


def summary(manifest: dict[str, Any]) -> str:
    """A few human-readable lines about a split."""
    cfg = manifest["config"]
    bias = cfg["bias"]
    bias_text = "none" if bias is None else (
        f"{bias['attribute']} (vqa share {bias['vqa_share']}, caption share {bias['caption_share']})")
    n_images = manifest.get("n_images")
    return "\n".join([
        f"split {cfg['name']!r}: seed {cfg['seed']}, resolution {cfg['resolution']} px, bias {bias_text}",
        "samples: " + ", ".join(f"{t} {manifest['counts'][t]:,}" for t in TASKS)
        + (f" ({n_images:,} images)" if isinstance(n_images, int) else ""),
        "shards: " + ", ".join(f"{t} {len(manifest['shards'].get(t, []))}" for t in TASKS)
        + f" (shard size {manifest.get('shard_size')})",
        "made with: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("versions", {}).items())),
    ])


__all__ = ["COLUMNS", "columns_of", "manifest_dataset", "require_dataset", "SCHEMA_VERSION", "arrow_schema", "check_out", "decode_png", "encode_png", "hf_features",
           "materialize", "read_manifest", "read_rows", "read_samples", "row_to_sample", "sample_to_row",
           "split_config", "summary", "verify"]
