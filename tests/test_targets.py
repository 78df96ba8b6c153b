"""Generation targets: registry, losses, feedback vectors, token selection."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from uvlm.errors import UserError
from uvlm.model.config import LLMConfig, SamplingConfig, UnifiedConfig
from uvlm.model.targets import (TARGETS, ContinuousTarget, Target, build_target, masked_mean, register_target,
                                select_token)

H = 16


def _siglip(dim=6):
    return build_target(UnifiedConfig(input_dim=dim, target="siglip", target_dim=dim), H)


def _vq(k=10, c=4, seed=0):
    cb = torch.randn(k, c, generator=torch.Generator().manual_seed(seed))
    return build_target(UnifiedConfig(encoder="vq", input_dim=c, target="vq"), H, codebook=cb), cb


def test_registry_and_defaults():
    assert {"siglip", "vq", "llm-embeds"} <= set(TARGETS)
    s, (v, _) = _siglip(), _vq()
    e = build_target(UnifiedConfig(input_dim=6, target="llm-embeds"), H)
    assert (s.default_alpha, v.default_alpha, e.default_alpha) == (1.0, 0.2, 1.0)
    assert (s.out_dim, v.out_dim, e.out_dim) == (6, 10, H)
    assert (s.feature_dim, v.feature_dim, e.feature_dim) == (6, 4, H)
    assert (s.space, v.space, e.space) == ("siglip", "vq", "llm")
    assert build_target(UnifiedConfig(target=None), H) is None


def test_unknown_target_and_missing_codebook_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown generation target") as e:
        UnifiedConfig(target="pixels")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="codebook") as e:
        build_target(UnifiedConfig(encoder="vq", input_dim=8, target="vq"), H)
    assert "\n" not in str(e.value)


def test_cosine_loss_is_masked_mean_of_one_minus_cos():
    t = _siglip()
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.stack([1 - F.cosine_similarity(pred[i, j], target[i, j], dim=0)
                            for i in range(2) for j in range(5) if mask[i, j]]).mean()
    assert torch.allclose(t.loss(pred, target, mask), expected, atol=1e-6)
    # masked-out tokens do not matter; a scaled copy of the target costs nothing
    pred2 = pred.clone()
    pred2[~mask] = 100.0
    assert torch.allclose(t.loss(pred2, target, mask), expected, atol=1e-6)
    assert float(t.loss(3.0 * target, target)) == pytest.approx(0.0, abs=1e-6)


def test_empty_mask_gives_zero_loss_in_the_graph():
    pred = torch.randn(1, 3, 6, requires_grad=True)
    loss = _siglip().loss(pred, torch.randn(1, 3, 6), torch.zeros(1, 3, dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) == 0.0
    assert float(masked_mean(torch.ones(0), None)) == 0.0


def test_vq_loss_feedback_and_codebook_buffer():
    t, cb = _vq()
    logits, ids = torch.randn(2, 3, 10), torch.randint(0, 10, (2, 3))
    assert torch.allclose(t.loss(logits, ids), F.cross_entropy(logits.reshape(-1, 10), ids.reshape(-1)), atol=1e-6)
    assert torch.equal(t.vectors(ids), cb[ids])
    vec, loss_targets = t.prepare(ids, understand=None)
    assert torch.equal(vec, cb[ids]) and torch.equal(loss_targets, ids)
    assert "codebook" in dict(t.named_buffers()) and all(p is not t.codebook for p in t.parameters())
    assert {n for n, _ in t.named_parameters()} == {"head.weight", "head.bias"}
    with pytest.raises(UserError, match=r"\[0, 10\)"):
        t.check(torch.tensor([[0, 10]]))
    with pytest.raises(UserError, match="int64"):
        t.check(torch.zeros(1, 2, 4))
    with pytest.raises(UserError, match="float"):
        _siglip().check(torch.zeros(1, 2, dtype=torch.long))


def test_token_selection_greedy_topk_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g)
    assert torch.equal(select_token(logits, SamplingConfig(), None), logits.argmax(-1))
    # top-k = 1 sampling is greedy whatever the temperature
    top1 = SamplingConfig(temperature=5.0, top_k=1)
    assert torch.equal(select_token(logits, top1, torch.Generator().manual_seed(3)), logits.argmax(-1))
    # top-k = 3: every draw is among the 3 best; same seed, same draws; another seed, other draws
    s = SamplingConfig(temperature=2.0, top_k=3)
    a = select_token(logits, s, torch.Generator().manual_seed(1))
    b = select_token(logits, s, torch.Generator().manual_seed(1))
    c = select_token(logits, s, torch.Generator().manual_seed(2))
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == a[:, None]).any(-1).all() and torch.equal(a, b) and not torch.equal(a, c)
    # continuous targets regress: the head output is the token
    out = torch.randn(2, 6)
    assert torch.equal(_siglip().select(out, s, None), out)


def test_llm_embeds_target_stops_gradient():
    t = build_target(UnifiedConfig(input_dim=6, target="llm-embeds"), H)
    proj = torch.nn.Linear(6, H)
    feats = torch.randn(2, 3, 6)
    vec, loss_targets = t.prepare(feats, proj)
    assert torch.allclose(vec, proj(feats)) and vec.requires_grad and not loss_targets.requires_grad
    with pytest.raises(UserError, match="understanding features"):
        t.check(torch.randn(2, 3, 5))


def _register_mse(monkeypatch) -> type:
    """A target made in a test: SigLIP embeddings regressed with the mean squared error, registered for the test."""
    monkeypatch.setattr("uvlm.model.targets.TARGETS", dict(TARGETS))

    @register_target("mse-siglip")
    class MSETarget(ContinuousTarget):
        space = "siglip"
        display = "MSE"
        source_kind = "siglip"

        @classmethod
        def model_sizes(cls, understanding, generation):
            return {"num_output_tokens": generation.num_tokens, "target_dim": generation.target_dim}

        def __init__(self, config, hidden_size, codebook=None):
            super().__init__(config, hidden_size)
            self.out_dim = self.feature_dim = config.target_dim
            self._make_head()

        def per_token_loss(self, pred, target):
            return ((pred - target) ** 2).mean(-1)

    return MSETarget


def test_a_new_target_is_one_registered_class(monkeypatch):
    _register_mse(monkeypatch)
    from uvlm.model import targets as mod

    assert "mse-siglip" in mod.TARGETS and "mse-siglip" not in TARGETS
    t = build_target(UnifiedConfig(input_dim=6, target="mse-siglip", target_dim=6), H)
    assert isinstance(t, Target) and t.name == "mse-siglip"
    x = torch.randn(2, 3, 6)
    assert float(t.loss(x, x)) == 0.0 and float(t.loss(x, x + 1)) == pytest.approx(1.0)


def test_continuous_feedback_keeps_direction_and_takes_the_real_norm():
    """1 - cos leaves a prediction's length free; with feature_norm set, inference rescales it to the real norm."""
    from uvlm.model.config import SamplingConfig
    from uvlm.model.targets import ContinuousTarget

    target = ContinuousTarget.__new__(ContinuousTarget)  # select() needs no module state
    torch.nn.Module.__init__(target)
    pred = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    target.feature_norm = None
    assert torch.equal(target.select(pred, SamplingConfig()), pred)  # raw feedback, as the paper's code
    target.feature_norm = 10.0
    out = target.select(pred, SamplingConfig())
    assert torch.allclose(out.norm(dim=-1), torch.tensor([10.0, 10.0]))
    assert torch.allclose(torch.nn.functional.normalize(out, dim=-1), torch.nn.functional.normalize(pred, dim=-1))


