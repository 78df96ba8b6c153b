"""The LLaVA-1.5 extension's model on a tiny random LlavaForConditionalGeneration saved in the real format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from uvlm.errors import UserError
from uvlm.model.generate import answer, generate_images
from uvlm.model.llava import (LlavaExtensionConfig, build_llava_unified, expand_to_square, generation_example,
                              read_llava_config, understanding_example)
from uvlm.model.llava_tiny import save_tiny_llava


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


@pytest.fixture(scope="module")
def clip_model(tiny_llava):
    model, _ = build_llava_unified(LlavaExtensionConfig(base=str(tiny_llava), target="clip"))
    return model.eval()


def _images():
    return [Image.new("RGB", (50, 30), (200, 20, 20)), Image.new("RGB", (42, 42), (10, 10, 220))]


def test_understanding_path_equals_transformers_llava(tiny_llava, clip_model) -> None:
    """Tower layer, CLS drop, projector and LM are LLaVA's: the logits are those of LlavaForConditionalGeneration on
    the same ids (its image token at uvlm's image positions) and pixels."""
    from transformers import LlavaForConditionalGeneration

    ref = LlavaForConditionalGeneration.from_pretrained(str(tiny_llava), local_files_only=True).eval()
    m = clip_model
    assert m.token_ids.image == ref.config.image_token_index  # LLaVA's own <image> token is reused
    px = m.preprocess(_images())
    batch = m.sequences.collate([understanding_example(m, [("What is in the image?", "A red square.")], px[0]),
                                 understanding_example(m, [("What color is it?", "blue")], px[1])])
    with torch.no_grad():
        emb, _ = m.input_embeddings(batch)
        ours = m.lm_logits(m.decode(emb, batch.attention_mask).last_hidden_state)
        theirs = ref(input_ids=batch.input_ids, pixel_values=px, attention_mask=batch.attention_mask).logits
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(ours[mask], theirs[mask], rtol=1e-5, atol=1e-5)
    # and the text-only path is the plain LM
    text = m.sequences.collate([understanding_example(m, [("one two", "three")], None)])
    with torch.no_grad():
        torch.testing.assert_close(m.text_logits(text.input_ids, text.attention_mask),
                                   ref(input_ids=text.input_ids, attention_mask=text.attention_mask).logits,
                                   rtol=1e-5, atol=1e-5)


def test_mixed_batch_losses_and_gradients(clip_model) -> None:
    m = clip_model
    px = m.preprocess(_images())
    batch = m.sequences.collate([understanding_example(m, [("What is in the image?", "A red square.")], px[0]),
                                 generation_example(m, "A blue square.", px[1]),
                                 understanding_example(m, [("one two", "three")], None)])
    m.zero_grad(set_to_none=True)
    out = m(batch)
    assert out.num_image_tokens == m.config.num_output_tokens == 9
    assert torch.isfinite(out.loss) and out.vision_loss > 0 and out.text_loss > 0
    out.loss.backward()
    for part in (m.gen_adapter, m.target.head, m.und_adapter, m.vision_tower):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    m.zero_grad(set_to_none=True)
    # the clip loss is 1 - cos against the tower's own features of the target image
    with torch.no_grad():
        tgt = m.clip_targets(px[1:])
    assert tgt.shape == (1, 9, 32)


def test_frozen_target_tower_keeps_the_target_space(tiny_llava) -> None:
    m, _ = build_llava_unified(LlavaExtensionConfig(base=str(tiny_llava), target="clip"))
    px = m.preprocess(_images())
    before = m.clip_targets(px)
    m.freeze_target_tower()
    with torch.no_grad():
        for p in m.vision_tower.parameters():
            p.add_(0.1)
    torch.testing.assert_close(m.clip_targets(px), before)
    assert not torch.allclose(m.encode_images(px), before)
    assert not any(p.requires_grad for p in m.target_tower.parameters())


def test_answer_and_generate(clip_model) -> None:
    m = clip_model
    px = m.preprocess(_images())
    feats = m.encode_images(px)
    a1 = answer(m, feats, ["What is in the image?", "Describe the image."], max_new_tokens=4)
    a2 = answer(m, feats, ["What is in the image?", "Describe the image."], max_new_tokens=4)
    assert a1 == a2 and len(a1) == 2 and all(isinstance(a, str) for a in a1)
    tokens = generate_images(m, ["A red square.", "A blue circle."])
    assert tokens.shape == (2, 9, 32) and torch.isfinite(tokens).all()
    # KV-cached decoding equals full recomputation
    torch.testing.assert_close(tokens, generate_images(m, ["A red square.", "A blue circle."], use_cache=False),
                               rtol=1e-4, atol=1e-4)


def test_understanding_only_has_no_head(tiny_llava) -> None:
    m, vq = build_llava_unified(LlavaExtensionConfig(base=str(tiny_llava), target=None))
    assert m.target is None and m.gen_adapter is None and vq is None and m.alpha == 0.0


def test_wrong_checkpoints_are_one_line_errors(tmp_path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 vocab_size=50)).save_pretrained(str(llama))
    with pytest.raises(UserError, match="holds a 'llama' model .*LlamaForCausalLM.* not LlavaForConditionalGeneration"):
        read_llava_config(llama)
    with pytest.raises(UserError, match="not found or has no config.json"):
        read_llava_config(tmp_path / "nothing")
    with pytest.raises(UserError, match="unknown LLaVA generation target"):
        LlavaExtensionConfig(base=str(llama), target="siglip")
    with pytest.raises(UserError, match="needs the VQ tokenizer"):
        LlavaExtensionConfig(base=str(llama), target="vq")


