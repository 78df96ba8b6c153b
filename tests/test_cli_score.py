"""`uvlm score` end to end on a real materialized test split."""

from __future__ import annotations

import json

import pytest

from uvlm.cli.main import main
from uvlm.data import SmartWatch, SplitConfig
from uvlm.data.scoring import questions_from_samples, reference_predictions


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "test"
    assert main(["data", "generate", str(out), "--split", "test", "--vqa", "60", "--generation", "4",
                 "--workers", "1", "--quiet"]) == 0
    return out


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_perfect_and_wrong_answers(test_split, tmp_path, capsys):
    samples = list(SmartWatch(SplitConfig.test(n_vqa=60, n_generation=4)).stream("vqa", with_image=False))
    questions = questions_from_samples(samples)
    ref = reference_predictions(questions)
    preds = write(tmp_path / "p.jsonl", [{"id": k, "prediction": f"It shows {v}."} for k, v in ref.items()])
    capsys.readouterr()
    assert main(["score", "--test", str(test_split), "--predictions", str(preds), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scores"]["total"] == pytest.approx(100.0)
    assert report["counts"]["total"] == 60
    # every answer unparsable: 0, and still counted
    bad = write(tmp_path / "bad.jsonl", [{"id": k, "prediction": "no idea"} for k in ref])
    assert main(["score", "--test", str(test_split), "--predictions", str(bad), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scores"]["total"] == 0.0 and report["counts"]["total"] == 60
    # human-readable table
    assert main(["score", "--test", str(test_split), "--predictions", str(preds)]) == 0
    assert "total" in capsys.readouterr().out


def test_score_missing_and_unknown_ids_are_named(test_split, tmp_path, capsys):
    ids = [f"test-vqa-{i:08d}.0" for i in range(60)]
    missing = write(tmp_path / "m.jsonl", [{"id": k, "prediction": "x"} for k in ids[1:]])
    assert main(["score", "--test", str(test_split), "--predictions", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ids[0] in err
    unknown = write(tmp_path / "u.jsonl", [{"id": k, "prediction": "x"} for k in ids + ["nope.0"]])
    assert main(["score", "--test", str(test_split), "--predictions", str(unknown)]) == 2
    assert "nope.0" in capsys.readouterr().err
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"id": "a", "prediction": "x"}\n{"id": \n')
    assert main(["score", "--test", str(test_split), "--predictions", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and err.count("\n") == 1
