"""Training: configs and variants, the data order, every variant and mode learning, LoRA, accumulation, divergence."""

from __future__ import annotations

import json
from dataclasses import replace
import math

import pytest

from _fakes import tiny_config
from uvlm.data.config import SplitConfig
from uvlm.data.scoring import read_predictions, score_predictions
from uvlm.errors import UserError
from uvlm.eval.vqa import vqa_evaluator, vqa_questions
from uvlm.train.config import (LoRAConfig, OptimConfig, RunConfig, parse_variant, variant_config, variant_names)
from uvlm.train.data import SampleOrder, training_items
from uvlm.train.loop import TrainingDiverged, train
from uvlm.train.metrics import read_metrics


pytestmark = pytest.mark.usefixtures("fake_vision")


# ----- configs -------------------------------------------------------------------------------------------------------
def test_every_variant_name_builds_a_consistent_config_that_round_trips_through_json():
    names = variant_names()
    assert {"SigLIP-SigLIP", "VQ-VQ", "SigLIP-VQ", "VQ-SigLIP", "SigLIP_u", "VQ_u", "VQ_g", "SigLIP_g",
            "SigLIP-SigLIP-D", "VQ-VQ-D", "SigLIP*-SigLIP", "VQ*_u"} <= set(names)
    for name in names:
        cfg = variant_config(name)
        assert cfg.variant == name
        # the model's own row name agrees with the variant for the unified and _u models
        if not name.endswith("_g"):
            assert cfg.model.name == name
        again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    assert parse_variant("vq_u") == parse_variant("VQ_u")
    assert variant_config("VQ_g").mode == "generation" and variant_config("VQ_g").model.target == "vq"
    assert variant_config("SigLIP_u").model.target is None and variant_config("SigLIP_u").mode == "understanding"
    assert variant_config("VQ*-VQ-D").model.affine and variant_config("VQ*-VQ-D").model.detach


def test_bad_configs_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown variant 'SigLIP-Foo': use one of SigLIP-SigLIP") as e:
        variant_config("SigLIP-Foo")
    assert "\n" not in str(e.value) and "VQ_g" in str(e.value)
    with pytest.raises(UserError, match="unknown optim key"):
        RunConfig.from_dict({"optim": {"batch_sise": 3}})
    with pytest.raises(UserError, match="unknown run config key"):
        RunConfig.from_dict({"modee": "mixed"})
    with pytest.raises(UserError, match="unknown data.train key"):
        RunConfig.from_dict({"data": {"train": {"n_vqaa": 3}}})
    with pytest.raises(UserError, match="model.encoder 'vq' differs"):
        RunConfig.from_dict({"model": {"encoder": "vq", "input_dim": 8}})
    with pytest.raises(UserError, match="no generation target"):
        RunConfig.from_dict({**variant_config("SigLIP_u").to_dict(), "mode": "mixed"})
    with pytest.raises(UserError, match="batch_size"):
        OptimConfig(batch_size=0)
    # partial configs keep the defaults
    cfg = RunConfig.from_dict({"optim": {"lr_llm": 5e-4}, "lora": {"enabled": True, "target_modules": ["q_proj"]}})
    assert cfg.optim.lr_llm == 5e-4 and cfg.optim.batch_size == OptimConfig().batch_size
    assert cfg.lora.target_modules == ("q_proj",)


# ----- data order ----------------------------------------------------------------------------------------------------
def test_sample_order_is_a_seeded_permutation_per_epoch_addressed_by_position():
    split = SplitConfig.train(n_vqa=5, n_caption=4, n_generation=6)
    items = training_items(split, "mixed")
    assert len(items) == 15
    assert {t for t, _ in training_items(split, "understanding")} == {"vqa", "caption"}
    assert {t for t, _ in training_items(split, "generation")} == {"generation"}
    a, b = SampleOrder.for_mode(split, "mixed", 3), SampleOrder.for_mode(split, "mixed", 3)
    epoch0 = a.take(0, 15)
    assert sorted(epoch0) == sorted(items) and epoch0 != items
    assert b.take(0, 15) == epoch0
    assert a.take(15, 15) != epoch0 and sorted(a.take(15, 15)) == sorted(items)
    # any slice equals the same positions of one long read: resuming at a position is exact
    whole = SampleOrder.for_mode(split, "mixed", 3).take(0, 40)
    assert SampleOrder.for_mode(split, "mixed", 3).take(13, 9) == whole[13:22]
    assert SampleOrder.for_mode(split, "mixed", 4).take(0, 15) != epoch0


