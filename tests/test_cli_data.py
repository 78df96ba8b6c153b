"""``uvlm data`` end to end, in-process: generate, info, export-llava, preview, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from uvlm.cli.main import main
from uvlm.data import SmartWatch, SplitConfig, TASKS
from uvlm.data.config import Bias
from uvlm.data.llava import read_llava
from uvlm.data.storage import read_manifest, read_samples, split_config


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``uvlm ARGV`` (argparse usage errors exit via SystemExit)."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "train"
    rc = main(["data", "generate", str(out), "--seed", "7", "--resolution", "56", "--vqa", "12", "--caption", "5",
               "--generation", "0.009K", "--bias", "battery:0.1", "--workers", "1", "--shard-size", "5"])
    assert rc == 0
    return out


def test_generate(generated, capsys):
    expected = SplitConfig.train(seed=7, resolution=56, n_vqa=12, n_caption=5, n_generation=9,
                                 bias=Bias("battery", 0.1, 0.0))
    assert split_config(generated) == expected
    assert list(read_samples(generated, "caption")) == list(SmartWatch(expected).stream("caption"))
    assert len(read_manifest(generated)["shards"]["vqa"]) == 3


def test_generate_prints_summary_and_test_preset(tmp_path, capsys):
    rc, out, err = run(["data", "generate", str(tmp_path / "t"), "--split", "test", "--vqa", "4", "--generation",
                        "3", "--workers", "1"], capsys)
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1
    assert "vqa 4, caption 0, generation 3" in out and "images/s" in out
    config = split_config(tmp_path / "t")
    assert config == SplitConfig.test(n_vqa=4, n_generation=3)
    assert not config.share_images and config.max_extra_turns == 0


def test_info(generated, capsys):
    rc, out, err = run(["data", "info", str(generated)], capsys)
    assert rc == 0, err
    assert "vqa 12, caption 5, generation 9" in out and "resolution 56" in out and "battery" in out
    rc, out, err = run(["data", "info", str(generated), "--verify"], capsys)
    assert rc == 0, err
    assert "verified: 6 shards" in out  # 3 vqa + 1 caption + 2 generation


def test_export_llava(generated, tmp_path, capsys):
    rc, out, err = run(["data", "export-llava", str(generated), str(tmp_path / "llava")], capsys)
    assert rc == 0, err
    assert "vqa.json (12 records)" in out
    assert read_llava(tmp_path / "llava") == [s for t in TASKS for s in read_samples(generated, t)]
    rc, out, err = run(["data", "export-llava", str(generated), str(tmp_path / "llava")], capsys)
    assert rc == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run(["data", "export-llava", str(generated), str(tmp_path / "llava"), "--overwrite"], capsys)
    assert rc == 0, err


def test_preview(generated, tmp_path, capsys):

    rc, out, err = run(["data", "preview", str(tmp_path / "a.png"), "--from", str(generated), "-n", "4", "--task",
                        "caption"], capsys)
    assert rc == 0, err
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG" and im.width >= 2 * 56
    # on the fly from the same flags: the same samples, so the same sheet
    rc, out, err = run(["data", "preview", str(tmp_path / "b.png"), "--seed", "7", "--resolution", "56", "--vqa",
                        "12", "--caption", "5", "--generation", "9", "--bias", "battery:0.1", "-n", "4", "--task",
                        "caption"], capsys)
    assert rc == 0, err
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    rc, out, err = run(["data", "preview", str(tmp_path / "c.png"), "--split", "test", "--task", "caption"], capsys)
    assert rc == 2 and "no caption samples" in err and not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("flags, message", [
    (["--bias", "wind"], "unknown bias attribute"),
    (["--bias", "weather:2"], "[0, 1]"),
    (["--bias", "weather:0.1:-0.5"], "[0, 1]"),
    (["--bias", "weather:x"], "must be numbers"),
    (["--vqa", "-5"], "non-negative"),
    (["--caption", "1.5"], "non-negative integers"),
    (["--generation", "lots"], "bad count"),
    (["--resolution", "20"], "legible minimum"),
    (["--seed", "-1"], "seed"),
    (["--workers", "0"], "positive integer"),
    (["--shard-size", "0"], "positive integer"),
    (["--split", "val"], "invalid choice"),
])
def test_bad_generate_flags(flags, message, tmp_path, capsys):
    rc, out, err = run(["data", "generate", str(tmp_path / "o"), "--vqa", "2", "--caption", "2", "--generation", "2",
                        "--workers", "1", *flags], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_not_empty_output(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("keep")
    rc, out, err = run(["data", "generate", str(tmp_path / "o"), "--vqa", "2", "--caption", "0", "--generation", "0",
                        "--workers", "1"], capsys)
    assert rc == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["keep.txt"]


def test_corrupt_and_missing_splits(generated, tmp_path, capsys):
    import shutil

    split = tmp_path / "split"
    shutil.copytree(generated, split)
    entry = read_manifest(split)["shards"]["generation"][1]
    shard = split / entry["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x55
    shard.write_bytes(bytes(data))
    for argv in (["data", "info", str(split), "--verify"],
                 ["data", "export-llava", str(split), str(tmp_path / "llava")],
                 ["data", "preview", str(tmp_path / "p.png"), "--from", str(split), "--task", "generation"]):
        rc, out, err = run(argv, capsys)
        assert rc == 2, argv
        assert len(err.strip().splitlines()) == 1 and shard.name in err and "--overwrite" in err
    assert not (tmp_path / "llava").exists() and not (tmp_path / "p.png").exists()
    shard.write_bytes(bytes(data[: len(data) // 2]))
    rc, out, err = run(["data", "info", str(split), "--verify"], capsys)
    assert rc == 2 and "truncated" in err
    rc, out, err = run(["data", "info", str(tmp_path)], capsys)
    assert rc == 2 and "not a uvlm split" in err and len(err.strip().splitlines()) == 1
    (split / "manifest.json").write_text(json.dumps({"format": "uvlm-smartwatch-split", "schema_version": 99}))
    rc, out, err = run(["data", "info", str(split)], capsys)
    assert rc == 2 and "schema version 99" in err
