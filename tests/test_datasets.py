"""The dataset protocol and registry: SmartWatch on it keeps today's bytes, the registry names what it holds, a run
config names its dataset only when it is not the default."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from uvlm.data import Bias, SmartWatch, SplitConfig
from uvlm.data.datasets import (DATASETS, DEFAULT_DATASET, Dataset, dataset_class, dataset_of_config,
                                open_dataset)
from uvlm.errors import UserError
from uvlm.train.config import DataConfig, RunConfig
from uvlm.train.features import FeatureCache

#: Recorded with the code before the protocol existed (commit 7931ba8): the digest of :func:`_smartwatch_digest` and
#: the feature-cache folder of one split. Equal values mean the same images, texts, scores and cache keys.
DIGEST_BEFORE = "a1e27aeddb91b7541bcabf3022e75cffe47cb1aeb7f6ad7da169f3b0b2ad4bb6"
CACHE_DIR_BEFORE = "dbef32614d407c4c"


def _smartwatch_digest() -> str:
    h = hashlib.sha256()
    cfgs = [SplitConfig.train(n_vqa=6, n_caption=6, n_generation=6, seed=3),
            SplitConfig.train(n_vqa=6, n_caption=6, n_generation=6, seed=3, bias=Bias("weather", 0.05, 0.0)),
            SplitConfig.test(n_vqa=8, n_generation=4, seed=1)]
    for cfg in cfgs:
        ds = open_dataset(cfg)
        for t in ("vqa", "caption", "generation"):
            for i in range(cfg.count(t)):
                s = ds.sample(t, i)
                h.update(json.dumps([s.id, s.image_index, s.attributes.to_dict(), [vars(x) for x in s.turns],
                                     list(s.mentioned)]).encode())
                h.update(s.image.tobytes())
    test = open_dataset(cfgs[2])
    qs = test.questions(test.stream("vqa", with_image=False))
    preds = test.reference_answers(qs)
    preds = {k: (v if n % 3 else "12:30:00 51% sunny top-left") for n, (k, v) in enumerate(preds.items())}
    h.update(json.dumps(test.score(qs, preds).to_dict(), sort_keys=True).encode())
    return h.hexdigest()


def test_smartwatch_through_the_protocol_keeps_its_bytes():
    assert _smartwatch_digest() == DIGEST_BEFORE


def test_the_feature_cache_key_and_images_are_unchanged():
    ds = open_dataset(SplitConfig.train(seed=2, resolution=64))
    cache = FeatureCache(lambda images: None, {"kind": "fake"}, ds, chunk=16)
    assert cache.dir.name == CACHE_DIR_BEFORE
    # the cache's images are the samples' images
    assert [im.tobytes() for im in cache._images(3, 5)] == [ds.sample("vqa", i).image.tobytes() for i in (3, 4)]


def test_smartwatch_is_a_registered_dataset():
    assert DEFAULT_DATASET == "smartwatch" and dataset_class("smartwatch") is SmartWatch
    sw = open_dataset(SplitConfig.test(n_vqa=3))
    assert isinstance(sw, SmartWatch) and isinstance(sw, Dataset)
    assert dataset_of_config(sw.config) == "smartwatch" == sw.name
    assert sw.metric_columns[-1] == "total" and set(sw.attribute_names) == {
        "time", "weather", "battery", "weather_position", "battery_position"}
    assert sw.split("test").n_vqa == 1000 and sw.split("train", n_vqa=5).n_vqa == 5


def test_image_at_another_resolution_shows_the_same_watch():
    sw = open_dataset(SplitConfig.train(n_vqa=2, resolution=64))
    big = sw.image(1, resolution=96)
    assert big.size == (96, 96) and sw.image(1).size == (64, 64)
    assert np.array_equal(np.asarray(big), np.asarray(open_dataset(sw.config.with_(resolution=96)).image(1)))


def test_a_perfect_answer_sheet_scores_100_and_a_wrong_one_less():
    ds = open_dataset(SplitConfig.test(n_vqa=20))
    qs = ds.questions(ds.stream("vqa", with_image=False))
    assert ds.score(qs, ds.reference_answers(qs)).total == pytest.approx(100.0)
    wrong = {q.id: "no idea" for q in qs}
    assert ds.score(qs, wrong).total == 0.0


def test_unknown_dataset_names_are_one_line_errors():
    with pytest.raises(UserError, match="unknown dataset 'mnist': use one of smartwatch"):
        dataset_class("mnist")
    with pytest.raises(UserError, match="not the split config of a registered dataset"):
        open_dataset({"name": "train"})
    with pytest.raises(UserError, match="unknown data.dataset 'mnist'"):
        DataConfig.from_dict({"dataset": "mnist"})


def test_the_default_dataset_stays_out_of_the_run_config():
    d = RunConfig().to_dict()
    assert "dataset" not in d["data"]
    explicit = json.loads(json.dumps(d))
    explicit["data"]["dataset"] = "smartwatch"
    assert RunConfig.from_dict(explicit).to_dict() == d
    assert set(DATASETS) >= {"smartwatch"}


def test_the_training_loop_evaluates_through_the_callable_it_is_given(tmp_path, fake_vision, capsys):
    """The loop imports no evaluation: it calls the evaluator's ``evaluate`` and logs whatever columns it names."""
    from _fakes import tiny_config

    from uvlm.train.loop import train

    calls = []

    def evaluator(config, sources, out):
        assert out == tmp_path / "run" and sources.understanding is not None
        assert config.model.input_dim is not None  # resolved from the sources before the factory is called

        def evaluate(model, step, final):
            calls.append((step, final))
            return {"unit": "percent", "scores": {"Male": 50.0 + step, "total": 40.0 + step},
                    "counts": {"Male": 2, "total": 4}, "unparsed": {"Male": 0, "total": 1},
                    "columns": ("Male", "total"), "predictions": f"predictions/step-{step:06d}.jsonl"}
        return evaluate

    cfg = tiny_config("SigLIP_u", steps=4, questions=4)
    cfg = cfg.with_(eval=cfg.eval.__class__(every=2, questions=4))
    result = train(cfg, tmp_path / "run", evaluator=evaluator)
    assert calls == [(2, False), (4, True)]
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if x["kind"] == "eval"]
    assert [(e["vqa"], e["vqa_total"], e["questions"], e["unparsed"]) for e in evals] == [
        ({"Male": 52.0, "total": 42.0}, 42.0, 4, 1), ({"Male": 54.0, "total": 44.0}, 44.0, 4, 1)]
    assert result.state["best"] == {"vqa_total": 44.0, "step": 4}
    assert "VQA Male 54.0 total 44.0" in capsys.readouterr().err
    # without an evaluator the same run evaluates nothing
    train(cfg, tmp_path / "quiet", quiet=True)
    assert not any(json.loads(x)["kind"] == "eval" for x in (tmp_path / "quiet/metrics.jsonl").read_text().splitlines())