def test_arms_of_one_seed_see_identical_understanding_samples_in_identical_order():
    """The paired design: understanding-only and mixed runs (any amount of generation data) share the stream."""
    und_only = SampleOrder.for_mode(SplitConfig.train(n_vqa=40, n_caption=40, n_generation=80), "understanding", 7)
    stream = und_only.take(0, 80 * 3)  # three epochs
    for n_gen in (0, 40, 80, 320):
        mixed = SampleOrder.for_mode(SplitConfig.train(n_vqa=40, n_caption=40, n_generation=n_gen), "mixed", 7)
        seen = mixed.take(0, len(mixed) * 3)
        assert [x for x in seen if x[0] != "generation"] == stream
        gens = [x for x in seen if x[0] == "generation"]
        assert len(gens) == 3 * n_gen and (not gens or sorted(set(gens)) == sorted(set(training_items(
            SplitConfig.train(n_vqa=0, n_caption=0, n_generation=n_gen), "generation"))))
        if n_gen:  # evenly spaced: every batch of 32 holds the same share of generation samples, up to one
            share = n_gen / (80 + n_gen)
            for lo in range(0, len(seen) - 32, 32):
                k = sum(x[0] == "generation" for x in seen[lo:lo + 32])
                assert abs(k - 32 * share) <= 1
    # generation samples follow their own seed: the same in every mixed run of the seed, whatever the understanding data
    g1 = SampleOrder.for_mode(SplitConfig.train(n_vqa=10, n_caption=10, n_generation=30), "mixed", 7)
    g2 = SampleOrder.for_mode(SplitConfig.train(n_vqa=50, n_caption=50, n_generation=30), "mixed", 7)
    assert [x for x in g1.take(0, 50) if x[0] == "generation"] == [x for x in g2.take(0, 130) if x[0] == "generation"]
    assert SampleOrder.for_mode(SplitConfig.train(n_vqa=40, n_caption=40), "understanding", 8).take(0, 80) != stream[:80]


# ----- every variant and mode learns ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["SigLIP-SigLIP", "VQ-VQ", "SigLIP-VQ", "VQ-SigLIP", "SigLIP_u", "VQ_u",
                                     "VQ_g", "SigLIP_g", "VQ-VQ-D", "SigLIP*-SigLIP", "SigLIP-LLMEmbeds"])
def test_every_variant_trains_and_its_loss_falls(variant, tmp_path):
    cfg = tiny_config(variant, steps=8)
    result = train(cfg, tmp_path / "run", quiet=True)
    losses = result.losses
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2 - 0.05, losses
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    last = recs[-1]
    assert last["samples"] == 8 * 8 == last["understanding_samples"] + last["generation_samples"]
    if cfg.mode == "understanding":
        assert last["generation_samples"] == 0 and last["vision_loss"] is None
    elif cfg.mode == "generation":
        assert last["understanding_samples"] == 0 and last["text_loss"] == 0.0
    else:
        assert last["understanding_samples"] > 0 and last["generation_samples"] > 0
    assert last["image_tokens"] == 16 * last["samples"]  # every sample has one image of 16 tokens
    assert last["text_tokens"] > 0 and last["tokens"] == last["text_tokens"] + last["image_tokens"]


