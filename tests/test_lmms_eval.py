"""SmartWatch in outside harnesses: the lmms-eval task's hooks score exactly like ``uvlm score``, the VLMEvalKit TSV
round-trips, and (when lmms-eval is installed) a uvlm run answers through lmms-eval's own ``simple_evaluate``."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest

from uvlm.cli.main import main
from uvlm.data import SplitConfig
from uvlm.data.scoring import questions_from_samples, read_predictions, score_predictions, write_predictions
from uvlm.data.storage import materialize, read_samples
from uvlm.integrations.lmms_eval import task as sw_task

HAS_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None
needs_lmms_eval = pytest.mark.skipif(
    not HAS_LMMS_EVAL, reason="lmms-eval is not installed (pip install --no-deps lmms-eval==0.7.3 and "
                              "pip install -e '.[lmms]'; see docs/lmms-eval.md)")

RESOLUTION = 48  # the fake vision source of tests/_fakes.py


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    """A split with multi-turn VQA conversations (1 to 4 questions each), to exercise one document per question."""
    out = tmp_path_factory.mktemp("harness") / "train"
    materialize(SplitConfig.train(resolution=RESOLUTION, n_vqa=40, n_caption=0, n_generation=0), out, workers=1)
    return out


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("harness") / "test"
    materialize(SplitConfig.test(resolution=RESOLUTION, n_vqa=12, n_generation=0), out, workers=1)
    return out


def _predictions(questions, seed: int = 0) -> dict[str, str]:
    """A seeded mix of right, near, wrong, hedged and unparsable answers."""
    rng = random.Random(seed)
    out = {}
    for q in questions:
        right = q.truth.value_text(q.attribute)
        kind = rng.choice(["right", "sentence", "wrong", "hedge", "garbage"])
        if kind == "right":
            out[q.id] = right
        elif kind == "sentence":
            out[q.id] = f"The watch shows {right}."
        elif kind == "wrong":
            out[q.id] = {"time": f"{rng.randrange(12):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}",
                         "battery": f"{rng.randrange(101)}%", "weather": rng.choice(["sunny", "cloudy", "raining"]),
                         }.get(q.attribute, rng.choice(["top-left", "top-right", "bottom-left", "bottom-right"]))
        elif kind == "hedge":
            out[q.id] = "sunny or cloudy, top-left or bottom-right, 10% or 90%, 01:00:00 or 02:00:00"
        else:
            out[q.id] = "no idea"
    return out


def _docs(split, tmp_path):
    """The task's documents, loaded the way its task file tells lmms-eval to (parquet builder, its data_files)."""
    import datasets
    import yaml

    from uvlm.integrations.lmms_eval import write_task

    path = write_task(split, tmp_path / "tasks")
    cfg = yaml.safe_load(path.read_text())
    assert cfg["task"] == "smartwatch" and cfg["dataset_path"] == "parquet"
    raw = datasets.load_dataset("parquet", data_files=cfg["dataset_kwargs"]["data_files"],
                                cache_dir=str(tmp_path / "hf"))["test"]
    return sw_task.process_docs(raw)


