"""The teacher-forced text-conditioning gap: positive for a model that draws what it is told, ~0 for one that does not."""

from __future__ import annotations

import pytest
import torch

from uvlm.data.tokenizer import build_tokenizer
from uvlm.errors import UserError
from uvlm.eval.conditioning import per_token_vision_loss
from uvlm.model.config import LLMConfig, TemplateConfig, UnifiedConfig
from uvlm.model.unified import UnifiedVLM

D, N = 16, 4
SUNNY, RAINING = "Draw a smart watch with sunny weather.", "Draw a smart watch with raining weather."


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(listens: bool, steps: int = 60) -> UnifiedVLM:
    """A debug-size SigLIP-style generator trained on two instructions. ``listens``: each instruction has its own
    image (two fixed random token sets); otherwise both instructions come with either image at random."""
    tok = build_tokenizer(extra_words=TemplateConfig().words())
    cfg = UnifiedConfig(encoder="siglip", input_dim=D, target="siglip", target_dim=D, num_output_tokens=N,
                        llm=LLMConfig(preset="debug"))
    model = UnifiedVLM(cfg, tok)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, N, D, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        which = torch.randint(0, 2, (8,), generator=g)
        shown = which if listens else torch.randint(0, 2, (8,), generator=g)
        batch = model.sequences.collate([model.sequences.generation((SUNNY, RAINING)[int(w)], images[int(s)])
                                         for w, s in zip(which, shown)])
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
    model.eval()
    return model, images


def _gap(model, images) -> tuple[float, float]:
    own = per_token_vision_loss(model, [SUNNY, RAINING], images).mean()
    swapped = per_token_vision_loss(model, [RAINING, SUNNY], images).mean()
    return float(own), float(swapped - own)


def test_a_model_that_draws_what_it_is_told_has_a_large_gap():
    own, gap = _gap(*_trained(listens=True))
    assert gap > 0.2 and own < 0.1 * gap


def test_a_model_whose_images_ignore_the_text_has_no_gap():
    own, gap = _gap(*_trained(listens=False))
    assert abs(gap) < 0.1 * own


def test_per_token_loss_shape_and_errors():
    model, images = _trained(listens=True, steps=1)
    assert per_token_vision_loss(model, [SUNNY, RAINING], images, batch_size=1).shape == (2, N)
    with pytest.raises(UserError, match="one instruction per row"):
        per_token_vision_loss(model, [SUNNY], images)


def test_the_sweep_reads_a_runs_gap_into_its_record(tmp_path):
    import json

    from uvlm.experiments.sweep import CONDITIONING_FILE, read_finished

    (tmp_path / "result.json").write_text(json.dumps({"vqa": {"total": 50.0}, "curve": [], "train_seconds": 1.0}))
    assert "conditioning" not in read_finished(tmp_path, {"conditioning": True})["final"]
    (tmp_path / CONDITIONING_FILE).write_text(json.dumps({"gap": 0.02, "relative_gap": 0.1, "icon": {
        "gap": 0.03, "relative_gap": 0.15}}))
    final = read_finished(tmp_path, {"conditioning": True})["final"]
    assert final["conditioning"] == pytest.approx({"gap": 10.0, "icon_gap": 15.0})
    assert "conditioning" not in read_finished(tmp_path, {"generation": 200})["final"]  # only when asked for


def test_gradient_balance_scales_with_alpha_and_leaves_no_gradients(fake_vision, tmp_path):
    from _fakes import tiny_config
    from uvlm.eval.conditioning import gradient_balance
    from uvlm.train.checkpoint import load_run
    from uvlm.train.loop import train

    train(tiny_config("SigLIP-SigLIP", steps=2), tmp_path / "run", quiet=True)
    run = load_run(tmp_path / "run")
    one = gradient_balance(run, n=8)
    run.model.alpha *= 3
    three = gradient_balance(run, n=8)
    assert three["blocks"]["vision"] == pytest.approx(3 * one["blocks"]["vision"], rel=1e-4)
    assert three["blocks"]["text"] == pytest.approx(one["blocks"]["text"], rel=1e-4)
    assert three["blocks"]["ratio"] == pytest.approx(one["blocks"]["ratio"] / 3, rel=1e-4)
    assert all(p.grad is None for p in run.model.parameters()) and not run.model.training
