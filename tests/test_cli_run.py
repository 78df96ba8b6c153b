"""``uvlm train / ask / draw / eval`` end to end (in-process, fake vision source) and their one-line errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from _fakes import RESOLUTION, tiny_config
from uvlm.cli.main import main
from uvlm.data.scoring import read_predictions
from uvlm.data.smartwatch import SmartWatch
from uvlm.train.config import EvalConfig, LogConfig, RunConfig
from uvlm.train.metrics import read_metrics


pytestmark = pytest.mark.usefixtures("fake_vision")


def _one_line_error(capsys, argv, match: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uvlm: error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


@pytest.fixture
def config_file(tmp_path):
    cfg = tiny_config("VQ-VQ", steps=4, questions=4, log=LogConfig(interval=2, tensorboard=True))
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def test_train_resume_ask_draw_eval(tmp_path, capsys, config_file, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(run), "--quiet"]) == 0
    assert (run / "checkpoints/latest").read_text().strip() == "step-000004"
    assert main(["train", "--resume", str(run), "--steps", "6", "--quiet"]) == 0
    assert (run / "checkpoints/latest").read_text().strip() == "step-000006"
    train_lines = read_metrics(run / "metrics.jsonl", "train")
    assert [r["step"] for r in train_lines] == [2, 4, 6]  # log.interval 2
    assert all(r["steps_in_window"] == 2 and r["samples_per_s"] > 0 and r["eta_s"] >= 0 for r in train_lines)
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", "eval")] == [4, 6]
    capsys.readouterr()

    image = SmartWatch(tiny_config().data.test).image(0)
    image.resize((96, 96)).save(tmp_path / "watch.png")  # another size: ask resizes to the source's resolution
    assert main(["ask", str(run), str(tmp_path / "watch.png"), "What time does the watch show?"]) == 0
    greedy = capsys.readouterr().out
    assert greedy.endswith("\n")
    assert main(["ask", str(run), str(tmp_path / "watch.png"), "What time does the watch show?"]) == 0
    assert capsys.readouterr().out == greedy  # greedy is deterministic
    assert main(["ask", str(run), str(tmp_path / "watch.png"), "What time?", "--temperature", "1.5", "--top-k",
                 "20", "--seed", "3", "--checkpoint", "4"]) == 0

    out = tmp_path / "draw" / "watch.png"
    assert main(["draw", str(run), "Draw a smart watch showing the time 02:07:00.", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (RESOLUTION, RESOLUTION) and im.mode == "RGB"
    _draw_reads_its_drawing_back(run, tmp_path, capsys, monkeypatch)

    capsys.readouterr()
    assert main(["eval", str(run), "--questions", "5"]) == 0
    table = capsys.readouterr().out
    assert "| total" in table and "step 6" in table
    preds = read_predictions(run / "predictions" / "eval-step-000006.jsonl")
    assert len(preds) == 5 and all(k.startswith("test-vqa-") for k in preds)
    assert main(["eval", str(run), "--questions", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["total"] == 5 and report["step"] == 6
    assert main(["eval", str(run), "--conditioning", "4", "--json"]) == 0
    gap = json.loads(capsys.readouterr().out)
    assert gap["n"] == 4 and gap["gap"] == pytest.approx(gap["shuffled"] - gap["own"]) and gap["own"] > 0
    balance = gap["gradient_balance"]
    assert balance["blocks"]["text"] > 0 and balance["blocks"]["ratio"] == pytest.approx(
        balance["blocks"]["text"] / balance["blocks"]["vision"])
    assert len(balance["blocks"]["per_batch"]) == balance["batches"] > 1
    assert main(["eval", str(run), "--drawings", "6", "--json"]) == 0
    drawn = json.loads(capsys.readouterr().out)
    assert drawn["generated"] == 6 and drawn["chance"] == pytest.approx(1 / 3)
    assert all(0 <= drawn[k] <= 1 for k in ("probe_on_real", "probe_on_generated", "centroid_on_generated"))
    assert -1 <= drawn["similarity_other"] <= 1 and -1 <= drawn["similarity_own"] <= 1

    _one_line_error(capsys, ["train", "--resume", str(run), "--variant", "VQ_u"], "--variant cannot change a run")
    _one_line_error(capsys, ["ask", str(run), str(tmp_path / "missing.png"), "q?"], "image")
    (tmp_path / "notimage.png").write_text("hello")
    _one_line_error(capsys, ["ask", str(run), str(tmp_path / "notimage.png"), "q?"], "cannot read image")
    _one_line_error(capsys, ["ask", str(tmp_path), str(tmp_path / "watch.png"), "q?"], "is not a run folder")
    _one_line_error(capsys, ["draw", str(run), "Draw a watch.", str(tmp_path / "x.gif")], "must end in .png")
    _one_line_error(capsys, ["eval", str(run), "--checkpoint", "3"], "checkpoint 'step-000003' not found")


def test_draw_without_a_pixel_decoder_and_understanding_only_runs(tmp_path, capsys):
    for variant in ("SigLIP-SigLIP", "SigLIP_u"):
        cfg = tiny_config(variant, steps=1)
        (tmp_path / f"{variant}.json").write_text(json.dumps(cfg.to_dict()))
        assert main(["train", "--config", str(tmp_path / f"{variant}.json"), "--out", str(tmp_path / variant),
                     "--quiet"]) == 0
    _one_line_error(capsys, ["draw", str(tmp_path / "SigLIP-SigLIP"), "Draw a watch.", str(tmp_path / "a.png")],
                    "cannot be turned into pixels")
    _one_line_error(capsys, ["draw", str(tmp_path / "SigLIP_u"), "Draw a watch.", str(tmp_path / "a.png")],
                    "understanding-only model")
    _one_line_error(capsys, ["eval", str(tmp_path / "SigLIP_u"), "--conditioning", "4"], "understanding-only model")
    _one_line_error(capsys, ["eval", str(tmp_path / "SigLIP_u"), "--drawings", "4"], "--drawings needs a run")
    _one_line_error(capsys, ["eval", str(tmp_path / "SigLIP_u"), "--drawings", "4", "--conditioning", "4"],
                    "separate evaluations")
    assert not (tmp_path / "a.png").exists()


def test_train_flags_and_bad_inputs(tmp_path, capsys, config_file):
    assert main(["train", "--variant", "VQ*-VQ-D", "--steps", "7", "--seed", "3", "--llm", "debug",
                 "--batch-size", "16", "--samples", "1K", "--questions", "10", "--print-config"]) == 0
    cfg = RunConfig.from_dict(json.loads(capsys.readouterr().out))
    assert (cfg.variant, cfg.optim.steps, cfg.seed, cfg.model.seed, cfg.optim.batch_size) == ("VQ*-VQ-D", 7, 3, 3, 16)
    assert cfg.model.affine and cfg.model.detach and cfg.data.train.n_generation == 1000
    assert cfg.eval == EvalConfig(questions=10)
    # --variant on top of a config file keeps the file's sizes
    assert main(["train", "--config", str(config_file), "--variant", "SigLIP_u", "--print-config"]) == 0
    cfg = RunConfig.from_dict(json.loads(capsys.readouterr().out))
    assert cfg.mode == "understanding" and cfg.model.llm.preset == "debug" and cfg.data.train.n_vqa == 24

    _one_line_error(capsys, ["train", "--variant", "SigLIP-Foo"], "unknown variant 'SigLIP-Foo': use one of")
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "none.json")], "not found")
    (tmp_path / "bad.json").write_text("{not json")
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "bad.json")], "is not valid JSON")
    (tmp_path / "unknown.json").write_text(json.dumps({"optim": {"lr": 1}}))
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "unknown.json")], "unknown optim key(s) lr")
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "nowhere")], "is not a run folder")
    _one_line_error(capsys, ["train", "--config", str(config_file), "--llm", "huge", "--out", str(tmp_path / "r")],
                    "unknown LLM preset 'huge'")
    try:  # a bad flag is argparse's one-line usage error with exit code 2
        code = main(["train", "--steps", "0"])
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert "expected a positive integer" in capsys.readouterr().err


class _StubReader:
    """Reads every image as one fixed watch (draw's read-back, without training a reader)."""

    resolution = RESOLUTION

    def __init__(self, hour: int, minute: int):
        self.reading = {"hour": hour, "minute": minute, "second": 0, "weather": "sunny", "weather_position": "top-left",
                        "battery_position": "bottom-right", "battery": 50, "face_color": [0, 0, 0]}

    def read(self, x):
        return [dict(self.reading) for _ in range(x.shape[0])]


def _draw_reads_its_drawing_back(run, tmp_path, capsys, monkeypatch):
    """draw says what the reader reads against what was asked, warns when it reads none of it, never trains one."""
    import uvlm.vision.reader as reader_mod

    instruction = "Draw a smart watch showing the time 02:07:00, with the weather icon in the top-left corner."
    monkeypatch.setattr(reader_mod, "cached_reader", lambda config=None: None)
    capsys.readouterr()
    assert main(["draw", str(run), instruction, str(tmp_path / "a.png")]) == 0
    assert "no reader in the cache: 'uvlm vision train --what reader'" in capsys.readouterr().err
    monkeypatch.setattr(reader_mod, "cached_reader", lambda config=None: tmp_path)
    for (hour, minute), drawn in (((2, 7), 2), ((8, 30), 1)):
        monkeypatch.setattr(reader_mod, "load_reader", lambda path, h=hour, m=minute: _StubReader(h, m))
        assert main(["draw", str(run), instruction, str(tmp_path / "b.png")]) == 0
        err = capsys.readouterr().err
        assert f"time {hour:02d}:{minute:02d}:00 (asked 02:07:00), weather_position top-left (asked top-left); " \
               f"{drawn} of 2 stated attributes drawn" in err and "warning" not in err
    monkeypatch.setattr(reader_mod, "load_reader", lambda path: _StubReader(8, 30))
    instruction = "Draw a smart watch showing the time 02:07:00, with the battery in the top-left corner."
    assert main(["draw", str(run), instruction, str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err
    assert "0 of 2 stated attributes drawn" in err
    assert "warning: the reader finds none of the 2 stated attributes in this drawing" in err