def test_expand_to_square_pads_with_the_mean_colour() -> None:
    im = expand_to_square(Image.new("RGB", (40, 20), (255, 0, 0)), (0.5, 0.0, 1.0))
    assert im.size == (40, 40)
    assert im.getpixel((0, 0)) == (128, 0, 255) and im.getpixel((20, 20)) == (255, 0, 0)


def test_assemble_from_a_llama_and_a_clip_model(tmp_path, capsys) -> None:
    """uvlm llava assemble: a Llama and a CLIPModel (text tower included, as clip-vit-large-patch14-336 ships) become a
    LLaVA folder whose LM and tower are theirs, bit for bit, with a fresh projector."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPVisionConfig,
                              LlamaConfig, LlamaForCausalLM)

    from uvlm.cli.main import main
    from uvlm.model.llava_tiny import _tokenizer

    tok = _tokenizer()
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=len(tok) - 1,
                                         bos_token_id=1, eos_token_id=2))
    llama.save_pretrained(str(tmp_path / "vicuna"))
    tok.save_pretrained(str(tmp_path / "vicuna"))
    clip = CLIPModel(CLIPConfig(text_config=CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                           num_attention_heads=2, vocab_size=99),
                                vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                                               num_attention_heads=2, image_size=42, patch_size=14),
                                projection_dim=16))
    clip.save_pretrained(str(tmp_path / "clip"))
    CLIPImageProcessor(size={"shortest_edge": 42}, crop_size={"height": 42, "width": 42}).save_pretrained(
        str(tmp_path / "clip"))
    capsys.readouterr()
    assert main(["llava", "assemble", "--llm", str(tmp_path / "vicuna"), "--vision", str(tmp_path / "clip"),
                 str(tmp_path / "llava")]) == 0
    m, _ = build_llava_unified(LlavaExtensionConfig(base=str(tmp_path / "llava")))
    assert m.llm.get_input_embeddings().num_embeddings == 448  # padded to a multiple of 64, as llava-hf is
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(m.text_logits(ids)[..., :len(tok) - 1], llama(ids).logits, rtol=0, atol=0)
    own = m.vision_tower.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in clip.vision_model.state_dict().items())
    # wrong parts are one-line errors
    capsys.readouterr()
    assert main(["llava", "assemble", "--llm", str(tmp_path / "clip"), "--vision", str(tmp_path / "clip"),
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes a Llama (Vicuna) causal LM" in err[0]
