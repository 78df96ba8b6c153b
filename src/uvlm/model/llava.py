"""LLaVA-1.5 extended into a unified VLM (the paper's section 4.3, Table 2).

A LLaVA-1.5 checkpoint in ``transformers``' ``LlavaForConditionalGeneration`` format (a local folder written by
``save_pretrained``: ``config.json``, weights, tokenizer, ``preprocessor_config.json``) becomes a
:class:`~uvlm.model.unified.UnifiedVLM` whose parts are LLaVA's own modules::

    understanding:  image -> LLaVA's CLIP tower (vision_feature_layer, CLS dropped by the "default" strategy)
                          -> LLaVA's projector (the understanding adapter) -> LLM input positions
    generation:     LLM hidden -> generation head (new) -> next vision token
                          -> generation adapter (new, Linear-GELU-Linear) -> LLM input of the next position

The language model is LLaVA's own decoder and LM head (the same module objects, no copy), driven through
``inputs_embeds`` like every uvlm model, so training, answering (:func:`uvlm.model.generate.answer`) and drawing
(:func:`uvlm.model.generate.generate_images`) are uvlm's. The generation targets:

- ``clip``: the CLIP features of the target image (the same layer and tokens as the understanding input), regressed
  with ``1 - cosine`` (alpha 1.0), the paper's CLIP-CLIP. They come from a frozen copy of the tower as it was loaded,
  so the target space stays fixed when stage 2 trains the tower. CLIP features have no pixel decoder here.
- ``vq``: LlamaGen VQ-16 code ids (``vq_ds16_t2i.pt``), cross-entropy over the codebook (alpha 0.2), the paper's
  CLIP-VQ; the generated ids decode to pixels with the VQ decoder.
- ``None``: understanding only (LLaVA-1.5 itself, the baseline row of Table 2).

Sequences are uvlm's (:mod:`uvlm.model.sequence`): ``<s> <image> x N USER: {question} ASSISTANT: {answer} </s>`` and
``<s> USER: {caption} ASSISTANT: <boi> [image] x N_out``. LLaVA's own ``<image>`` token is reused when the tokenizer
has it; ``<boi>`` and ``<eoi>`` are added (the embedding grows only if the checkpoint has no spare rows).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uvlm.errors import UserError, check_keys, check_types, require
from uvlm.model.adapters import build_adapter
from uvlm.model.config import ADAPTERS, TemplateConfig
from uvlm.model.sequence import IGNORE, Batch, Example, SequenceBuilder
from uvlm.model.targets import SigLIPTarget, target_class
from uvlm.model.unified import UnifiedVLM

#: Generation targets of the extension (``None``: understanding only).
LLAVA_TARGETS: tuple[str, ...] = ("clip", "vq")

#: How images are made square before the image processor: ``pad`` (LLaVA-1.5's ``image_aspect_ratio``: pad with the
#: processor's mean colour) or ``crop`` (the processor's own resize and centre crop).
ASPECTS: tuple[str, ...] = ("pad", "crop")


@dataclass(frozen=True)
class LlavaExtensionConfig:
    """Which LLaVA checkpoint to extend, and with what."""

    base: str
    """Local folder of a ``LlavaForConditionalGeneration`` checkpoint (``save_pretrained`` layout). Nothing downloads."""
    target: str | None = "clip"
    """Generation target: ``clip`` (CLIP-CLIP), ``vq`` (CLIP-VQ) or ``None`` (understanding only)."""
    vq_source: str | None = None
    """For ``vq``: LlamaGen's ``vq_ds16_t2i.pt`` (or a uvlm ``vq`` artifact folder)."""
    gen_adapter: str = "mlp"
    """The generation adapter, one of :data:`uvlm.model.config.ADAPTERS` (paper: a 2-layer MLP)."""
    alpha: float | None = None
    """Weight of the vision loss (``None``: the target's default, 1.0 for ``clip``, 0.2 for ``vq``)."""
    aspect: str = "pad"
    """One of :data:`ASPECTS`."""
    max_length: int | None = 2048
    """Longest sequence (LLaVA-1.5's ``model_max_length``); a longer sample is an error, not truncated."""
    seed: int = 0
    """Seed of the new weights (generation adapter, head, new token rows)."""

    def __post_init__(self) -> None:
        require(isinstance(self.base, str) and self.base != "", "the LLaVA base must be a local folder path")
        require(self.target is None or self.target in LLAVA_TARGETS,
                f"unknown LLaVA generation target {self.target!r}: use one of {', '.join(LLAVA_TARGETS)} or none")
        require(self.target != "vq" or self.vq_source,
                "the vq target needs the VQ tokenizer: pass --vq PATH (LlamaGen's vq_ds16_t2i.pt)")
        require(self.gen_adapter in ADAPTERS, f"unknown adapter {self.gen_adapter!r}: use one of {', '.join(ADAPTERS)}")
        require(self.aspect in ASPECTS, f"unknown aspect {self.aspect!r}: use one of {', '.join(ASPECTS)}")
        require(self.alpha is None or (isinstance(self.alpha, (int, float)) and self.alpha >= 0),
                f"alpha must be a number >= 0, got {self.alpha!r}")
        require(self.max_length is None or (isinstance(self.max_length, int) and self.max_length > 0),
                f"max_length must be a positive integer, got {self.max_length!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LlavaExtensionConfig":
        check_keys(cls, d, "llava extension")
        check_types(cls, d, "llava extension")
        return cls(**d)

    @property
    def name(self) -> str:
        """The row name of Table 2: ``CLIP-CLIP``, ``CLIP-VQ`` or ``CLIP_u``."""
        return {"clip": "CLIP-CLIP", "vq": "CLIP-VQ", None: "CLIP_u"}[self.target]


@dataclass(frozen=True)
class LlavaShape:
    """The resolved sizes the shared model code reads from ``model.config``."""

    input_dim: int
    """Width of the tower's features (the projector's input)."""
    num_output_tokens: int
    """Vision tokens of one generated image (CLIP: the tower's patch count; VQ: the code grid)."""
    target_dim: int
    """Width of a continuous target (CLIP: ``input_dim``)."""
    seed: int
    affine_on_feedback: bool = False
    num_input_tokens: int = 0
    """Understanding positions per image."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CLIPTarget(SigLIPTarget):
    """CLIP patch features ``(B, N_out, D)``, ``1 - cos``, alpha 1.0: the SigLIP target's rule in CLIP's space. Not a
    registered SmartWatch target (the SmartWatch pipeline has no CLIP source); built by :class:`LlavaUnifiedVLM`."""

    name = "clip"
    space = "clip"
    display = "CLIP"
    source_kind = None
    decoder = None
    feature_probe = False
    normalise_feedback = False
    produces = "CLIP features"


# ----- loading the checkpoint ---------------------------------------------------------------------------------------
def read_llava_config(folder: str | os.PathLike):
    """The ``LlavaConfig`` of a local folder; anything else is a one-line :class:`UserError` naming what it is."""
    from transformers import AutoConfig, LlavaConfig

    folder = Path(folder).expanduser()
    require(folder.is_dir() and (folder / "config.json").is_file(),
            f"LLaVA checkpoint folder {str(folder)!r} not found or has no config.json: give a local folder written by "
            f"LlavaForConditionalGeneration.save_pretrained (e.g. llava-1.5-7b-hf)")
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{folder / 'config.json'} is not readable JSON ({e}): restore the checkpoint") from None
    arch = raw.get("architectures") or []
    require(raw.get("model_type") == "llava",
            f"{str(folder)!r} holds a {raw.get('model_type')!r} model ({', '.join(arch) or 'no architectures'}), not "
            f"LlavaForConditionalGeneration: give a LLaVA-1.5 checkpoint in transformers' llava format (llava-hf)")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the LLaVA config in {str(folder)!r}: {str(e).splitlines()[0]}") from None
    require(isinstance(config, LlavaConfig), f"{str(folder)!r} is not a LLaVA checkpoint")
    vt = getattr(config.vision_config, "model_type", None)
    require(vt == "clip_vision_model",
            f"the LLaVA checkpoint's vision tower is {vt!r}: the extension takes LLaVA-1.5's CLIP tower "
            f"(clip_vision_model)")
    require(isinstance(config.vision_feature_layer, int),
            f"vision_feature_layer {config.vision_feature_layer!r} picks several layers: the extension takes one "
            f"layer (LLaVA-1.5: -2)")
    require(config.vision_feature_select_strategy in ("default", "full"),
            f"unknown vision_feature_select_strategy {config.vision_feature_select_strategy!r}")
    return config


def load_llava(folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """``(LlavaForConditionalGeneration, tokenizer, image_processor)`` from a local folder (``local_files_only``)."""
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    from transformers.utils import logging as hf_logging

    folder = Path(folder).expanduser()
    read_llava_config(folder)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = LlavaForConditionalGeneration.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot load the LLaVA weights from {str(folder)!r}: {str(e).splitlines()[0][:200]}") \
            from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{str(folder)!r} has no usable tokenizer ({str(e).splitlines()[0][:160]}): save the "
                        f"tokenizer into the checkpoint folder") from None
    require((folder / "preprocessor_config.json").is_file(),
            f"{str(folder)!r} has no preprocessor_config.json: save LLaVA's image processor (CLIPImageProcessor) into "
            f"the checkpoint folder")
    image_processor = _quiet_image_processor(AutoImageProcessor.from_pretrained, str(folder), local_files_only=True)
    return model, tokenizer, image_processor


def _quiet_image_processor(fn, *args, **kw):
    """``fn(*args, **kw)`` without transformers' notice that the PIL backend stands in for torchvision."""
    import logging

    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return fn(*args, **kw)
        finally:
            hf_logging.set_verbosity(hf_level)
    finally:
        log.setLevel(level)


def _causal_lm(llava) -> nn.Module:
    """A ``*ForCausalLM`` around LLaVA's own decoder and LM head (the same modules: no weight is copied)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(llava.config.text_config)
    require(hasattr(shell, "model") and hasattr(shell, "lm_head"),
            f"the LLaVA language model {type(shell).__name__} has no model/lm_head: use a Llama (Vicuna) LLaVA")
    shell.model = llava.model.language_model
    shell.lm_head = llava.lm_head
    shell.config = llava.config.text_config
    shell.generation_config = copy.deepcopy(llava.generation_config)
    meta = [n for n, p in shell.named_parameters() if p.is_meta]
    require(not meta, f"the LLaVA language model has parts outside model/lm_head ({meta[:3]}): not supported")
    return shell


# ----- the model ----------------------------------------------------------------------------------------------------
class LlavaUnifiedVLM(UnifiedVLM):
    """LLaVA-1.5 + generation adapter + generation head; a :class:`UnifiedVLM` (same forward, losses, decoding).

    Batches carry pixels: ``features`` are the understanding rows' ``(B_u, 3, H, W)`` processed images; ``targets``
    are the generation rows' processed images ``(B_g, 3, H, W)`` for ``clip`` or their VQ code ids ``(B_g, N_out)``
    for ``vq``. Build it with :func:`build_llava_unified`.
    """

    def __init__(self, ext: LlavaExtensionConfig, llava, tokenizer, image_processor,
                 codebook: torch.Tensor | None = None, vq_tokens: int | None = None):
        nn.Module.__init__(self)
        lc = llava.config
        self.extension = ext
        self.image_processor = image_processor
        self.feature_layer = int(lc.vision_feature_layer)
        self.drop_cls = lc.vision_feature_select_strategy == "default"
        self.tokenizer = tokenizer
        self.sequences = SequenceBuilder(tokenizer, TemplateConfig(max_length=ext.max_length))
        self.token_ids = self.sequences.ids
        vc = lc.vision_config
        n_in = (int(vc.image_size) // int(vc.patch_size)) ** 2 + (0 if self.drop_cls else 1)
        dim = int(vc.hidden_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ext.seed)
            self.vision_tower = llava.model.vision_tower
            self.und_adapter = llava.model.multi_modal_projector
            self.llm = _causal_lm(llava)
            if self.llm.get_input_embeddings().num_embeddings < len(tokenizer):
                self.llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
            hidden = self.llm.get_input_embeddings().embedding_dim
            self.hidden_size = hidden
            self.affine = None
            self.shared_adapter = False
            n_out = n_in if ext.target != "vq" else int(vq_tokens or 0)
            self.config = LlavaShape(input_dim=dim, num_output_tokens=max(n_out, 1), target_dim=dim, seed=ext.seed,
                                     num_input_tokens=n_in)
            self.target = None
            self.gen_adapter = None
            self.target_tower: nn.Module | None = None
            if ext.target == "clip":
                self.target = CLIPTarget(self.config, hidden)
            elif ext.target == "vq":
                require(codebook is not None and vq_tokens, "the vq target needs the VQ tokenizer's codebook")
                self.target = target_class("vq")(self.config, hidden, codebook)
            if self.target is not None:
                self.gen_adapter = build_adapter(ext.gen_adapter, self.target.feature_dim, hidden)
        default = self.target.default_alpha if self.target is not None else 0.0
        self.alpha = float(ext.alpha if ext.alpha is not None else default)

    # ----- vision -----------------------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, tower: nn.Module | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` processed images -> ``(B, N_in, D)`` tower features (LLaVA's layer and tokens)."""
        tower = tower if tower is not None else self.vision_tower
        p = next(tower.parameters())
        out = tower(pixel_values.to(device=p.device, dtype=p.dtype), output_hidden_states=True)
        h = out.hidden_states[self.feature_layer]
        return h[:, 1:] if self.drop_cls else h

    def unused_tower_parameters(self) -> list[nn.Parameter]:
        """The tower's parameters that the features do not depend on: the encoder layers after
        ``vision_feature_layer`` and the final layer norm (LLaVA-1.5 reads layer -2, so its last layer is unused)."""
        layers = self.vision_tower.encoder.layers
        used = self.feature_layer % (len(layers) + 1)  # hidden_states[k] is the output of layer k - 1
        out = [p for layer in layers[used:] for p in layer.parameters()]
        post = getattr(self.vision_tower, "post_layernorm", None)
        return out + (list(post.parameters()) if post is not None else [])

    def freeze_target_tower(self) -> None:
        """Keep a frozen copy of the tower as it is now as the source of ``clip`` targets (call before training
        the tower)."""
        if self.extension.target == "clip" and self.target_tower is None:
            self.target_tower = copy.deepcopy(self.vision_tower).requires_grad_(False).eval()

    def clip_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The ``clip`` training targets of processed images: frozen-tower features, no gradient."""
        with torch.no_grad():
            return self.encode_images(pixel_values, self.target_tower or self.vision_tower).float()

    def input_embeddings(self, batch: Batch):
        feats, targets = batch.features, batch.targets
        if feats is not None and feats.ndim == 4:
            feats = self.encode_images(feats)
        if targets is not None and self.extension.target == "clip" and targets.ndim == 4:
            targets = self.clip_targets(targets)
        return super().input_embeddings(replace(batch, features=feats, targets=targets))

    def preprocess(self, images: list) -> torch.Tensor:
        """PIL images -> ``(B, 3, H, W)`` float pixel values: squared as :attr:`LlavaExtensionConfig.aspect` says,
        then LLaVA's image processor."""
        ims = []
        for k, im in enumerate(images):
            require(hasattr(im, "convert"), f"image {k} is a {type(im).__name__}, not a PIL image")
            im = im.convert("RGB")
            if self.extension.aspect == "pad":
                im = expand_to_square(im, self.image_processor.image_mean)
            ims.append(im)
        return self.image_processor(ims, return_tensors="pt")["pixel_values"].float()


def expand_to_square(image, mean) -> Any:
    """LLaVA-1.5's ``expand2square``: pad the shorter side symmetrically with the processor's mean colour."""
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    colour = tuple(int(round(float(m) * 255)) for m in mean)
    side = max(w, h)
    out = Image.new(image.mode, (side, side), colour)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


def load_vq_source(path: str):
    """The frozen VQ source of a ``vq`` target (LlamaGen ``.pt`` or a uvlm ``vq`` folder)."""
    from uvlm.vision.presets import vision_source

    p = Path(path).expanduser()
    require(p.exists(), f"VQ tokenizer {str(p)!r} not found: pass LlamaGen's vq_ds16_t2i.pt (or a uvlm vq folder)")
    return vision_source("vq", str(p))


def build_llava_unified(ext: LlavaExtensionConfig, dtype: torch.dtype = torch.float32):
    """``(model, vq_source or None)``: the extended model with the base checkpoint's weights and fresh new parts."""
    llava, tokenizer, image_processor = load_llava(ext.base, dtype)
    vq = load_vq_source(ext.vq_source) if ext.target == "vq" else None
    model = LlavaUnifiedVLM(ext, llava, tokenizer, image_processor,
                            codebook=vq.codebook if vq is not None else None,
                            vq_tokens=int(vq.num_tokens) if vq is not None else None)
    return model, vq


# ----- examples -----------------------------------------------------------------------------------------------------
def understanding_example(model: LlavaUnifiedVLM, turns, pixels: torch.Tensor | None) -> Example:
    """An understanding sample: a conversation about one processed image ``(3, H, W)``, or text only (``None``)."""
    seq = model.sequences
    if pixels is not None:
        e = seq.understanding(turns, torch.empty(model.config.num_input_tokens, 0))
        return replace(e, features=pixels)
    require(len(turns) > 0, "a text sample needs at least one question/answer turn")
    ids, labels = [seq.ids.bos], [IGNORE]
    for q, a in turns:
        qi, ai = seq.question_ids(q), seq._text(a) + [seq.ids.eos]
        ids += qi + ai
        labels += [IGNORE] * len(qi) + ai
    return seq._example(ids, labels, torch.zeros(len(ids), dtype=torch.bool), torch.zeros(len(ids), dtype=torch.bool))


def generation_example(model: LlavaUnifiedVLM, instruction: str, target: torch.Tensor) -> Example:
    """A reversed caption: ``instruction`` and the image's target, processed pixels ``(3, H, W)`` (``clip``) or code
    ids ``(N_out,)`` (``vq``)."""
    require(model.target is not None, "this model has no generation target: drop the generation data")
    if model.extension.target == "clip":
        e = model.sequences.generation(instruction, torch.empty(model.config.num_output_tokens, 0))
        return replace(e, targets=target)
    return model.sequences.generation(instruction, target)


# ----- assembling a LLaVA checkpoint from its parts -----------------------------------------------------------------
def _read_model_type(folder: Path, what: str) -> dict[str, Any]:
    require(folder.is_dir() and (folder / "config.json").is_file(),
            f"{what} folder {str(folder)!r} not found or has no config.json: give a local folder written by "
            f"save_pretrained")
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{folder / 'config.json'} is not readable JSON ({e}): restore the checkpoint") from None


def assemble_llava(llm: str | os.PathLike, vision: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
                   pad_to_multiple_of: int = 64) -> Path:
    """Write a ``LlavaForConditionalGeneration`` folder from a causal LM (Vicuna-7B v1.5) and a CLIP model
    (clip-vit-large-patch14-336), with a fresh LLaVA-1.5 projector (Linear-GELU-Linear, seeded): the starting point
    of LLaVA-1.5's own stage 1. The LLaVA config is LLaVA-1.5's (``vision_feature_layer`` -2, CLS dropped); the
    tokenizer gains the ``<image>`` token (and a pad token if it has none) and the embeddings are padded to a multiple
    of ``pad_to_multiple_of`` rows, as llava-hf's are. No weight is copied through a random initialisation: the LLM
    and the tower are placed into the LLaVA model as loaded."""
    from transformers import (AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPVisionConfig,
                              CLIPVisionModel, LlavaConfig, LlavaForConditionalGeneration)
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from uvlm.io import atomic_path

    llm, vision, out = Path(llm).expanduser(), Path(vision).expanduser(), Path(out).expanduser()
    require(not out.exists() or (out.is_dir() and not any(out.iterdir())),
            f"{str(out)!r} exists and is not an empty folder: choose a new folder")
    raw_llm = _read_model_type(llm, "LLM")
    require(raw_llm.get("model_type") == "llama",
            f"the LLM in {str(llm)!r} is a {raw_llm.get('model_type')!r} model: LLaVA-1.5 takes a Llama (Vicuna) "
            f"causal LM")
    raw_vision = _read_model_type(vision, "vision")
    require(raw_vision.get("model_type") in ("clip", "clip_vision_model"),
            f"the vision model in {str(vision)!r} is a {raw_vision.get('model_type')!r} model: LLaVA-1.5 takes a CLIP "
            f"model (clip-vit-large-patch14-336)")
    require((vision / "preprocessor_config.json").is_file(),
            f"{str(vision)!r} has no preprocessor_config.json: save the CLIP image processor beside the weights")
    vision_config = (CLIPVisionConfig(**raw_vision["vision_config"]) if raw_vision["model_type"] == "clip"
                     else CLIPVisionConfig.from_pretrained(str(vision), local_files_only=True))
    bars_off = _progress_bars_off()
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(llm), local_files_only=True)
        tower = CLIPVisionModel.from_pretrained(str(vision), local_files_only=True, config=vision_config)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot load the parts: {str(e).splitlines()[0][:200]}") from None
    finally:
        bars_off()
    tokenizer = AutoTokenizer.from_pretrained(str(llm), local_files_only=True)
    image_processor = _quiet_image_processor(AutoImageProcessor.from_pretrained, str(vision), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if tokenizer.convert_tokens_to_ids("<image>") in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token = int(tokenizer.convert_tokens_to_ids("<image>"))
    if lm.get_input_embeddings().num_embeddings < len(tokenizer):
        lm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)
    config = LlavaConfig(vision_config=vision_config, text_config=lm.config, image_token_index=image_token,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    llava.model.language_model = lm.model
    llava.lm_head = lm.lm_head
    llava.model.vision_tower = tower
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llava.model.multi_modal_projector = LlavaMultiModalProjector(config).to(lm.lm_head.weight.dtype)
    meta = [n for n, p in llava.named_parameters() if p.is_meta]
    require(not meta, f"the assembled model has parts without weights ({meta[:3]}): the LLM or CLIP layout is not "
                      f"supported")
    llava.generation_config = copy.deepcopy(lm.generation_config)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        llava.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        image_processor.save_pretrained(str(tmp))
        (tmp / "uvlm_assembled.json").write_text(json.dumps(
            {"llm": str(llm.resolve()), "vision": str(vision.resolve()), "projector_seed": seed,
             "image_token_index": image_token, "vocab_size": int(lm.get_input_embeddings().num_embeddings)},
            indent=2, sort_keys=True) + "\n")
    return out


def _progress_bars_off():
    """Switch transformers' progress bars and load reports off; returns the function that restores them."""
    from transformers.utils import logging as hf_logging

    was, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    def restore() -> None:
        hf_logging.set_verbosity(level)
        if was:
            hf_logging.enable_progress_bar()

    return restore


__all__ = ["LLAVA_TARGETS", "ASPECTS", "LlavaExtensionConfig", "LlavaShape", "CLIPTarget", "LlavaUnifiedVLM",
           "read_llava_config", "load_llava", "build_llava_unified", "load_vq_source", "expand_to_square",
           "understanding_example", "generation_example", "assemble_llava"]