def test_task_scores_equal_uvlm_score(train_split, tmp_path, capsys):
    questions = questions_from_samples(read_samples(train_split, "vqa", with_images=False))
    assert len(questions) > 40  # multi-turn conversations: more questions than samples
    predictions = _predictions(questions)
    write_predictions(tmp_path / "answers.jsonl", predictions)

    docs = _docs(train_split, tmp_path)
    # one document per question, in the order and with the ids of uvlm's prediction files
    assert [d["question_id"] for d in docs] == [q.id for q in questions]
    assert [d["attribute"] for d in docs] == [q.attribute for q in questions]
    assert all(sw_task.doc_to_target(d) == q.truth.value_text(q.attribute) for d, q in zip(docs, questions))
    records = {m: [] for m in sw_task.METRICS}
    for doc in docs:
        for metric, record in sw_task.process_results(doc, [predictions[doc["question_id"]]]).items():
            records[metric].append(record)
    through_task = {m: getattr(sw_task, f"aggregate_{m}")(records[m]) for m in sw_task.METRICS}

    capsys.readouterr()
    assert main(["score", "--test", str(train_split), "--predictions", str(tmp_path / "answers.jsonl"),
                 "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["scores"]
    assert through_task == {m: cli[m] for m in sw_task.METRICS}
    # the mix is neither perfect nor hopeless, so equality is not a coincidence of extremes
    assert 10 < through_task["total"] < 90
    # a different answer set moves the score the same way through both paths
    worse = {k: "no idea" if i % 2 else v for i, (k, v) in enumerate(predictions.items())}
    worse_via_task = sw_task.report([{**r, "prediction": worse[r["id"]]} for r in records["total"]]).total
    assert worse_via_task == score_predictions(questions, worse).total < through_task["total"]


def test_doc_hooks_give_the_image_and_the_question(test_split, tmp_path):
    docs = _docs(test_split, tmp_path)
    samples = list(read_samples(test_split, "vqa"))
    assert len(docs) == len(samples) == 12
    for doc, s in zip(docs, samples):
        (image,) = sw_task.doc_to_visual(doc)
        assert np.array_equal(np.asarray(image), np.asarray(s.image))
        assert sw_task.doc_to_text(doc) == s.turns[0].question
        assert sw_task.doc_to_text(doc, {"pre_prompt": "Q: ", "post_prompt": " A:"}) == f"Q: {s.turns[0].question} A:"


def test_vlmevalkit_tsv_round_trips(test_split, tmp_path, capsys):
    from uvlm.integrations.vlmevalkit import COLUMNS, read_tsv

    out = tmp_path / "SmartWatch.tsv"
    assert main(["harness", "vlmevalkit", str(test_split), str(out)]) == 0
    assert out.read_text().splitlines()[0].split("\t")[:4] == ["index", "image", "question", "answer"]
    rows = read_tsv(out)
    samples = list(read_samples(test_split, "vqa"))
    questions = questions_from_samples(samples)
    assert len(rows) == len(questions) == 12
    for k, (row, s, q) in enumerate(zip(rows, samples, questions)):
        assert row["index"] == k and row["id"] == q.id and row["category"] == q.attribute
        assert row["question"] == s.turns[0].question and row["answer"] == s.turns[0].answer
        assert row["image"].size == (RESOLUTION, RESOLUTION)
        assert np.array_equal(np.asarray(row["image"]), np.asarray(s.image))
    assert tuple(open(out).readline().rstrip("\n").split("\t")) == COLUMNS

    # a VLMEvalKit result table (the input columns plus prediction) back to uvlm score
    predictions = _predictions(questions, seed=1)
    lines = out.read_text().splitlines()
    result = [lines[0] + "\tprediction"] + [
        line + "\t" + predictions[line.split("\t")[4]] for line in lines[1:]]
    (tmp_path / "result.tsv").write_text("\n".join(result) + "\n")
    assert main(["harness", "vlmevalkit-predictions", str(tmp_path / "result.tsv"),
                 str(tmp_path / "answers.jsonl")]) == 0
    assert read_predictions(tmp_path / "answers.jsonl") == predictions


def test_bad_harness_inputs_are_one_line_errors(test_split, tmp_path, capsys):
    cases = [
        (["harness", "lmms-task", str(tmp_path / "missing"), str(tmp_path / "t")], "does not exist"),
        (["harness", "lmms-task", str(test_split), str(tmp_path / "t"), "--name", "smart-watch"], "identifier"),
        (["harness", "vlmevalkit", str(test_split), str(tmp_path / "out.csv")], "must end in .tsv"),
        (["harness", "vlmevalkit-predictions", str(tmp_path / "none.tsv"), str(tmp_path / "a.jsonl")],
         "not found"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("uvlm: error: ") and words in err and err.count("\n") == 1, err
    assert main(["harness", "lmms-task", str(test_split), str(tmp_path / "t")]) == 0
    capsys.readouterr()
    assert main(["harness", "lmms-task", str(test_split), str(tmp_path / "t")]) == 2  # exists: --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["harness", "lmms-task", str(test_split), str(tmp_path / "t"), "--overwrite"]) == 0


# ----- inside lmms-eval ----------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_run(tmp_path, fake_vision, one_thread):
    from _fakes import tiny_config

    from uvlm.train.loop import train

    run = tmp_path / "run"
    train(tiny_config("SigLIP_u", steps=3), run, quiet=True)
    return run


@needs_lmms_eval
def test_uvlm_run_answers_through_lmms_eval(tiny_run, test_split, tmp_path, monkeypatch):
    import torch
    from lmms_eval import evaluator, models
    from lmms_eval.tasks import TaskManager

    from uvlm.integrations.lmms_eval import write_task
    from uvlm.model.generate import answer
    from uvlm.train.checkpoint import load_run

    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    assert "uvlm" in models.list_available_models()  # found through the package's entry point
    write_task(test_split, tmp_path / "tasks")
    out = evaluator.simple_evaluate(model="uvlm", model_args=f"run={tiny_run}", tasks=["smartwatch"],
                                    batch_size=5, log_samples=True, bootstrap_iters=0,
                                    task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                                             include_defaults=False),
                                    process_docs_parallel=1)
    got = out["results"]["smartwatch"]

    # the same run asked directly, as uvlm eval does
    loaded = load_run(tiny_run)
    samples = list(read_samples(test_split, "vqa"))
    questions = questions_from_samples(samples)
    src = loaded.sources.understanding
    with torch.no_grad():
        feats = src.to_inputs(src.encode_cached([s.image for s in samples]))
    direct = answer(loaded.model, feats, [s.turns[0].question for s in samples], max_new_tokens=24)
    direct = {q.id: a.split("\n")[0] for q, a in zip(questions, direct)}
    report = score_predictions(questions, direct)
    logged = out["samples"]["smartwatch"]
    assert len(logged) == 12
    assert {questions[s["doc_id"]].id: s["filtered_resps"][0] for s in logged} == direct
    for m in sw_task.METRICS:
        want = report.score(m)
        assert (np.isnan(got[f"{m},none"]) and want is None) or got[f"{m},none"] == want, m


def _meta(doc_id: int) -> dict:
    return {"task": "smartwatch", "doc_id": doc_id, "repeats": 1}


def _next_logprobs(model, feats, ids):
    """log p(next token | ids) at the last position, one full forward pass (no cache, no batching)."""
    import torch

    t = torch.tensor([ids])
    emb = model.text_embeddings(t)
    und = torch.zeros(t.shape, dtype=torch.bool)
    und[0, 1:1 + feats.shape[1]] = True
    emb = emb.masked_scatter(und.unsqueeze(-1), model.embed_understanding(feats).to(emb.dtype))
    return torch.log_softmax(model.llm(inputs_embeds=emb, attention_mask=torch.ones_like(t)).logits[0, -1].float(), -1)


@needs_lmms_eval
def test_loglikelihood_is_the_chain_of_next_token_probabilities(tiny_run, test_split, tmp_path):
    import torch
    from lmms_eval.api.instance import Instance

    from uvlm.integrations.lmms_eval.model import UvlmLMM

    lm = UvlmLMM.create_from_arg_string(f"run={tiny_run}", {"batch_size": 4})
    docs = _docs(test_split, tmp_path)
    lm.task_dict = {"smartwatch": {"test": docs}}
    model, seq, src = lm.model, lm.model.sequences, lm.source
    continuations = ["sunny", "51%", "The time is 02:07:00."]
    reqs = [Instance("loglikelihood", (sw_task.doc_to_text(docs[i]), c, sw_task.doc_to_visual, i, "smartwatch",
                                       "test"), idx=0, metadata=_meta(i))
            for i in range(3) for c in continuations]
    got = lm.loglikelihood(reqs)
    with torch.no_grad():
        for req, (lp, greedy) in zip(reqs, got):
            question, cont, _, i = req.args[:4]
            feats = src.to_inputs(src.encode_cached(sw_task.doc_to_visual(docs[i])))
            prompt, target = seq.answer_prompt(question, feats.shape[1]), seq._text(cont)
            steps = [_next_logprobs(model, feats, prompt + target[:k]) for k in range(len(target))]
            want = sum(float(s[t]) for s, t in zip(steps, target))
            assert lp == pytest.approx(want, rel=1e-4, abs=1e-4) and lp < 0
            assert greedy == all(int(s.argmax()) == t for s, t in zip(steps, target))
    # a different image changes the likelihood of the same answer (the image is seen)
    assert got[0][0] != got[len(continuations)][0]
