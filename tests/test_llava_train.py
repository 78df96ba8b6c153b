"""The LLaVA extension's two stages end to end through the CLI, on a tiny random LLaVA checkpoint in the real format
and tiny LLaVA-format JSON files with images: what each stage freezes, what it saves, reloading, answering, drawing,
and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from uvlm.cli.main import main
from uvlm.data.llava_json import generation_subsets, read_llava_json, read_reversed_captions
from uvlm.errors import UserError
from uvlm.model.llava import LlavaExtensionConfig, build_llava_unified, generation_example, understanding_example
from uvlm.model.llava_tiny import save_tiny_llava, save_tiny_llava_data
from uvlm.train.llava import load_llava_run, read_run_meta, set_trainable, trainable_names

def _write_data(root: Path) -> dict[str, Path]:
    f = save_tiny_llava_data(root)
    return {"pre": f["pretrain"], "mix": f["mix"], "cap": f["captions"], "images": f["images"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-e2e")
    base = save_tiny_llava(root / "base")
    return {"root": root, "base": base, **_write_data(root / "data")}


def _stage1(w, out: Path, *extra: str) -> int:
    return main(["llava", "train", "--stage", "1", "--base", str(w["base"]), "--understanding", str(w["pre"]),
                 "--images", str(w["images"]), "--generation", str(w["cap"]), "--generation-samples", "3",
                 "--steps", "2", "--batch-size", "4", "--out", str(out), "--quiet", *extra])


def _stage2(w, init: Path, out: Path, *extra: str) -> int:
    return main(["llava", "train", "--stage", "2", "--init", str(init), "--understanding", str(w["mix"]),
                 "--images", str(w["images"]), "--generation", str(w["cap"]), "--generation-samples", "3",
                 "--steps", "2", "--batch-size", "4", "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def stages(world):
    s1, s2 = world["root"] / "s1", world["root"] / "s2"
    assert _stage1(world, s1) == 0
    assert _stage2(world, s1, s2) == 0
    return s1, s2


def _base_state(world) -> dict[str, torch.Tensor]:
    """The base checkpoint's weights under transformers' module names (``model.language_model.*`` ...)."""
    from transformers import LlavaForConditionalGeneration

    ref = LlavaForConditionalGeneration.from_pretrained(str(world["base"]), local_files_only=True)
    return {k: v.detach().clone() for k, v in ref.state_dict().items()}


def test_stage1_trains_exactly_the_adapters_and_head(world, stages) -> None:
    s1, _ = stages
    saved = load_file(str(s1 / "checkpoints" / "step-000002" / "trainable.safetensors"))
    prefixes = {n.split(".")[0] for n in saved}
    assert prefixes == {"und_adapter", "gen_adapter", "target"}
    base = _base_state(world)
    # the projector moved away from LLaVA's weights
    assert not torch.equal(saved["und_adapter.linear_1.weight"], base["model.multi_modal_projector.linear_1.weight"])
    meta = read_run_meta(s1, want_stage=1)
    assert meta["name"] == "CLIP-CLIP" and meta["data"]["generation"]["count"] == 3
    assert (s1 / "tokenizer" / "tokenizer.json").is_file() and (s1 / "image_processor").is_dir()
    # reloaded: the LLM and the tower are LLaVA's, bit for bit
    run = load_llava_run(s1)
    lm = run.model.llm.model.state_dict()
    for k in ("layers.0.self_attn.q_proj.weight", "embed_tokens.weight"):
        assert torch.equal(lm[k], base[f"model.language_model.{k}"])
    assert torch.equal(run.model.vision_tower.state_dict()["encoder.layers.0.mlp.fc1.weight"],
                       base["model.vision_tower.encoder.layers.0.mlp.fc1.weight"])
    assert torch.equal(run.model.und_adapter.linear_1.weight, saved["und_adapter.linear_1.weight"])


def test_stage2_trains_everything_and_takes_new_captions(world, stages) -> None:
    s1, s2 = stages
    saved = load_file(str(s2 / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert {n.split(".")[0] for n in saved} == {"und_adapter", "gen_adapter", "target", "llm", "vision_tower"}
    base = _base_state(world)
    assert not torch.equal(saved["llm.model.layers.0.self_attn.q_proj.weight"],
                           base["model.language_model.layers.0.self_attn.q_proj.weight"])
    m1, m2 = read_run_meta(s1), read_run_meta(s2, want_stage=2)
    g1, g2 = m1["data"]["generation"], m2["data"]["generation"]
    assert (g2["offset"], g2["count"]) == (3, 3) and g1["offset"] == 0  # disjoint from stage 1's captions
    assert m2["init"]["run"] == str(s1.resolve()) and m2["init"]["checkpoint"] == "step-000002"
    # the reloaded model holds the saved weights and answers deterministically
    run = load_llava_run(s2)
    state = dict(run.model.named_parameters())
    for k in ("llm.model.layers.0.self_attn.q_proj.weight", "vision_tower.encoder.layers.0.mlp.fc1.weight",
              "gen_adapter.0.weight"):
        assert torch.equal(state[k], saved[k])


def test_ask_and_draw_through_the_cli(world, stages, capsys) -> None:
    _, s2 = stages
    img = str(world["images"] / "0.png")
    assert main(["llava", "ask", str(s2), img, "What color is the square?", "--max-new-tokens", "4"]) == 0
    first = capsys.readouterr().out
    assert main(["llava", "ask", str(s2), img, "What color is the square?", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == first
    out = world["root"] / "red.safetensors"
    assert main(["llava", "draw", str(s2), "A red square.", str(out)]) == 0
    feats = load_file(str(out))["clip_features"]
    assert feats.shape == (9, 32) and torch.isfinite(feats).all()


def test_gradients_reach_exactly_the_trainable_parameters(world) -> None:
    """For each stage setting, the parameters with a gradient after one mixed batch are exactly the trainable ones."""
    from uvlm.train.config import LoRAConfig

    for stage, train_vision, lora in ((1, True, False), (2, True, False), (2, False, False), (2, True, True)):
        m, _ = build_llava_unified(LlavaExtensionConfig(base=str(world["base"]), target="clip"))
        if stage == 2 and train_vision:
            m.freeze_target_tower()
        set_trainable(m, stage, train_vision, LoRAConfig(enabled=lora, r=4, alpha=8, dropout=0.0))
        ims = [Image.open(world["images"] / f"{i}.png").convert("RGB") for i in range(2)]
        px = m.preprocess(ims)
        batch = m.sequences.collate([understanding_example(m, [("Describe.", "A red square.")], px[0]),
                                     generation_example(m, "A green square.", px[1]),
                                     understanding_example(m, [("one two", "three")], None)])
        m(batch).loss.backward()
        got = {n for n, p in m.named_parameters() if p.grad is not None}
        want = set(trainable_names(m))
        assert got == want, (stage, train_vision, lora, sorted(want ^ got)[:5])
        # and every one is non-zero, except LoRA's A matrices, whose gradient is zero while B is (peft's init)
        zero = {n for n, p in m.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0}
        assert all("lora_A" in n for n in zero), sorted(zero)[:5]
        tower = any(n.startswith("vision_tower.") for n in want)
        assert tower == (stage == 2 and train_vision)
        assert not any(n.startswith("target_tower.") for n in want)
        if lora:
            assert all("lora_" in n or "trainable_tokens" in n for n in want if n.startswith("llm."))


def test_stage2_with_lora_saves_the_adapter_and_reloads(world, stages) -> None:
    s1, _ = stages
    out = world["root"] / "s2-lora"
    assert _stage2(world, s1, out, "--lora", "--freeze-vision") == 0
    ck = out / "checkpoints" / "step-000002"
    assert (ck / "adapter" / "adapter_config.json").is_file()
    saved = load_file(str(ck / "trainable.safetensors"))
    assert not any(n.startswith("vision_tower.") for n in saved)
    assert any("lora_A" in n for n in saved)
    run = load_llava_run(out)
    params = dict(run.model.named_parameters())
    for n, t in saved.items():
        assert torch.equal(params[n], t)


def test_clip_vq_stage1(world, tmp_path) -> None:
    from uvlm.vision.artifacts import save_artifact
    from uvlm.vision.vq import VQConfig, VQTokenizer

    cfg = VQConfig.tiny(resolution=16)
    vq_dir = save_artifact(tmp_path / "vq", VQTokenizer(cfg).state_dict(), {"kind": "vq", "model": cfg.to_dict()})
    out = tmp_path / "vq-s1"
    assert _stage1(world, out, "--target", "vq", "--vq", str(vq_dir)) == 0
    meta = read_run_meta(out)
    assert meta["name"] == "CLIP-VQ"
    run = load_llava_run(out)
    assert run.model.alpha == pytest.approx(0.2) and run.model.config.num_output_tokens == 16
    png = tmp_path / "drawn.png"
    assert main(["llava", "draw", str(out), "A red square.", str(png)]) == 0
    assert Image.open(png).size == (16, 16)


# ----- data ---------------------------------------------------------------------------------------------------------
def test_readers(world) -> None:
    recs = read_llava_json(world["mix"], world["images"])
    assert [r.image is None for r in recs] == [False, False, False, True, False]
    assert recs[4].turns == (("What color is the square?", "yellow"), ("Is it a circle?", "no"))
    caps = read_reversed_captions(world["cap"], world["images"])
    assert caps[2].caption == "A blue square on a white background." and caps[2].image.name == "2.png"
    a, b = generation_subsets(1000, [150, 200], seed=3)
    assert len(a) == 150 and len(b) == 200 and not set(a) & set(b)
    a2, b2 = generation_subsets(1000, [150, 200], seed=3)
    assert (a == a2).all() and (b == b2).all()
    assert not (generation_subsets(1000, [150], seed=4)[0] == a).all()


def _bad(tmp_path: Path, records) -> Path:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(records))
    return f


@pytest.mark.parametrize("records, message", [
    ([{"id": "x", "image": "nope.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                         {"from": "gpt", "value": "a"}]}], "image .* is missing"),
    ([{"id": "x", "image": "0.png", "conversations": [{"from": "human", "value": "<image>\nq"}]}],
     "malformed conversation"),
    ([{"id": "x", "image": "0.png", "conversations": [{"from": "gpt", "value": "<image>\nq"},
                                                      {"from": "human", "value": "a"}]}], "malformed conversation"),
    ([{"id": "x", "image": "0.png", "conversations": [{"from": "human", "value": "q"},
                                                      {"from": "gpt", "value": "a"}]}], "0 <image> tokens"),
    ([{"id": "x", "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]}],
     "has an <image> token but no 'image'"),
    ({"id": "x"}, "not a list of records"),
])
def test_bad_llava_json_is_one_line_exit_2(world, tmp_path, capsys, records, message) -> None:
    import re

    f = _bad(tmp_path, records)
    with pytest.raises(UserError, match=message):
        read_llava_json(f, world["images"])
    rc = main(["llava", "train", "--stage", "1", "--base", str(world["base"]), "--understanding", str(f),
               "--images", str(world["images"]), "--target", "none", "--steps", "1", "--batch-size", "1",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and re.search(message, err[0]) and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_folders_are_one_line_exit_2(world, stages, tmp_path, capsys) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    s1, s2 = stages
    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 vocab_size=50)).save_pretrained(str(llama))
    capsys.readouterr()
    cases = [
        (["llava", "train", "--stage", "1", "--base", str(llama), "--understanding", str(world["pre"]),
          "--images", str(world["images"]), "--target", "none", "--out", str(tmp_path / "o1")],
         "not LlavaForConditionalGeneration"),
        (["llava", "train", "--stage", "2", "--init", str(s2), "--understanding", str(world["mix"]),
          "--images", str(world["images"]), "--out", str(tmp_path / "o2")], "is a stage-2 run, not a stage-1 output"),
        (["llava", "train", "--stage", "2", "--init", str(tmp_path), "--understanding", str(world["mix"]),
          "--images", str(world["images"]), "--out", str(tmp_path / "o3")], "is not a stage-1 output"),
        (["llava", "train", "--stage", "1", "--base", str(world["base"]), "--understanding", str(world["pre"]),
          "--images", str(world["images"]), "--out", str(s1)], "exists and is not empty"),
        (["llava", "train", "--stage", "1", "--base", str(world["base"]), "--understanding", str(world["pre"]),
          "--images", str(world["images"]), "--out", str(tmp_path / "o4")], "pass --generation"),
        (["llava", "draw", str(s2), "A red square.", str(tmp_path / "x.png")], "no pixel decoder"),
        (["llava", "ask", str(tmp_path), str(world["images"] / "0.png"), "q"], "not a LLaVA extension run"),
    ]
    for argv, message in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], (argv, err)


def test_tiny_checkpoint_cli_writes_a_checkpoint_and_data_the_readers_take(tmp_path, capsys):
    ckpt, data = tmp_path / "ckpt", tmp_path / "data"
    assert main(["llava", "tiny-checkpoint", str(ckpt), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "pretrain.json" in out and "captions.json" in out
    from transformers import LlavaForConditionalGeneration

    assert isinstance(LlavaForConditionalGeneration.from_pretrained(ckpt), LlavaForConditionalGeneration)
    mix = read_llava_json(data / "mix.json", data / "images")
    assert len(mix) == 5 and sum(r.image is None for r in mix) == 1  # one text-only conversation
    assert len(read_llava_json(data / "pretrain.json", data / "images")) == 6
    assert sorted(p.name for p in (data / "images").iterdir()) == [f"{i}.png" for i in range(6)]


def test_tiny_checkpoint_cli_refuses_a_used_data_folder_before_writing(tmp_path, capsys):
    ckpt, data = tmp_path / "ckpt", tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("x")
    assert main(["llava", "tiny-checkpoint", str(ckpt), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0]
    assert not ckpt.exists()