def test_the_target_class_owns_its_name_everywhere(monkeypatch, tmp_path, fake_vision):
    """A registered class is all it takes for variant names, run configs, the vision sources and training."""
    from _fakes import tiny_config

    from uvlm.train.config import RunConfig, parse_variant, variant_names
    from uvlm.train.data import load_sources
    from uvlm.train.loop import train

    _register_mse(monkeypatch)
    names = variant_names()
    assert {"SigLIP-MSE", "SigLIP-MSE-D", "VQ*-MSE", "MSE_g"} <= set(names)
    # targets in an encoder's space come in the encoders' order, the others after them
    assert names.index("SigLIP-SigLIP-D") < names.index("SigLIP-MSE") < names.index("SigLIP-VQ")
    assert names.index("SigLIP-VQ-D") < names.index("SigLIP-LLMEmbeds")
    assert parse_variant("siglip-mse-d")["target"] == "mse-siglip"
    cfg = tiny_config("SigLIP-MSE")
    assert cfg.model.target == cfg.vision.generation == "mse-siglip" and cfg.model.name == "SigLIP-MSE"
    assert load_sources(cfg).generation is load_sources(cfg).understanding  # the same space: one source
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))


def test_vision_generation_follows_the_model_target():
    from uvlm.train.config import RunConfig, VisionConfig

    cfg = RunConfig.from_dict({"variant": "SigLIP-VQ", "model": {"target": "vq"}})
    assert cfg.vision.generation == "vq" and cfg.to_dict()["vision"]["generation"] == "vq"
    assert RunConfig.from_dict({"variant": "SigLIP-VQ", "vision": {"generation": "vq"}}).model.target == "vq"
    assert RunConfig(vision=VisionConfig(generation="vq")).vision.generation == "siglip"  # the model's target rules
    with pytest.raises(UserError, match="model.target 'vq' differs from vision.generation 'siglip'") as e:
        RunConfig.from_dict({"model": {"target": "vq"}, "vision": {"generation": "siglip"}})
    assert "\n" not in str(e.value)
    # settings that only some targets have stay out of the JSON form of the others
    d = RunConfig().to_dict()
    assert "target_options" not in d["model"] and "sources" not in d["vision"]
    with pytest.raises(UserError, match="the siglip target takes no target_options"):
        UnifiedConfig(target="siglip", target_options={"x": 1})


