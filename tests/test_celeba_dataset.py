"""CelebA as a registered dataset: opened from its split config, cached, scored, tokenized and trained through the same
code as SmartWatch, on a fixture in CelebA's file format."""

from __future__ import annotations

import json

import pytest

from celeba_fixture import write_celeba
from uvlm.data import SplitConfig
from uvlm.data.celeba import ATTRIBUTES, CelebA, CelebAConfig, stated_attributes
from uvlm.data.datasets import Dataset, dataset_class, dataset_of_config, open_dataset
from uvlm.errors import UserError
from uvlm.train.config import DataConfig, RunConfig
from uvlm.train.features import FeatureCache


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_celeba(tmp_path_factory.mktemp("celeba"))


def _train(fx, **kw):
    return CelebAConfig.train(fx.root, **{"n_vqa": 12, "n_caption": 12, "n_generation": 12, "min_images": 1,
                                          "resolution": 48, **kw})


def _test(fx, **kw):
    return CelebAConfig.test(fx.root, **{"n_vqa": 16, "n_generation": 8, "min_images": 1, "resolution": 48, **kw})


def test_celeba_is_registered_and_opened_from_its_config(fx):
    assert dataset_class("celeba") is CelebA
    ds = open_dataset(_train(fx))
    assert isinstance(ds, CelebA) and isinstance(ds, Dataset) and dataset_of_config(ds.config) == "celeba"
    assert ds.metric_columns == (*ATTRIBUTES, "total") and ds.attribute_names == ATTRIBUTES
    assert CelebA.split("test", root=str(fx.root)).pool == "test"
    with pytest.raises(UserError, match="needs root"):
        CelebA.split("train")


def test_the_cache_key_names_the_files_and_never_meets_smartwatch(fx, tmp_path):
    ds = open_dataset(_train(fx))
    key = ds.image_key()
    assert key["files"] == ds.identity and key["dataset"] == "celeba"
    sw = open_dataset(SplitConfig.train(resolution=48))
    enc = {"kind": "fake"}
    assert FeatureCache(None, enc, ds).dir != FeatureCache(None, enc, sw).dir
    # the bias and the counts do not change the images, the pool does
    assert FeatureCache(None, enc, open_dataset(_train(fx, n_vqa=3, bias=None))).dir == FeatureCache(None, enc, ds).dir
    assert FeatureCache(None, enc, open_dataset(_train(fx, pool="test"))).dir != FeatureCache(None, enc, ds).dir
    cache = FeatureCache(None, enc, ds, chunk=8)
    assert [im.tobytes() for im in cache._images(2, 4)] == [ds.sample("vqa", i).image.tobytes() for i in (2, 3)]
    # a chunk reaches past the last sample: those images exist too
    assert ds.image(ds.config.n_images + 5).size == (48, 48)


def test_scores_through_the_protocol(fx):
    ds = open_dataset(_test(fx))
    qs = ds.questions(ds.stream("vqa", with_image=False))
    assert ds.score(qs, ds.reference_answers(qs)).to_dict()["scores"]["total"] == 100.0
    flipped = {q.id: ("female" if q.truth["Male"] else "male") if q.attribute == "Male"
               else ("no" if q.truth[q.attribute] else "yes") for q in qs}
    report = ds.score(qs, flipped)
    assert report.total == 0.0 and set(report.to_dict()["scores"]) == set(ds.metric_columns)
    assert report.format_table().splitlines()[-1].startswith("| total | 0.00 | 16 |")


def test_the_run_tokenizer_knows_every_celeba_word(fx):
    from uvlm.train.build import build_run_tokenizer

    cfg = RunConfig(data=DataConfig(dataset="celeba", train=_train(fx), test=_test(fx)))
    tok = build_run_tokenizer(cfg)
    ds = open_dataset(cfg.data.train)
    for task in ("vqa", "caption", "generation"):
        for s in ds.stream(task, with_image=False):
            for t in s.turns:
                ids = tok(t.question + " " + t.answer).input_ids
                assert tok.unk_token_id not in ids, (t.question, t.answer)
    # and SmartWatch's tokenizer is the one it always was: CelebA's words are not in it
    sw = build_run_tokenizer(RunConfig())
    assert sw.unk_token_id in sw("Is the person wearing a necktie?").input_ids


def test_a_celeba_run_config_names_its_dataset_and_round_trips(fx):
    cfg = RunConfig(data=DataConfig(dataset="celeba", train=_train(fx, bias=None), test=_test(fx)))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["data"]["dataset"] == "celeba" and d["data"]["train"]["root"] == str(fx.root)
    assert RunConfig.from_dict(d).to_dict() == d
    with pytest.raises(UserError, match="data.train is a smartwatch split but data.dataset is 'celeba'"):
        DataConfig(dataset="celeba", test=_test(fx))
    with pytest.raises(UserError, match="needs data.test"):
        DataConfig.from_dict({"dataset": "celeba", "train": d["data"]["train"]})
    with pytest.raises(UserError, match="unknown data.train key"):
        DataConfig.from_dict({**d["data"], "train": {**d["data"]["train"], "n_images": 3}})


def test_a_celeba_run_trains_and_evaluates_its_own_columns(fx, tmp_path, fake_vision):
    """The same loop, data pipeline and VQA evaluation as SmartWatch's, only the config names CelebA."""
    from _fakes import tiny_config

    from uvlm.eval.vqa import vqa_evaluator
    from uvlm.train.loop import train
    from uvlm.train.metrics import read_metrics

    base = tiny_config("SigLIP-SigLIP", steps=3, questions=8)
    cfg = base.with_(data=DataConfig(dataset="celeba", train=_train(fx), test=_test(fx), feature_chunk=16))
    result = train(cfg, tmp_path / "run", quiet=True, evaluator=vqa_evaluator)
    assert result.steps == 3 and all(x == x for x in result.losses)
    (ev,) = read_metrics(tmp_path / "run/metrics.jsonl", "eval")
    assert set(ev["vqa"]) == set(ATTRIBUTES) | {"total"} and ev["questions"] == 8
    written = json.loads((tmp_path / "run/config.json").read_text())
    assert written["data"]["dataset"] == "celeba"
    # every caption the run trained on states only true attributes of its image
    ds = open_dataset(cfg.data.train)
    for s in ds.stream("caption", with_image=False):
        assert all(s.attributes[a] == v for a, v in stated_attributes(s.turns[0].answer).items())
