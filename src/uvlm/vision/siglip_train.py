"""Train the tiny SigLIP preset on SmartWatch (a CPU stand-in for ``google/siglip-base-patch16-224``).

A tiny ``transformers`` ``SiglipModel`` (a 64 px ViT with 8 px patches -> 64 patch tokens, and a small text tower that
uses the word-level tokenizer of :mod:`uvlm.data.tokenizer`) is trained with the model's own SigLIP sigmoid
image-text loss (``SiglipModel(..., return_loss=True)``, learnable temperature and bias, initialised to
``log 10`` and ``-10`` as in the SigLIP paper) on SmartWatch images paired with *full* captions (every attribute
stated: :func:`uvlm.data.texts.caption` with all probabilities 1.0). The images come from a dedicated split
(``vision-pretrain``), so no experiment's training or test image is ever seen; the probes use yet another split
(``vision-probe``).

The sigmoid loss alone spends its capacity on whatever separates captions within a batch, and a tiny tower does not
learn to state minute, second and battery precisely within a CPU budget. So an auxiliary attribute loss (weight
``aux_attribute_loss``; 0 turns it off) adds linear heads on the mean-pooled patch tokens of the feature layer
(``feature_layer``, the layer the language model reads): hour mod 12, minute, second, weather, weather position,
battery position and battery (cross-entropy each, averaged). The heads are discarded after training; only the
vision model is saved.

Measured on this machine (one thread, linear probes on mean-pooled layer -2 tokens, 4,000 / 1,000 probe images):

=====================================  =======  ====  ======  ======  =======  ===========  ===========  =======
run                                    CPU min  hour  minute  second  battery  weather      positions    images
=====================================  =======  ====  ======  ======  =======  ===========  ===========  =======
B=48, 1100 steps, lr 1e-3, aux 1.0         ~6   .677    .596    .429     .233   1.0          1.0, 1.0      53K
B=32, 2000 steps, lr 2e-3, aux 3.0        7.1   .920    .898    .789     .621   1.0          1.0, 1.0      64K
B=32, 4000 steps, lr 2e-3, aux 3.0        14.6  .991    .975    .944     .990   1.0          1.0, 1.0     128K
=====================================  =======  ====  ======  ======  =======  ===========  ===========  =======

The last row is the default preset. The sigmoid loss alone levels off early (about 2.1 per image at batch 32) once
the coarse attributes separate the captions of a batch, which is why the auxiliary loss is on by default.

Run deterministic on one thread: same config, same bytes. The artifact (``uvlm.vision.artifacts`` format) holds the
vision model's state dict, ``config.json`` (``"kind": "siglip"``, the HF vision config, the tower settings and this
training config) and ``info.json`` (probe accuracies per attribute, training wall-clock and CPU minutes, images/s).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from uvlm.data import texts
from uvlm.data.attributes import TEXT_ATTRIBUTES, rng_for
from uvlm.data.config import MIN_RESOLUTION, SplitConfig
from uvlm.data.smartwatch import SmartWatch
from uvlm.errors import check_keys, require
from uvlm.vision.probe import NUM_CLASSES, PROBE_ATTRIBUTES, attribute_labels, probe_attributes
from uvlm.vision.siglip import KIND, SiglipTower, load_siglip  # noqa: F401  (load_siglip re-exported)
from uvlm.vision.artifacts import announce_training, artifact_dir, cached, save_artifact

__all__ = ["SiglipTrainConfig", "train_siglip", "load_siglip", "tiny_siglip_path", "build_siglip_model"]


@dataclass(frozen=True)
class SiglipTrainConfig:
    """The tiny SigLIP preset: architecture, data and optimisation. Its hash names the cached artifact."""

    seed: int = 0
    """Seeds the weights, the data order (the pretraining split's seed) and the probe split."""
    resolution: int = 64
    """Image side in pixels (also the SmartWatch rendering size)."""
    patch_size: int = 8
    """ViT patch side; ``(resolution / patch_size) ** 2`` patch tokens (64 at the defaults)."""
    hidden_size: int = 128
    """Vision tower width D (the feature dimension the language model sees)."""
    intermediate_size: int = 512
    """Vision MLP width."""
    num_layers: int = 4
    """Vision transformer layers."""
    num_heads: int = 4
    """Vision attention heads."""
    text_hidden_size: int = 128
    """Text tower width (also the shared embedding size of the sigmoid loss)."""
    text_layers: int = 2
    """Text transformer layers."""
    text_heads: int = 4
    """Text attention heads."""
    text_max_length: int = 48
    """Captions are padded (right) or truncated to this many tokens; SigLIP pools the last position."""
    batch_size: int = 32
    """Image-caption pairs per step (the sigmoid loss sees B positives and B*(B-1) negatives)."""
    steps: int = 4000
    """Optimisation steps; every step draws fresh images (no image is seen twice)."""
    lr: float = 2e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 0)."""
    warmup_steps: int = 100
    """Warm-up steps."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    aux_attribute_loss: float = 3.0
    """Weight of the auxiliary attribute loss (linear heads on the mean-pooled ``feature_layer`` tokens predicting
    hour mod 12, minute, second, weather, both positions and battery). 0 trains with the sigmoid loss alone."""
    feature_layer: int = -2
    """The hidden layer the tower serves and the auxiliary heads read (-2: second-to-last, as in the paper)."""
    pretrain_split: str = "vision-pretrain"
    """Name of the SmartWatch split the images come from (disjoint from every experiment's splits)."""
    probe_train: int = 4000
    """Images to fit the final linear probes on (``vision-probe`` split); 0 skips the probes."""
    probe_test: int = 1000
    """Images to score the final linear probes on."""
    log_every: int = 50
    """Steps between log lines."""

    def __post_init__(self) -> None:
        for n in ("patch_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "text_hidden_size",
                  "text_layers", "text_heads", "text_max_length", "batch_size", "steps", "log_every"):
            v = getattr(self, n)
            require(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"{n} must be a positive integer, got {v!r}")
        require(isinstance(self.resolution, int) and self.resolution >= MIN_RESOLUTION,
                f"resolution must be an integer >= {MIN_RESOLUTION}, got {self.resolution!r}")
        require(self.resolution % self.patch_size == 0,
                f"resolution {self.resolution} is not a multiple of patch_size {self.patch_size}: pick a divisor")
        require(self.hidden_size % self.num_heads == 0 and self.text_hidden_size % self.text_heads == 0,
                "hidden sizes must be multiples of their head counts")
        require(self.batch_size >= 2, "batch_size must be at least 2 (the sigmoid loss needs negatives)")
        require(-(self.num_layers + 1) <= self.feature_layer <= self.num_layers,
                f"feature_layer {self.feature_layer} is out of range for {self.num_layers} layers")
        require(self.aux_attribute_loss >= 0, f"aux_attribute_loss must be >= 0, got {self.aux_attribute_loss!r}")
        require(self.lr > 0 and self.weight_decay >= 0 and self.grad_clip > 0 and self.warmup_steps >= 0,
                "lr and grad_clip must be > 0, weight_decay and warmup_steps >= 0")
        require(self.probe_train >= 0 and self.probe_test >= 0, "probe_train and probe_test must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SiglipTrainConfig":
        check_keys(cls, d, "SigLIP training config")
        return cls(**d)


FULL_CAPTION_PROBS: dict[str, float] = {a: 1.0 for a in TEXT_ATTRIBUTES}


def build_siglip_model(config: SiglipTrainConfig, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    """A randomly initialised ``transformers.SiglipModel`` of the preset's size (seed the global RNG first)."""
    from transformers import SiglipConfig, SiglipModel

    c = config
    hf = SiglipConfig(
        vision_config=dict(image_size=c.resolution, patch_size=c.patch_size, hidden_size=c.hidden_size,
                           intermediate_size=c.intermediate_size, num_hidden_layers=c.num_layers,
                           num_attention_heads=c.num_heads),
        text_config=dict(vocab_size=vocab_size, hidden_size=c.text_hidden_size, intermediate_size=4 * c.text_hidden_size,
                         num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads,
                         max_position_embeddings=c.text_max_length, projection_size=c.hidden_size,
                         pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id),
    )
    model = SiglipModel(hf)
    with torch.no_grad():  # SigLIP paper initialisation of the temperature and bias
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


class AttributeHeads(nn.Module):
    """Linear heads on mean-pooled patch tokens ``(B, N, D)`` -> logits per attribute ``(B, classes)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.heads = nn.ModuleDict({a: nn.Linear(dim, NUM_CLASSES[a]) for a in PROBE_ATTRIBUTES})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = tokens.mean(dim=1)
        return {a: h(pooled) for a, h in self.heads.items()}


class _Batches:
    """Deterministic batches of the pretraining split: step s shows images ``s*B .. s*B+B-1``."""

    def __init__(self, config: SiglipTrainConfig, tokenizer):
        self.c = config
        n = config.steps * config.batch_size
        self.split = SplitConfig(name=config.pretrain_split, seed=config.seed, resolution=config.resolution,
                                 n_vqa=0, n_caption=n, n_generation=0)
        self.sw = SmartWatch(self.split)
        self.tok = tokenizer

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """uint8 images ``(B, R, R, 3)``, int64 caption ids ``(B, L)``, int64 labels ``(B,)`` per attribute."""
        B = self.c.batch_size
        idx = range(step * B, step * B + B)
        attrs = [self.sw.attributes(i) for i in idx]
        images = np.stack([np.asarray(self.sw.renderer.render(a), dtype=np.uint8) for a in attrs])
        captions = [texts.caption(rng_for(self.split.seed, self.split.name, "caption", i), a, FULL_CAPTION_PROBS)[0].answer
                    for i, a in zip(idx, attrs)]
        ids = self.tok(captions, padding="max_length", truncation=True, max_length=self.c.text_max_length,
                       return_tensors="pt").input_ids
        labels = {k: torch.tensor([attribute_labels(a)[k] for a in attrs]) for k in PROBE_ATTRIBUTES}
        return torch.from_numpy(images), ids, labels


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_siglip(config: SiglipTrainConfig | None = None, out: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = _stderr) -> Path:
    """Train the tiny SigLIP, probe it, and save the artifact.

    Args:
        config: the preset (default :class:`SiglipTrainConfig`).
        out: artifact folder; ``None`` writes to the cache folder named by the config hash (reused by
            :func:`tiny_siglip_path`).
        log: receives one line per ``log_every`` steps (step, losses, images/s, ETA) and the probe table.

    Returns:
        The artifact folder (load it with :func:`load_siglip`).
    """
    from transformers import get_cosine_schedule_with_warmup

    from uvlm.data.tokenizer import build_tokenizer

    c = config or SiglipTrainConfig()
    log = log or (lambda _line: None)
    folder = Path(out) if out is not None else artifact_dir(KIND, c.to_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            tok = build_tokenizer()
            model = build_siglip_model(c, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
            heads = AttributeHeads(c.hidden_size)
            tower = SiglipTower(model.vision_model, c.feature_layer)
            params = list(model.parameters()) + (list(heads.parameters()) if c.aux_attribute_loss > 0 else [])
            opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
            sched = get_cosine_schedule_with_warmup(opt, c.warmup_steps, c.steps)
            data = _Batches(c, tok)
            n_params = sum(p.numel() for p in model.vision_model.parameters())
            log(f"siglip-tiny: vision {n_params / 1e6:.2f}M params, {tower.num_tokens} tokens x {tower.dim}, "
                f"text {sum(p.numel() for p in model.text_model.parameters()) / 1e6:.2f}M, vocab {len(tok)}, "
                f"{c.steps} steps x {c.batch_size}, aux {c.aux_attribute_loss} -> {folder}")
            model.train()
            heads.train()
            t0, cpu0 = time.perf_counter(), time.process_time()
            t_last, sums, n_sum = t0, np.zeros(3), 0
            for step in range(c.steps):
                images, ids, labels = data.get(step)
                pixels = tower.preprocess(images)
                out_ = model(input_ids=ids, pixel_values=pixels, return_loss=True, output_hidden_states=True)
                sig = out_.loss
                loss = sig
                aux = torch.zeros(())
                if c.aux_attribute_loss > 0:
                    feats = out_.vision_model_output.hidden_states[c.feature_layer]
                    logits = heads(feats)
                    aux = torch.stack([nn.functional.cross_entropy(logits[a], labels[a]) for a in PROBE_ATTRIBUTES]).mean()
                    loss = sig + c.aux_attribute_loss * aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
                opt.step()
                sched.step()
                sums += (loss.item(), sig.item(), aux.item())
                n_sum += 1
                if (step + 1) % c.log_every == 0 or step + 1 == c.steps:
                    now = time.perf_counter()
                    ips = n_sum * c.batch_size / (now - t_last)
                    eta = (c.steps - step - 1) * c.batch_size / max(ips, 1e-9) / 60
                    m = sums / n_sum
                    log(f"step {step + 1}/{c.steps} | loss {m[0]:.4f} sigmoid {m[1]:.4f} aux {m[2]:.4f} | "
                        f"t {model.logit_scale.exp().item():.2f} b {model.logit_bias.item():.2f} | "
                        f"lr {sched.get_last_lr()[0]:.2e} | {ips:.0f} img/s | ETA {eta:.1f} min")
                    t_last, sums, n_sum = now, np.zeros(3), 0
            minutes = (time.perf_counter() - t0) / 60
            cpu_minutes = (time.process_time() - cpu0) / 60
            model.eval()
            info: dict[str, Any] = {"train_minutes": round(minutes, 2), "train_cpu_minutes": round(cpu_minutes, 2),
                                    "images_per_second": round(c.steps * c.batch_size / (minutes * 60), 1),
                                    "vision_params": n_params, "threads": 1}
            if c.probe_train > 0 and c.probe_test > 0:
                t1 = time.perf_counter()
                info["probe"] = probe_attributes(tower.encode, c.resolution, c.probe_train, c.probe_test, "mean",
                                                 seed=c.seed, log=log)
                info["probe_pooling"] = "mean"
                info["probe_minutes"] = round((time.perf_counter() - t1) / 60, 2)
        vision_config = model.vision_model.config.to_dict()
        config_json = {"kind": KIND, "vision_config": vision_config, "tower": tower.tower_config(),
                       "train": c.to_dict()}
        save_artifact(folder, model.vision_model.state_dict(), config_json, info)
        log(f"saved {folder} ({minutes:.1f} min training, {cpu_minutes:.1f} CPU min)")
        return folder
    finally:
        torch.set_num_threads(threads)


def tiny_siglip_path(config: SiglipTrainConfig | None = None, train_if_missing: bool = True,
                     log: Callable[[str], None] | None = _stderr) -> Path:
    """The cached tiny-SigLIP artifact for ``config``; trained now (about 10-15 min on one core) if missing."""
    c = config or SiglipTrainConfig()
    found = cached(KIND, c.to_dict())
    if found is not None:
        return found
    require(train_if_missing, f"no cached tiny SigLIP for this config in {artifact_dir(KIND, c.to_dict()).parent}: "
                              f"train it with train_siglip() first")
    announce_training(KIND)
    return train_siglip(c, None, log)
