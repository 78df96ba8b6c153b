"""Checkpoints: round trip, exact resume after a kill, corrupt or foreign checkpoints, the run folder's contents."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from _fakes import tiny_config
from uvlm.errors import UserError
from uvlm.train.checkpoint import load_run, read_run_config
from uvlm.train.config import CheckpointConfig, LoRAConfig
from uvlm.train.loop import train
from uvlm.train.metrics import read_metrics


pytestmark = pytest.mark.usefixtures("fake_vision")


class Killed(Exception):
    pass


def _kill_at(step: int):
    def callback(s, record):
        if s == step:
            raise Killed(f"killed at step {s}")
    return callback


def _probe_logits(model) -> torch.Tensor:
    """Text logits and vision-head outputs of a fixed input through the model's own path."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(model.tokenizer), (2, 12), generator=g)
    feats = torch.randn(2, 16, model.config.input_dim, generator=g)
    model.eval()  # no LoRA dropout
    with torch.no_grad():
        hidden = model.decode(model.embed_understanding(feats)).last_hidden_state
        return torch.cat([model.text_logits(ids).flatten(), model.vision_head(hidden).flatten()])


@pytest.mark.parametrize("lora", [False, True])
def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path, lora):
    from uvlm.train.checkpoint import build_model, build_run_tokenizer, load_weights, save_checkpoint
    from uvlm.train.config import resolve_model_config
    from uvlm.train.data import load_sources
    from uvlm.train.loop import build_optimizer, build_scheduler

    cfg = tiny_config("VQ-VQ", lora=LoRAConfig(enabled=lora, r=4, alpha=8))
    sources = load_sources(cfg)
    mc = resolve_model_config(cfg, sources.understanding, sources.generation)
    model = build_model(cfg, mc, build_run_tokenizer(cfg), sources)
    with torch.no_grad():  # move every trainable weight away from its initial value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    opt = build_optimizer(model, cfg)
    save_checkpoint(tmp_path, 7, model, opt, build_scheduler(opt, cfg, 10), {"model_config": mc.to_dict()},
                    [{}], lora=lora)
    fresh = build_model(cfg, mc, build_run_tokenizer(cfg), sources)
    assert not torch.equal(_probe_logits(fresh), _probe_logits(model))
    load_weights(tmp_path / "checkpoints/step-000007", fresh, lora)
    assert torch.equal(_probe_logits(fresh), _probe_logits(model))
    assert (tmp_path / "checkpoints/latest").read_text().strip() == "step-000007"


@pytest.mark.parametrize("lora", [False, True])
def test_resume_after_a_kill_reaches_the_same_weights_and_losses(tmp_path, lora):
    # LoRA dropout draws random numbers every step: resuming must restore the RNG states too
    cfg = tiny_config("SigLIP-VQ", steps=6, lora=LoRAConfig(enabled=lora, r=4, alpha=8, dropout=0.2))
    cfg = cfg.with_(checkpoint=CheckpointConfig(every=2))
    full = train(cfg, tmp_path / "full", quiet=True)

    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", quiet=True, callback=_kill_at(3))  # after the step-2 checkpoint
    assert (tmp_path / "killed/checkpoints/latest").read_text().strip() == "step-000002"
    resumed = train(cfg, tmp_path / "killed", resume=True, quiet=True)
    assert resumed.losses == pytest.approx(full.losses[2:], rel=0, abs=1e-6)
    name = "trainable.safetensors" if lora else "model.safetensors"
    a = load_file(str(tmp_path / "full/checkpoints/step-000006" / name))
    b = load_file(str(tmp_path / "killed/checkpoints/step-000006" / name))
    assert set(a) == set(b) and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    # metrics.jsonl holds each step once: the killed run's step 3 line was replaced by the resumed one
    steps = [r["step"] for r in read_metrics(tmp_path / "killed/metrics.jsonl", "train")]
    assert steps == [1, 2, 3, 4, 5, 6]
    sa = json.loads((tmp_path / "full/checkpoints/step-000006/state.json").read_text())
    sb = json.loads((tmp_path / "killed/checkpoints/step-000006/state.json").read_text())
    assert sa["counts"] == sb["counts"] and sa["position"] == sb["position"] == 6 * 8


def test_run_folder_describes_itself(tmp_path):
    cfg = tiny_config("VQ-SigLIP", steps=2)
    train(cfg, tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    for f in ("config.json", "model_config.json", "vision.json", "tokenizer/tokenizer.json", "metrics.jsonl",
              "checkpoints/latest", "checkpoints/step-000002/model.safetensors",
              "checkpoints/step-000002/optimizer.pt", "checkpoints/step-000002/scheduler.pt",
              "checkpoints/step-000002/rng.pt", "checkpoints/step-000002/state.json"):
        assert (run / f).is_file(), f
    saved = read_run_config(run)
    # the resolved config records the sizes the sources gave
    assert (saved.model.input_dim, saved.model.target_dim, saved.model.num_output_tokens) == (8, 32, 16)
    state = json.loads((run / "checkpoints/step-000002/state.json").read_text())
    assert state["step"] == 2 and state["position"] == 16 and state["model_config"] == saved.to_dict()["model"]
    assert set(state["files"]) >= {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt"}
    loaded = load_run(run)
    assert loaded.state["step"] == 2 and not loaded.model.training
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())  # no temporaries left


def test_bad_resumes_are_one_line_user_errors(tmp_path):
    cfg = tiny_config("SigLIP_u", steps=2)
    run = tmp_path / "run"
    train(cfg, run, quiet=True)
    with pytest.raises(UserError, match="already has checkpoints: resume it with --resume"):
        train(cfg, run, quiet=True)
    with pytest.raises(UserError, match="not a run folder"):
        train(cfg, tmp_path / "nothing", resume=True, quiet=True)
    # another model config
    other = cfg.with_(model=cfg.model.__class__(**{**cfg.model.__dict__, "adapter": "mlp"}))
    with pytest.raises(UserError, match="belongs to another model \\(model config differs in adapter\\)"):
        train(other.with_(optim=other.optim.__class__(**{**other.optim.__dict__, "steps": 3})), run, resume=True)
    # a corrupt weights file
    ck = run / "checkpoints/step-000002"
    raw = bytearray((ck / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="is corrupt \\(model.safetensors does not match its hash\\)") as e:
        train(cfg, run, resume=True, quiet=True)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="is corrupt"):
        load_run(run)
    (ck / "state.json").unlink()
    with pytest.raises(UserError, match="not a complete checkpoint"):
        load_run(run)
    (run / "checkpoints/latest").write_text("step-000099\n")
    with pytest.raises(UserError, match="not a checkpoint folder"):
        load_run(run)
