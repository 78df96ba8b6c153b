"""The ``diffusion`` target: KL-VAE latents through a per-token diffusion head, trained with the LLM and sampled
inside the KV-cached decoding loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uvlm.cli.main import main
from uvlm.errors import UserError
from uvlm.model.config import LLMConfig, SamplingConfig, UnifiedConfig
from uvlm.model.generate import generate_images
from uvlm.model.targets import TARGETS

from _fakes import tiny_config

HEAD = {"width": 32, "depth": 2, "sample_steps": 8}


def _model(**options):
    from uvlm.data.tokenizer import build_tokenizer
    from uvlm.model.unified import UnifiedVLM

    cfg = UnifiedConfig(input_dim=6, target="diffusion", target_dim=4, num_output_tokens=5,
                        llm=LLMConfig(preset="debug"), target_options={**HEAD, **options})
    return UnifiedVLM(cfg, build_tokenizer(extra_words=cfg.template.words()))


def _generation_batch(model, n=2, seed=0):
    from uvlm.data.smartwatch import SmartWatch
    from uvlm.data.config import SplitConfig

    sw = SmartWatch(SplitConfig.train(resolution=48, n_vqa=0, n_caption=0, n_generation=n))
    g = torch.Generator().manual_seed(seed)
    examples = [model.sequences.example(sw.sample("generation", i, with_image=False),
                                        targets=torch.randn(5, 4, generator=g)) for i in range(n)]
    return model.sequences.collate(examples)


def test_registered_with_its_own_source_kind_and_options():
    cls = TARGETS["diffusion"]
    assert (cls.display, cls.source_kind, cls.decoder, cls.needs_codebook) == ("Diffusion", "kl-vae", "tokenizer", False)
    model = _model()
    assert model.target.head.config.width == 32 and model.target.head.config.cond_dim == model.hidden_size
    assert model.generation_adapter is not None and not model.shared_adapter  # the latent space is its own
    with pytest.raises(UserError, match="unknown diffusion target option 'widht'") as e:
        UnifiedConfig(target="diffusion", target_options={"widht": 3})
    assert "\n" not in str(e.value)


def _trained_once(model, seed=1):
    """The head after its zero-initialised output and modulations have moved (at initialisation its output, and so
    the gradient into its condition, is zero, as in MAR)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.target.head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_gradients_of_the_diffusion_loss_reach_the_llm():
    model = _trained_once(_model())
    torch.manual_seed(0)
    out = model(_generation_batch(model))
    assert out.num_answer_tokens == 0 and out.num_image_tokens == 10  # the vision loss alone
    out.loss.backward()
    blocks = model.decoder_block_parameters()
    assert all(p.grad is not None for p in blocks)
    assert sum(float(p.grad.abs().sum()) for p in blocks) > 0
    assert float(model.target.head.net.input_proj.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_kv_cached_sampling_equals_full_recompute_with_the_same_noise(guidance):
    model = _trained_once(_model()).eval()
    instructions = ["Draw a smart watch showing the time 02:07:00.", "Draw a watch with sunny weather."]
    sampling = SamplingConfig(temperature=1.0, steps=4, seed=7, guidance=guidance)
    cached = generate_images(model, instructions, sampling, use_cache=True)
    full = generate_images(model, instructions, sampling, use_cache=False)
    assert cached.shape == (2, 5, 4)
    assert torch.allclose(cached, full, atol=1e-4)
    other = generate_images(model, instructions, SamplingConfig(temperature=1.0, steps=4, seed=8, guidance=guidance))
    assert not torch.allclose(cached, other)  # the noise comes from the sampling seed


def test_zero_sampling_steps_and_guidance_elsewhere_are_one_line_errors():
    with pytest.raises(UserError, match="sampling steps must be a positive integer") as e:
        SamplingConfig(steps=0)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="takes no classifier-free guidance"):
        from uvlm.data.tokenizer import build_tokenizer
        from uvlm.model.unified import UnifiedVLM

        cfg = UnifiedConfig(input_dim=6, target="siglip", target_dim=6, llm=LLMConfig(preset="debug"))
        generate_images(UnifiedVLM(cfg, build_tokenizer(extra_words=cfg.template.words())), ["x"],
                        SamplingConfig(guidance=2.0))


def test_a_diffusion_target_without_a_pixel_latent_is_a_one_line_error(tmp_path, capsys):
    from uvlm.train.config import RunConfig

    d = tiny_config("SigLIP-Diffusion").to_dict()
    d["vision"]["source"] = str(tmp_path)  # full-scale towers, but no KL-VAE named
    with pytest.raises(UserError, match="the diffusion target needs a kl-vae source and none is configured") as e:
        RunConfig.from_dict(d)
    assert "\n" not in str(e.value)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(d))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a kl-vae source" in err and len(err.splitlines()) == 1
    d["vision"]["sources"] = {"kl-vae": "tiny"}
    assert RunConfig.from_dict(d).to_dict()["vision"]["sources"] == {"kl-vae": "tiny"}


