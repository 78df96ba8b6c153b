"""A stage of the LLaVA extension inside lmms-eval (``--model uvlm --model_args run=STAGE_RUN``), through lmms-eval's
own ``simple_evaluate`` on a local task (SmartWatch's), answering exactly as the run does directly. Skipped without
lmms-eval (docs/lmms-eval.md)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from uvlm.cli.main import main
from uvlm.data import SplitConfig
from uvlm.data.storage import materialize, read_samples
from uvlm.model.llava_tiny import save_tiny_llava

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None,
                                reason="lmms-eval is not installed (pip install --no-deps lmms-eval==0.7.3 and "
                                       "pip install -e '.[lmms]'; see docs/lmms-eval.md)")


@pytest.fixture(scope="module")
def llava_run(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("llava-lmms")
    base = save_tiny_llava(root / "base")
    (root / "img").mkdir()
    recs = []
    for i, c in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200), (200, 200, 20)]):
        Image.new("RGB", (40 + 6 * i, 40), c).save(root / "img" / f"{i}.png")
        recs.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat time does the watch show?"}, {"from": "gpt", "value": "02:07:00"}]})
    (root / "pre.json").write_text(json.dumps(recs))
    out = root / "s1"
    assert main(["llava", "train", "--stage", "1", "--base", str(base), "--target", "none", "--understanding",
                 str(root / "pre.json"), "--images", str(root / "img"), "--steps", "2", "--batch-size", "2",
                 "--out", str(out), "--quiet"]) == 0
    return out


def test_llava_run_answers_through_lmms_eval(llava_run, tmp_path, monkeypatch):
    import torch
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    from uvlm.integrations.lmms_eval import write_task
    from uvlm.model.generate import answer
    from uvlm.train.llava import load_llava_run

    split = tmp_path / "test"
    materialize(SplitConfig.test(resolution=48, n_vqa=6, n_generation=0), split, workers=1)
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    write_task(split, tmp_path / "tasks")
    out = evaluator.simple_evaluate(model="uvlm", model_args=f"run={llava_run}", tasks=["smartwatch"],
                                    batch_size=3, log_samples=True, bootstrap_iters=0,
                                    task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                                             include_defaults=False),
                                    process_docs_parallel=1)
    logged = {s["doc_id"]: s["filtered_resps"][0] for s in out["samples"]["smartwatch"]}
    assert len(logged) == 6 and "total,none" in out["results"]["smartwatch"]

    m = load_llava_run(llava_run).model
    samples = list(read_samples(split, "vqa"))
    with torch.no_grad():
        feats = m.encode_images(m.preprocess([s.image for s in samples]))
    direct = answer(m, feats, [s.turns[0].question for s in samples], max_new_tokens=24)
    # the task asks for at most 24 new tokens and stops at a newline, as uvlm eval does
    assert logged == {i: a.split("\n")[0] for i, a in enumerate(direct)}
