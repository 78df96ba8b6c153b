"""LLaVA export of a split: record layout, shared images written once, exact round trip, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from uvlm.data import SplitConfig, TASKS
from uvlm.data.llava import export_llava, read_llava
from uvlm.data.storage import materialize, read_manifest, read_rows, read_samples
from uvlm.errors import UserError

CONFIGS = {
    "train": SplitConfig.train(seed=4, n_vqa=11, n_caption=7, n_generation=13),
    "test": SplitConfig.test(seed=4, n_vqa=6, n_generation=5),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory) -> tuple[SplitConfig, Path, Path]:
    config = CONFIGS[request.param]
    root = tmp_path_factory.mktemp(f"llava-{request.param}")
    materialize(config, root / "split", workers=1, shard_size=5)
    export_llava(root / "split", root / "llava")
    return config, root / "split", root / "llava"


def test_round_trip_equals_split(exported):
    config, split, out = exported
    original = [s for t in TASKS for s in read_samples(split, t)]
    back = read_llava(out)
    assert back == original  # ids, attributes, turns, mentioned and pixels
    assert read_llava(out, "generation") == list(read_samples(split, "generation"))
    # the PNG files are the split's own bytes
    for task in TASKS:
        records = {r["id"]: r for r in json.loads((out / f"{task}.json").read_text())} \
            if config.count(task) else {}
        for row in read_rows(split, task):
            assert (out / records[row["id"]]["image"]).read_bytes() == row["image"]["bytes"]


def test_layout(exported):
    config, split, out = exported
    files = {t: f"{t}.json" for t in TASKS if config.count(t)}
    meta = json.loads((out / "export.json").read_text())
    assert meta["files"] == files
    assert meta["source"]["config"] == read_manifest(split)["config"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["export.json", "images", *files.values()])
    # each image once: shared across tasks in train, one per sample in test
    assert len(list((out / "images").iterdir())) == meta["n_images"] == config.n_images
    vqa = json.loads((out / "vqa.json").read_text())
    assert len(vqa) == config.n_vqa
    r = vqa[3]
    assert r["image"] == f"images/{config.image_index('vqa', 3):06d}.png"
    assert r["conversations"][0]["from"] == "human" and r["conversations"][0]["value"].startswith("<image>\n")
    assert [c["from"] for c in r["conversations"]] == ["human", "gpt"] * (len(r["conversations"]) // 2)
    assert all("<image>" not in c["value"] for c in r["conversations"][1:])
    assert set(r["attributes"]) == {"hour", "minute", "second", "weather", "weather_position", "battery",
                                    "battery_position", "face_color"}
    gen = json.loads((out / "generation.json").read_text())
    assert gen[0]["conversations"][1] == {"from": "gpt", "value": "<image>"}
    assert "<image>" not in gen[0]["conversations"][0]["value"] and gen[0]["task"] == "generation"


def test_output_rules(exported, tmp_path):
    _, split, out = exported
    target = tmp_path / "llava"
    shutil.copytree(out, target)
    with pytest.raises(UserError, match="--overwrite"):
        export_llava(split, target)
    export_llava(split, target, overwrite=True)
    assert read_llava(target) == read_llava(out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(UserError, match="not a LLaVA export"):
        export_llava(split, other, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llava", "other"]


def test_bad_input(exported, tmp_path):
    _, split, out = exported
    bad_split = tmp_path / "split"
    shutil.copytree(split, bad_split)
    shard = bad_split / read_manifest(bad_split)["shards"]["vqa"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt or truncated"):
        export_llava(bad_split, tmp_path / "llava")
    assert not (tmp_path / "llava").exists()
    with pytest.raises(UserError, match="not a uvlm LLaVA export"):
        read_llava(split)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    victim = sorted((broken / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(UserError, match="missing") as e:
        read_llava(broken)
    assert victim.name in str(e.value)
    assert len(read_llava(broken, with_images=False)) == len(read_llava(out, with_images=False))
