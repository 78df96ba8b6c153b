"""Recovery paths and integrity checks: resuming from a named checkpoint, leftovers of killed writes, strict config
types, image decoding under ``data info --verify``, and failing commands that leave nothing behind."""

from __future__ import annotations

import io
import json

import pytest

from _fakes import tiny_config
from uvlm.cli.main import main
from uvlm.errors import UserError
from uvlm.io import sha256_file, unchanged_on_error
from uvlm.train.config import CheckpointConfig, RunConfig, variant_config, variant_names


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.usefixtures("fake_vision")
def test_resume_from_a_named_checkpoint_after_the_latest_is_damaged(tmp_path, capsys):
    cfg = tiny_config("VQ-VQ", steps=4, checkpoint=CheckpointConfig(every=2))
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    ref, run = tmp_path / "ref", tmp_path / "run"
    for out in (ref, run):
        assert main(["train", "--config", str(tmp_path / "c.json"), "--out", str(out), "--quiet"]) == 0
    ck = run / "checkpoints"
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-000002", "step-000004"]

    # the latest checkpoint's optimizer state is damaged and its hash updated to match: only loading catches it
    (ck / "step-000004" / "optimizer.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    state = json.loads((ck / "step-000004" / "state.json").read_text())
    state["files"]["optimizer.pt"] = sha256_file(ck / "step-000004" / "optimizer.pt")
    (ck / "step-000004" / "state.json").write_text(json.dumps(state))
    err = _error(capsys, ["train", "--resume", str(run), "--quiet"])
    assert "checkpoint step-000004 is corrupt or unsafe: optimizer.pt" in err
    assert f"--resume {run} --checkpoint step-000002" in err

    # leftovers of killed checkpoint writes
    (ck / ".step-000003.k2j4.tmp").mkdir()
    (ck / ".step-000003.k2j4.tmp" / "model.safetensors").write_bytes(b"half")
    (ck / ".latest.abcd.tmp").write_text("step-000003\n")
    (ck / ".step-000002.old-4242").mkdir()

    assert main(["train", "--resume", str(run), "--checkpoint", "step-000002", "--quiet"]) == 0
    assert (ck / "latest").read_text().strip() == "step-000004"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-000002", "step-000004"]
    mine, theirs = _weights(ck / "step-000004"), _weights(ref / "checkpoints" / "step-000004")
    assert mine.keys() == theirs.keys() and all((mine[k] == theirs[k]).all() for k in mine)
    # the step-4 checkpoint was written again, whole: a plain resume now loads it
    assert main(["train", "--resume", str(run), "--steps", "5", "--quiet"]) == 0
    # a step number works as well as the folder name
    assert main(["train", "--resume", str(run), "--checkpoint", "4", "--steps", "5", "--quiet"]) == 0
    # a resumed run takes the flags that do not change what it is, and refuses the others
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "6", "--eval-every", "2", "--print-config"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["optim"]["steps"] == 6 and resumed["eval"]["every"] == 2 and resumed["eval"]["unit"] == "steps"
    assert "--seed, --batch-size cannot change a run being resumed" in _error(
        capsys, ["train", "--resume", str(run), "--seed", "3", "--batch-size", "4"])


@pytest.mark.usefixtures("fake_vision")
def test_train_out_must_be_a_run_or_empty(tmp_path, capsys):
    cfg = tiny_config("SigLIP_u", steps=1)
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine\n")
    err = _error(capsys, ["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "notes")])
    assert "is not empty and is not a run" in err
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert main(["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "empty"), "--quiet"]) == 0


def test_configs_are_strictly_typed():
    good = tiny_config("VQ*-VQ-D").to_dict()
    assert RunConfig.from_dict(json.loads(json.dumps(good))) == RunConfig.from_dict(good)
    for name in variant_names():  # every named model round-trips through its JSON
        cfg = variant_config(name)
        assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg

    def bad(section, key, value, match):
        d = json.loads(json.dumps(good))
        (d[section] if section else d)[key] = value
        with pytest.raises(UserError, match=match):
            RunConfig.from_dict(d)

    bad("lora", "enabled", "yes", r"lora.enabled must be true or false, got 'yes'")
    bad("lora", "enabled", 0, "lora.enabled must be true or false")
    bad("log", "tensorboard", None, "log.tensorboard must be true or false")
    bad("runtime", "threads", 4.0, "runtime.threads must be an integer")
    bad("runtime", "threads", 10**6, r"runtime.threads must be a positive integer \(at most 256\)")
    bad("optim", "lr_llm", float("inf"), "optim.lr_llm must be a finite number")
    bad("optim", "steps", True, "optim.steps must be an integer or null")
    bad("optim", "betas", [0.9, "x"], "optim.betas must be a list of 2 values")
    bad("model", "alpha", [1], "model.alpha must be a finite number or null")
    bad(None, "variant", "Bogus", "unknown variant 'Bogus'")
    bad(None, "variant", 7, "variant must be a string")
    bad(None, "out_dir", ["a"], "out_dir must be a string or null")
    d = json.loads(json.dumps(good))
    d["data"]["train"]["share_images"] = "true"
    with pytest.raises(UserError, match="share_images must be true or false"):
        RunConfig.from_dict(d)
    d = json.loads(json.dumps(good))
    d["data"]["train"]["bias"] = {"attribute": "weather", "vqa_share": "0.05"}
    with pytest.raises(UserError, match="bias.vqa_share must be a finite number"):
        RunConfig.from_dict(d)


def _rewrite_first_image(split, data: bytes) -> None:
    """Replace the first VQA image of a split with ``data`` and update the manifest checksum to match."""
    import pyarrow.parquet as pq

    manifest = json.loads((split / "manifest.json").read_text())
    entry = manifest["shards"]["vqa"][0]
    path = split / entry["path"]
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["image"] = {"bytes": data, "path": None}
    buf = io.BytesIO()
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), buf)
    path.write_bytes(buf.getvalue())
    entry["sha256"] = sha256_file(path)
    (split / "manifest.json").write_text(json.dumps(manifest))


def test_verify_decodes_every_image_and_export_refuses_undecodable_ones(tmp_path, capsys):
    split = tmp_path / "split"
    assert main(["data", "generate", str(split), "--vqa", "3", "--caption", "0", "--generation", "0",
                 "--resolution", "48", "--workers", "1", "--quiet"]) == 0
    assert main(["data", "info", str(split), "--verify"]) == 0
    capsys.readouterr()
    _rewrite_first_image(split, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    err = _error(capsys, ["data", "info", str(split), "--verify"])
    assert "does not decode" in err and "train-vqa-00000000" in err
    _error(capsys, ["data", "export-llava", str(split), str(tmp_path / "llava")])
    assert not (tmp_path / "llava").exists()


def test_unchanged_on_error_removes_only_what_the_failing_block_created(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "kept.json").write_text("{}")
    with pytest.raises(UserError):
        with unchanged_on_error(tmp_path / "old", tmp_path / "new"):
            (tmp_path / "old" / "records.json").write_text("{}")
            (tmp_path / "old" / "sub").mkdir()
            (tmp_path / "old" / "sub" / "x").write_text("x")
            (tmp_path / "new").mkdir()
            raise UserError("boom")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept.json", "old"]
    with unchanged_on_error(tmp_path / "old"):  # success keeps everything
        (tmp_path / "old" / "done.json").write_text("{}")
    assert (tmp_path / "old" / "done.json").is_file()


def test_help_is_plain_text(capsys):
    for argv in (["quickstart", "--help"], ["run", "--help"]):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "``" not in text and ":data:" not in text and "default: (" not in text, text


def test_library_deprecation_notices_are_not_shown(monkeypatch, capsys):
    import warnings

    import uvlm.cli.recipes

    def noisy(args):
        warnings.warn("`past_key_values` is deprecated and will be removed", FutureWarning)
        warnings.warn("old API", DeprecationWarning)
        print("done")
        return 0

    monkeypatch.setattr(uvlm.cli.recipes, "cmd_recipes", noisy)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["recipes"]) == 0
    assert not seen and capsys.readouterr().out == "done\n"