def _cli_train(tmp_path, variant: str):
    """``uvlm train --config`` of a 3-step run of ``variant`` with the small head; returns the run folder and its
    resolved config."""
    d = tiny_config(variant, steps=3).to_dict()
    d["model"]["target_options"] = HEAD
    path = tmp_path / "run.json"
    path.write_text(json.dumps(d))
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(run), "--quiet"]) == 0
    return run, json.loads((run / "config.json").read_text())


def test_cli_train_and_draw_a_diffusion_run(tmp_path, capsys, fake_vision):
    run, saved = _cli_train(tmp_path, "SigLIP-Diffusion")
    assert saved["model"]["target"] == saved["vision"]["generation"] == "diffusion"
    assert saved["model"]["target_dim"] == 8 and saved["model"]["num_output_tokens"] == 16
    assert saved["model"]["target_options"] == HEAD
    out = tmp_path / "watch.png"
    instruction = "Draw a smart watch showing the time 02:07:00."
    assert main(["draw", str(run), instruction, str(out), "--temperature", "1", "--steps", "4",
                 "--guidance", "2"]) == 0
    from PIL import Image

    assert Image.open(out).size == (48, 48)
    assert main(["eval", str(run), "--questions", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["total"] == 4
    assert main(["eval", str(run), "--conditioning", "4", "--json"]) == 0  # teacher-forced diffusion losses
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 4 and r["own"] > 0 and r["shuffled"] > 0
    assert main(["draw", str(run), instruction, str(tmp_path / "zero.png"), "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("sampling steps must be a positive integer, got 0") and not Path(tmp_path / "zero.png").exists()


def test_the_kl_vae_source_kind(tmp_path):
    from uvlm.vision.kl_vae import KLVAEConfig, KLVAETrainConfig, train_kl_vae
    from uvlm.vision.presets import vision_source

    folder = train_kl_vae(KLVAETrainConfig(model=KLVAEConfig.tiny(resolution=48), steps=2, batch_size=2,
                                           scale_images=4, eval_images=0), tmp_path / "vae", log=None)
    source = vision_source("kl-vae", str(folder))
    assert (source.kind, source.resolution, source.num_tokens, source.target_dim) == ("kl-vae", 48, 144, 8)
    from PIL import Image

    latents = source.encode_cached([Image.new("RGB", (48, 48), "white")] * 2)
    assert latents.shape == (2, 144, 8) and source.decode(latents).shape == (2, 3, 48, 48)
    assert source.identity()["kind"] == "kl-vae" and source.codebook is None
    with pytest.raises(UserError, match="KL-VAE checkpoint .* does not exist"):
        vision_source("kl-vae", str(tmp_path / "missing.ckpt"))
    with pytest.raises(UserError, match="unknown vision encoder 'clip': use one of siglip, vq, kl-vae"):
        vision_source("clip")


def test_cli_train_and_draw_semantic_and_pixel_generation_together(tmp_path, capsys, fake_vision):
    run, saved = _cli_train(tmp_path, "SigLIP-LLMEmbeds+Diffusion")
    saved = saved["model"]
    assert saved["num_output_tokens"] == 32 and saved["target_options"] == {**HEAD, "semantic_tokens": 16}
    assert main(["draw", str(run), "Draw a smart watch.", str(tmp_path / "w.png"), "--temperature", "1",
                 "--guidance", "2"]) == 0
    assert main(["eval", str(run), "--conditioning", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4

    from uvlm.train.checkpoint import load_run

    loaded = load_run(run)
    model = _trained_once(loaded.model)
    instructions = ["Draw a smart watch showing the time 02:07:00.", "Draw a watch with sunny weather."]
    sampling = SamplingConfig(temperature=1.0, steps=3, seed=2, guidance=2.0)
    cached = generate_images(model, instructions, sampling, use_cache=True)
    assert cached.shape == (2, 32, model.hidden_size + 9)
    assert torch.equal(cached[:, :16, -1], torch.zeros(2, 16)) and torch.equal(cached[:, 16:, -1], torch.ones(2, 16))
    assert torch.allclose(cached, generate_images(model, instructions, sampling, use_cache=False), atol=1e-4)
    # both losses reach the LLM
    model.train()
    from uvlm.train.data import TrainData

    data = TrainData(loaded.config, loaded.sources, model.sequences)
    gen_items = [it for it in data.order.items if it[0] == "generation"][:2]
    batch = model.sequences.collate(data.examples(gen_items)[0])
    model.zero_grad()
    model(batch).loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.decoder_block_parameters()) > 0
    assert float(model.target.semantic_head.weight.grad.abs().sum()) > 0
    assert float(model.target.pixel_adapter.weight.grad.abs().sum()) > 0