def test_accumulation_does_not_change_the_trajectory(tmp_path):
    """The loss is token-weighted over the global batch, so splitting it into micro-batches changes nothing."""
    one = train(tiny_config("SigLIP-VQ", steps=4), tmp_path / "a", quiet=True)
    cfg = tiny_config("SigLIP-VQ", steps=4)
    four = train(cfg.with_(optim=OptimConfig(**{**cfg.optim.__dict__, "grad_accumulation": 4})), tmp_path / "b",
                 quiet=True)
    assert one.losses == pytest.approx(four.losses, rel=0, abs=1e-5)
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a/checkpoints/step-000004/model.safetensors"))
    wb = load_file(str(tmp_path / "b/checkpoints/step-000004/model.safetensors"))
    # Adam normalises each update, so float rounding in near-zero gradients shows up at ~1e-5 in the weights
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 2e-4
    with pytest.raises(UserError, match="make it a multiple of 3"):
        train(cfg.with_(optim=OptimConfig(**{**cfg.optim.__dict__, "grad_accumulation": 3})), tmp_path / "c")


def test_length_groups_cut_padding_and_keep_the_trajectory(tmp_path):
    """Length-sorted passes over a batch waste fewer positions on padding and give the same losses and weights."""
    from safetensors.torch import load_file

    from uvlm.train.config import RuntimeConfig
    from uvlm.train.data import length_groups

    class Seq:
        def __init__(self, n):
            self.input_ids = [0] * n

    parts = length_groups([Seq(n) for n in (9, 3, 7, 3, 5, 1, 8)], 3)
    assert [[len(e.input_ids) for e in p] for p in parts] == [[1, 3], [3, 5, 7], [8, 9]]
    assert len(length_groups([Seq(2), Seq(4)], 4)) == 2  # never an empty pass
    padded = lambda groups: sum(len(g) * max(len(e.input_ids) for e in g) for g in groups)  # noqa: E731
    seqs = [Seq(n) for n in (9, 3, 7, 3, 5, 1, 8)]
    assert padded(length_groups(seqs, 3)) < padded(length_groups(seqs, 1)) == 7 * 9

    cfg = tiny_config("SigLIP-SigLIP", steps=4)
    one = train(cfg, tmp_path / "a", quiet=True)
    grouped = train(cfg.with_(runtime=RuntimeConfig(length_groups=3)), tmp_path / "b", quiet=True)
    assert one.losses == pytest.approx(grouped.losses, rel=0, abs=1e-5)
    wa = load_file(str(tmp_path / "a/checkpoints/step-000004/model.safetensors"))
    wb = load_file(str(tmp_path / "b/checkpoints/step-000004/model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 2e-4
    with pytest.raises(UserError, match="runtime.length_groups"):
        RuntimeConfig(length_groups=0)


# ----- LoRA ----------------------------------------------------------------------------------------------------------
def test_lora_trains_only_lora_adapters_head_and_new_token_rows(tmp_path):
    from uvlm.train.checkpoint import build_model, build_run_tokenizer
    from uvlm.train.config import resolve_model_config
    from uvlm.train.data import load_sources

    cfg = tiny_config("SigLIP-SigLIP", steps=4, lora=LoRAConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    sources = load_sources(cfg)
    mc = resolve_model_config(cfg, sources.understanding, sources.generation)
    model = build_model(cfg, mc, build_run_tokenizer(cfg), sources)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n) or ("trainable_tokens" in n) or n.startswith(("und_adapter", "target.head"))
                             for n in trainable), trainable
    assert any("lora_A" in n for n in trainable) and any("trainable_tokens" in n for n in trainable)
    assert {n for n in trainable if not ("lora_" in n or "trainable_tokens" in n)} == {
        "und_adapter.weight", "und_adapter.bias", "target.head.weight", "target.head.bias"}
    groups = model.parameter_groups()
    assert sum(p.numel() for p in groups["llm"]) < 0.5 * sum(p.numel() for p in model.llm.parameters())

    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.losses[-1] < result.losses[0]
    ck = tmp_path / "run/checkpoints/step-000004"
    assert (ck / "trainable.safetensors").is_file() and (ck / "adapter" / "adapter_model.safetensors").is_file()
    assert not (ck / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(str(ck / "trainable.safetensors"))
    assert set(saved) == set(trainable)
    # the new token rows moved; the LoRA B matrices (zero at init) moved
    delta = next(v for k, v in saved.items() if "trainable_tokens_delta" in k)
    assert delta.shape[0] == 3 and float(delta.abs().sum()) > 0
    assert any(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k)


def test_lora_on_missing_modules_is_a_user_error(tmp_path):
    cfg = tiny_config("SigLIP_u", lora=LoRAConfig(enabled=True, r=4, alpha=8, target_modules=("q_proj", "qkv")))
    with pytest.raises(UserError, match="LoRA target module\\(s\\) qkv do not exist in the LLM: use some of"):
        train(cfg, tmp_path / "run", quiet=True)


# ----- divergence ----------------------------------------------------------------------------------------------------
def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from uvlm.model.unified import UnifiedVLM

    forward = UnifiedVLM.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        out = forward(self, batch)
        calls["n"] += 1
        if calls["n"] > 2:  # steps 1 and 2 are fine, step 3 diverges
            out.text_loss = out.text_loss * float("nan")
        return out

    monkeypatch.setattr(UnifiedVLM, "forward", poisoned)
    cfg = tiny_config("SigLIP_u", steps=5)
    cfg = cfg.with_(checkpoint=cfg.checkpoint.__class__(every=2))
    with pytest.raises(TrainingDiverged, match="training diverged at step 3: loss nan") as e:
        train(cfg, tmp_path / "run", quiet=True)
    assert "\n" not in str(e.value) and "step-000002" in str(e.value)
    assert (tmp_path / "run/checkpoints/latest").read_text().strip() == "step-000002"
    assert [p.name for p in (tmp_path / "run/checkpoints").iterdir() if p.name.startswith("step")] == ["step-000002"]


# ----- evaluation during training ------------------------------------------------------------------------------------
def test_periodic_evaluation_records_samples_seen_and_rescorable_predictions(tmp_path):
    cfg = tiny_config("SigLIP-SigLIP", steps=4, questions=6)
    cfg = cfg.with_(eval=cfg.eval.__class__(every=2, questions=6, batch_size=4, max_new_tokens=6))
    train(cfg, tmp_path / "run", quiet=True, evaluator=vqa_evaluator)
    evals = read_metrics(tmp_path / "run/metrics.jsonl", "eval")
    assert [e["step"] for e in evals] == [2, 4]
    assert evals[0]["understanding_samples"] < evals[1]["understanding_samples"]
    assert evals[1]["understanding_samples"] == read_metrics(tmp_path / "run/metrics.jsonl", "train")[-1][
        "understanding_samples"]
    for e in evals:
        preds = read_predictions(tmp_path / "run" / e["predictions"])
        questions, _ = vqa_questions(cfg.data.test, 6)
        assert len(preds) == 6
        assert score_predictions(questions, preds).total == pytest.approx(e["vqa_total"])
    state = json.loads((tmp_path / "run/checkpoints/step-000004/state.json").read_text())
    assert state["best"]["vqa_total"] == max(e["vqa_total"] for e in evals)


def test_each_encoder_kind_can_have_its_own_source(monkeypatch):
    """A mixed model at full scale needs two checkpoints: vision.siglip_source and vision.vq_source."""
    import uvlm.train.data as data_mod
    from _fakes import fake_vision_source
    from uvlm.train.data import load_sources

    asked = []

    def recording(kind, source="tiny"):
        asked.append((kind, source))
        return fake_vision_source(kind, source)

    monkeypatch.setattr(data_mod, "get_vision_source", recording)
    cfg = tiny_config("SigLIP-VQ")
    cfg = replace(cfg, vision=replace(cfg.vision, siglip_source="/models/siglip", vq_source="/models/vq_ds16_t2i.pt"))
    load_sources(cfg)
    assert asked == [("siglip", "/models/siglip"), ("vq", "/models/vq_ds16_t2i.pt")]
    asked.clear()
    load_sources(replace(cfg, vision=replace(cfg.vision, siglip_source=None, vq_source=None, source="tiny")))
    assert asked == [("siglip", "tiny"), ("vq", "tiny")]