def test_the_llm_embeds_ema_target_updates_as_configured():
    from uvlm.data.tokenizer import build_tokenizer
    from uvlm.model.unified import UnifiedVLM

    def model(**options):
        cfg = UnifiedConfig(input_dim=6, target="llm-embeds", llm=LLMConfig(preset="debug"), target_options=options)
        return UnifiedVLM(cfg, build_tokenizer(extra_words=cfg.template.words()))

    plain = model()
    assert plain.target.ema is None and plain.moving_state() == []
    m = model(ema_decay=0.9)
    t, adapter = m.target, m.understanding_adapter
    assert all(torch.equal(e, p) for e, p in zip(t.ema.parameters(), adapter.parameters()))  # a copy at first
    assert not any(p.requires_grad for p in t.ema.parameters())
    assert not any(p is e for e in t.ema.parameters() for p in m.parameter_groups()["vision"])  # never trained
    assert set(m.moving_state()) == {f"target.ema.{n}" for n, _ in adapter.named_parameters()}
    before = [e.detach().clone() for e in t.ema.parameters()]
    with torch.no_grad():  # a step moves the adapter
        for p in adapter.parameters():
            p.add_(1.0)
    m.after_optimizer_step()
    for e, b, p in zip(t.ema.parameters(), before, adapter.parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)
    # the loss target is the moving average's embedding; the fed-back embedding the live adapter's, with gradient
    x = torch.randn(2, 3, 6)
    fed, target = t.prepare(x, m.embed_understanding)
    assert torch.allclose(fed, m.embed_understanding(x)) and fed.requires_grad and not target.requires_grad
    assert torch.allclose(target, t.ema(x))
    for bad, words in (({"ema_decay": 1.0}, "ema_decay must be a number in \\[0, 1\\)"),
                       ({"ema": 0.9}, "unknown llm-embeds target option 'ema'")):
        with pytest.raises(UserError, match=words):
            UnifiedConfig(input_dim=6, target="llm-embeds", target_options=bad)


def test_an_ema_run_keeps_its_moving_average_in_lora_checkpoints(tmp_path, fake_vision):
    from _fakes import tiny_config

    from uvlm.train.checkpoint import load_run
    from uvlm.train.config import LoRAConfig
    from uvlm.train.loop import train

    cfg = tiny_config("SigLIP-LLMEmbeds", steps=3, lora=LoRAConfig(enabled=True, r=4, alpha=8))
    cfg = cfg.with_(model=replace(cfg.model, target_options={"ema_decay": 0.5}))
    train(cfg, tmp_path / "run", quiet=True)
    loaded = load_run(tmp_path / "run")
    from uvlm.model.unified import UnifiedVLM

    fresh = UnifiedVLM(loaded.model.config, loaded.model.tokenizer)  # the weights the run started from
    ema = list(loaded.model.target.ema.parameters())
    for other in (fresh.target.ema.parameters(), loaded.model.understanding_adapter.parameters()):
        assert not all(torch.equal(e, p) for e, p in zip(ema, other))  # moved off the start, behind the adapter
