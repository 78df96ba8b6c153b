"""Materialized SmartWatch splits: round trip, byte determinism, checksums, datasets loading, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uvlm.data import SmartWatch, SplitConfig, TASKS
from uvlm.data import storage
from uvlm.data.config import Bias
from uvlm.data.storage import (encode_png, materialize, read_manifest, read_rows, read_samples, split_config,
                               verify)
from uvlm.errors import UserError
from uvlm.io import sha256_file

TRAIN = SplitConfig.train(seed=3, n_vqa=19, n_caption=12, n_generation=8, bias=Bias("weather", 0.3, 0.5))
TEST = SplitConfig.test(seed=3, n_vqa=9, n_generation=6)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("storage") / "train"
    materialize(TRAIN, out, workers=1, shard_size=7)
    return out


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("storage") / "test"
    materialize(TEST, out, workers=1, shard_size=4)
    return out


def _copy(split: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(split, dst)
    return dst


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("which", ["split", "test_split"])
def test_round_trip_equals_generator(which, request):
    path = request.getfixturevalue(which)
    config = TRAIN if which == "split" else TEST
    sw = SmartWatch(config)
    for task in TASKS:
        got = list(read_samples(path, task))
        assert len(got) == config.count(task)
        assert got == list(sw.stream(task))  # attributes, turns, mentioned, ids and pixels
        assert all(s.image is not None and s.image.mode == "RGB" for s in got)
        assert list(read_samples(path, task, with_images=False)) == list(sw.stream(task, with_image=False))


def test_stream_matches_materialized(split):
    sw = SmartWatch(TRAIN)
    for task in TASKS:
        rows = list(read_rows(split, task))
        stream = list(sw.stream(task))
        assert [r["id"] for r in rows] == [s.id for s in stream]
        assert [r["image"]["bytes"] for r in rows] == [encode_png(s.image) for s in stream]
        assert [r["conversations"] for r in rows] == [s.conversations() for s in stream]
        assert [r["questions"] for r in rows] == [[t.question for t in s.turns] for s in stream]
        assert [r["answers"] for r in rows] == [[t.answer for t in s.turns] for s in stream]
        assert [r["turn_attributes"] for r in rows] == [[t.attribute for t in s.turns] for s in stream]
        assert [r["mentioned"] for r in rows] == [list(s.mentioned) for s in stream]
        assert [storage.row_attributes(r) for r in rows] == [s.attributes for s in stream]


def test_layout_and_manifest(split, test_split):
    m = read_manifest(split)
    assert split_config(split) == TRAIN
    assert m["seed"] == TRAIN.seed and m["counts"] == {t: TRAIN.count(t) for t in TASKS}
    assert set(m["versions"]) >= {"uvlm", "pyarrow", "pillow", "numpy"}
    assert [e["path"] for e in m["shards"]["vqa"]] == [f"vqa/shard-{k:05d}-of-00003.parquet" for k in range(3)]
    for task in TASKS:
        entries = m["shards"][task]
        assert sum(e["rows"] for e in entries) == TRAIN.count(task)
        assert [e["start"] for e in entries] == list(range(0, TRAIN.count(task), 7))
        for e in entries:
            assert sha256_file(split / e["path"]) == e["sha256"]
            assert pq.ParquetFile(split / e["path"]).metadata.num_rows == e["rows"]
    # a task without samples has no folder and no shards
    assert TEST.n_caption == 0
    assert not (test_split / "caption").exists() and read_manifest(test_split)["shards"]["caption"] == []
    assert sorted(p.name for p in test_split.iterdir()) == ["README.md", "generation", "manifest.json", "vqa"]
    assert list(read_samples(test_split, "caption")) == []


def test_schema_types(split):
    schema = pq.read_schema(split / read_manifest(split)["shards"]["vqa"][0]["path"])
    assert schema.names == list(storage.COLUMNS)
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for col in ("hour", "minute", "second", "battery"):
        assert schema.field(col).type == pa.int8()
    assert schema.field("face_color").type == pa.list_(pa.uint8(), 3)
    assert schema.field("conversations").type == pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
    assert schema.field("turn_attributes").type == pa.list_(pa.string())
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"]["_type"] == "Image"


def test_shard_bytes_do_not_depend_on_workers(tmp_path):
    config = SplitConfig.train(seed=11, n_vqa=13, n_caption=9, n_generation=5)
    one = materialize(config, tmp_path / "one", workers=1, shard_size=4)
    two = materialize(config, tmp_path / "two", workers=2, shard_size=4)
    assert one == two
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 2 + 4 + 3 + 2
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    # and a different seed gives different bytes
    other = materialize(config.with_(seed=12), tmp_path / "other", workers=1, shard_size=4)
    assert other["shards"]["vqa"][0]["sha256"] != one["shards"]["vqa"][0]["sha256"]


def test_datasets_load_dataset_offline(split, test_split, tmp_path, monkeypatch):
    import datasets
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sw = SmartWatch(TRAIN)
    for task in TASKS:
        dd = datasets.load_dataset(str(split), task, cache_dir=str(tmp_path / "hf"))
        ds = dd["train"]
        assert len(ds) == TRAIN.count(task)
        assert isinstance(ds.features["image"], datasets.Image)
        row = ds[2]
        expected = sw.sample(task, 2)
        assert row["id"] == expected.id and row["conversations"] == expected.conversations()
        assert row["image"].convert("RGB").tobytes() == expected.image.tobytes()
        assert row["face_color"] == list(expected.attributes.face_color)
    dd = datasets.load_dataset(str(test_split), "generation", cache_dir=str(tmp_path / "hf"))
    assert list(dd) == ["test"] and len(dd["test"]) == TEST.n_generation


def test_not_empty_output_is_refused(tmp_path, split):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="--overwrite") as e:
        materialize(TRAIN, out, workers=1)
    _one_line(e)
    # --overwrite never replaces a folder that is not a split
    with pytest.raises(UserError, match="not a uvlm split") as e:
        materialize(TRAIN, out, workers=1, overwrite=True)
    _one_line(e)
    assert (out / "notes.txt").read_text() == "keep me"
    # a file where the folder should be
    with pytest.raises(UserError, match="is a file"):
        materialize(TRAIN, out / "notes.txt", workers=1)
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    materialize(TEST.with_(n_vqa=2, n_generation=1), tmp_path / "empty", workers=1)
    verify(tmp_path / "empty")


def test_overwrite_replaces_a_split(tmp_path, split):
    out = _copy(split, tmp_path)
    new = TEST.with_(n_vqa=3, n_generation=2, seed=5)
    materialize(new, out, workers=1, overwrite=True)
    assert split_config(out) == new
    assert not (out / "caption").exists()
    verify(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temporary left beside it


def test_interrupt_leaves_nothing(tmp_path, split, monkeypatch):
    calls = []
    real = storage._write_shard

    def flaky(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(storage, "_write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        materialize(TRAIN, tmp_path / "new", workers=1, shard_size=7)
    assert list(tmp_path.iterdir()) == []
    # over an existing split with --overwrite: the old split survives untouched
    out = _copy(split, tmp_path)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        materialize(TRAIN.with_(seed=9), out, workers=1, shard_size=7, overwrite=True)
    assert split_config(out) == TRAIN
    verify(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def _first_shard(path: Path, task: str = "vqa") -> Path:
    return path / read_manifest(path)["shards"][task][1]["path"]


def test_corrupt_shard(tmp_path, split):
    path = _copy(split, tmp_path)
    shard = _first_shard(path)
    data = bytearray(shard.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 16):
        data[k] ^= 0xFF
    shard.write_bytes(bytes(data))
    for call in (lambda: verify(path), lambda: list(read_samples(path, "vqa"))):
        with pytest.raises(UserError, match="corrupt or truncated") as e:
            call()
        msg = _one_line(e)
        assert shard.name in msg and "--overwrite" in msg
    # other tasks still read
    assert len(list(read_samples(path, "caption"))) == TRAIN.n_caption


def test_truncated_shard(tmp_path, split):
    path = _copy(split, tmp_path)
    shard = _first_shard(path)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or truncated") as e:
        verify(path)
    assert shard.name in _one_line(e)
    # without checksums, the Parquet reader's failure is still a one-line UserError naming the shard
    with pytest.raises(UserError, match="not readable Parquet") as e:
        list(read_samples(path, "vqa", verify=False))
    assert shard.name in _one_line(e)


def test_missing_shard(tmp_path, split):
    path = _copy(split, tmp_path)
    shard = _first_shard(path, "generation")
    shard.unlink()
    with pytest.raises(UserError, match="missing") as e:
        verify(path)
    assert shard.name in _one_line(e)


def test_not_a_split(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_manifest(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a uvlm split") as e:
        list(read_samples(tmp_path / "empty", "vqa"))
    _one_line(e)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        verify(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a uvlm split manifest"):
        split_config(bad)


def test_bad_arguments(tmp_path, split):
    with pytest.raises(UserError, match="shard size"):
        materialize(TRAIN, tmp_path / "x", shard_size=0)
    with pytest.raises(UserError, match="workers"):
        materialize(TRAIN, tmp_path / "x", workers=0)
    with pytest.raises(UserError, match="unknown task"):
        list(read_samples(split, "vqa2"))
    assert not (tmp_path / "x").exists()
