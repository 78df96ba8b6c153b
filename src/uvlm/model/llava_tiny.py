"""A tiny random-weight LLaVA-1.5 checkpoint in the real format, for tests and for trying the extension on a CPU.

:func:`save_tiny_llava` writes what ``LlavaForConditionalGeneration.save_pretrained`` and ``LlavaProcessor`` write for
llava-1.5-7b-hf (``config.json``, ``model.safetensors``, ``generation_config.json``, the tokenizer files with the
``<image>`` token, ``preprocessor_config.json`` of a ``CLIPImageProcessor``), at toy sizes: a 3-layer CLIP vision
tower on 42 px images (patch 14: 9 patch tokens, ``vision_feature_layer`` -2, CLS dropped), LLaVA's 2-layer GELU
projector and a 2-layer Llama with spare embedding rows (as llava-hf pads its vocabulary to 32,064). The tokenizer is a
byte-level BPE trained with ``tokenizers`` on a fixed English corpus (deterministic). Weights are random from
``seed``; nothing downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: A fixed corpus for the tiny byte-level BPE (captions, questions and answers of the kind the tests write).
_CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "USER: ASSISTANT: What is in the image? Describe the image briefly.",
    "Render a clear and concise summary of the photo. What color is the square?",
    "A red square on a white background. A blue circle in the middle of a green field.",
    "The image shows a small yellow triangle next to a black line.",
    "yes no one two three four five six seven eight nine ten",
]


def _tokenizer(model_max_length: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>", model_max_length=model_max_length, padding_side="right")
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def save_tiny_llava(folder: str | os.PathLike, seed: int = 0, image_size: int = 42) -> Path:
    """Write a tiny random ``LlavaForConditionalGeneration`` checkpoint (real format) to ``folder``; returns it."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=image_size, patch_size=14, projection_dim=32)
    text = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=len(tokenizer) + 6, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    from uvlm.model.llava import _quiet_image_processor

    processor = _quiet_image_processor(CLIPImageProcessor, size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size},
                                       image_mean=clip_mean, image_std=clip_std)
    processor.save_pretrained(str(folder))
    return folder


#: The colours of the tiny data's images (one image per colour).
COLOURS: dict[str, tuple[int, int, int]] = {"red": (200, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 200),
                                            "yellow": (200, 200, 20), "cyan": (20, 200, 200),
                                            "magenta": (200, 20, 200)}


def save_tiny_llava_data(folder: str | os.PathLike) -> dict[str, Path]:
    """Write tiny LLaVA-format data: ``images/0.png`` .. ``5.png`` (one colour each, sizes 48x40 to 68x40),
    ``pretrain.json`` (a caption conversation per image, as ``blip_laion_cc_sbu_558k.json``), ``mix.json`` (three of
    those, a text-only conversation and a two-turn one, as ``llava_v1_5_mix665k.json``) and ``captions.json`` (one
    caption per image, as ShareGPT4V-PT). Returns the paths by name (``images``, ``pretrain``, ``mix``,
    ``captions``)."""
    import json

    from PIL import Image

    folder = Path(folder)
    img = folder / "images"
    img.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i, n in enumerate(names):
        Image.new("RGB", (48 + 4 * i, 40), COLOURS[n]).save(img / f"{i}.png")

    def conv(*turns):
        return [{"from": f, "value": v} for q, a in turns for f, v in (("human", q), ("gpt", a))]

    pre = [{"id": f"p{i}", "image": f"{i}.png",
            "conversations": conv(("<image>\nDescribe the image briefly.", f"A {n} square."))}
           for i, n in enumerate(names)]
    mix = pre[:3] + [{"id": "t0", "conversations": conv(("one two", "three"))},
                     {"id": "m0", "image": "3.png",
                      "conversations": conv(("What color is the square?\n<image>", "yellow"), ("Is it a circle?", "no"))}]
    cap = [{"id": f"c{i}", "image": f"{i}.png",
            "conversations": conv(("<image>\nWhat is in the photo?", f"A {n} square on a white background."))}
           for i, n in enumerate(names)]
    files = {"images": img}
    for name, recs in (("pretrain", pre), ("mix", mix), ("captions", cap)):
        files[name] = folder / f"{name}.json"
        files[name].write_text(json.dumps(recs, indent=1) + "\n", encoding="utf-8")
    return files


__all__ = ["save_tiny_llava", "save_tiny_llava_data", "COLOURS"]
