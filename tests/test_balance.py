"""The paired design's training side: the loss balance (fixed alpha, the alpha = 0 control, the gradient-norm rule),
the decoder-block parameters it measures, and identical initial weights across the arms of one seed."""

from __future__ import annotations

import json

import pytest
import torch

from _fakes import tiny_config
from uvlm.errors import UserError
from uvlm.train.balance import LossBalance, split_backward
from uvlm.train.checkpoint import build_model, build_run_tokenizer
from uvlm.train.config import BalanceConfig, CheckpointConfig, RunConfig, resolve_model_config
from uvlm.train.data import TrainData, load_sources
from uvlm.train.loop import train
from uvlm.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("fake_vision")


def _model(cfg):
    sources = load_sources(cfg)
    mc = resolve_model_config(cfg, sources.understanding, sources.generation)
    return build_model(cfg, mc, build_run_tokenizer(cfg), sources), sources


def test_the_balance_equalises_gradient_norms_on_a_toy_problem():
    """Two losses on shared weights, one with a ~50x larger gradient: after a few measurements the weighted small one
    pulls as hard as the large one, and it keeps doing so as the weights (and norms) move under Adam."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16, 8))
    x, y1, y2 = torch.randn(64, 16), torch.randn(64, 8), torch.randn(64, 8)
    opt = torch.optim.Adam([w], lr=1e-2)
    bal = LossBalance(BalanceConfig(rule="grad-norm", every=1, momentum=0.5), alpha=1.0)
    ratios = []
    for step in range(1, 61):
        big = 50 * ((x @ w - y1) ** 2).mean()
        small = ((x @ w - y2) ** 2).mean()
        weight = bal.weight()
        opt.zero_grad()
        gt, gv = split_backward(torch.Tensor.backward, big, small, weight, [w])
        bal.update(float(gt.norm()), float(gv.norm()))
        ratios.append(float(gt.norm()) / (weight * float(gv.norm())))
        # the accumulated gradient is the combined one
        big2, small2 = 50 * ((x @ w - y1) ** 2).mean(), ((x @ w - y2) ** 2).mean()
        g = torch.autograd.grad(big2 + weight * small2, w)[0]
        assert torch.allclose(w.grad, g, atol=1e-4)
        opt.step()
    assert ratios[0] > 20  # unbalanced before the first measurement
    assert all(0.8 < r < 1.25 for r in ratios[10:]), ratios[10:]
    # the fixed rule keeps alpha and never measures
    fixed = LossBalance(BalanceConfig(), alpha=0.3)
    assert fixed.weight() == 0.3 and not any(fixed.due(s) for s in range(1, 50))


def test_decoder_blocks_exclude_the_embeddings_the_lm_head_and_the_final_norm():
    model, _ = _model(tiny_config("SigLIP-SigLIP"))
    blocks = {id(p) for p in model.decoder_block_parameters()}
    llm = dict(model.llm.named_parameters())
    assert blocks == {id(p) for n, p in llm.items() if ".layers." in n}
    for n in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert id(llm[n]) not in blocks
    assert not blocks & {id(p) for p in model.parameter_groups()["vision"]}


def test_the_gradient_balance_measures_the_shared_blocks_over_several_batches(tmp_path):
    from uvlm.eval.conditioning import gradient_balance
    from uvlm.train.checkpoint import load_run

    train(tiny_config("SigLIP-SigLIP", steps=2), tmp_path / "run", quiet=True)
    b = gradient_balance(load_run(tmp_path / "run"), n=8, batches=3)
    assert set(b) >= {"blocks", "embeddings", "vision"} and len(b["blocks"]["per_batch"]) == 3
    # the batches differ, and the summary is their mean
    norms = [x["text"] for x in b["blocks"]["per_batch"]]
    assert len(set(norms)) == 3 and b["blocks"]["text"] == pytest.approx(sum(norms) / 3)
    # only the text loss reaches the LM head: the embeddings group's vision norm is that of the vision-token rows
    assert b["embeddings"]["ratio"] > b["blocks"]["ratio"]


def test_the_alpha_0_control_has_no_vision_gradient():
    cfg = tiny_config("SigLIP-SigLIP-D")
    cfg = cfg.with_(model=cfg.model.__class__(**{**cfg.model.__dict__, "alpha": 0.0}))
    model, sources = _model(cfg)
    data = TrainData(cfg, sources, model.sequences)
    data.prepare()
    items = data.order.take(0, 24)
    assert {t for t, _ in items} >= {"generation", "vqa"}
    batch = model.sequences.collate(data.examples(items)[0])
    out = model(batch)
    assert float(out.vision_loss.detach()) > 0  # the vision loss is computed (and logged) ...
    (out.text_loss + model.alpha * out.vision_loss).backward()
    got = {n: p.grad.clone() if p.grad is not None else None for n, p in model.named_parameters()}
    # ... but no gradient of it reaches any weight: the head and the generation adapter get none ...
    for n, p in model.named_parameters():
        if n.startswith(("target.", "gen_adapter.")):
            assert got[n] is None or not got[n].any(), n
    # ... and the LLM's gradient is exactly the text loss's
    model.zero_grad()
    model(batch).text_loss.backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.equal(got[n], p.grad), n


def test_the_arms_of_one_seed_start_from_the_same_weights():
    u, _ = _model(tiny_config("SigLIP_u"))
    m, _ = _model(tiny_config("SigLIP-SigLIP"))
    mu = dict(m.named_parameters())
    shared = dict(u.named_parameters())
    assert shared and all(torch.equal(p, mu[n]) for n, p in shared.items())
    other, _ = _model(tiny_config("SigLIP_u").with_(model=tiny_config("SigLIP_u").model.__class__(
        **{**tiny_config("SigLIP_u").model.__dict__, "seed": 1})))
    assert not torch.equal(dict(other.named_parameters())["und_adapter.weight"], shared["und_adapter.weight"])


def test_grad_norm_training_logs_its_weight_and_resumes_exactly(tmp_path):
    class Killed(Exception):
        pass

    cfg = tiny_config("SigLIP-SigLIP", steps=6, balance=BalanceConfig(rule="grad-norm", every=2))
    cfg = cfg.with_(checkpoint=CheckpointConfig(every=3))
    full = train(cfg, tmp_path / "full", quiet=True)
    recs = read_metrics(tmp_path / "full/metrics.jsonl", "train")
    assert [r["step"] for r in recs if "block_grad_norms" in r] == [1, 3, 5]
    alphas = [r["alpha"] for r in recs]
    assert alphas[0] == 1.0 and alphas[1] != 1.0  # weighted from the first measurement on
    g = recs[0]["block_grad_norms"]
    assert alphas[1] == pytest.approx(g["text"] / g["vision"], rel=1e-6)

    def kill(step, record):
        if step == 4:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", quiet=True, callback=kill)
    resumed = train(cfg, tmp_path / "killed", resume=True, quiet=True)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=0, abs=1e-6)
    again = [r["alpha"] for r in read_metrics(tmp_path / "killed/metrics.jsonl", "train")]
    assert again == pytest.approx(alphas, rel=1e-9)
    state = json.loads((tmp_path / "full/checkpoints/step-000006/state.json").read_text())
    assert state["balance"]["measurements"] == 3 and state["balance"]["rule"] == "grad-norm"


def test_balance_configs_are_checked():
    with pytest.raises(UserError, match="trains one"):
        tiny_config("SigLIP_u", balance=BalanceConfig(rule="grad-norm"))
    with pytest.raises(UserError, match="unknown balance rule"):
        RunConfig.from_dict({"balance": {"rule": "magic"}})
    with pytest.raises(UserError, match="alpha"):
        RunConfig.from_dict({"balance": {"rule": "grad-norm"}, "model": {"alpha": 0.0}})
