"""Test helpers: a small deterministic fake vision source, tiny run configs, and a DDP entry point.

The fake source stands in for :func:`uvlm.vision.presets.vision_source` so training tests need no trained towers:

- ``siglip``: a frozen random 12x12 patch convolution at 48 px -> ``(B, 16, 32)`` float features (cached float16);
- ``vq``: a frozen random patch convolution -> 8-dim vectors, each replaced by the id of its nearest entry of a fixed
  random codebook ``(64, 8)`` (cached int32); understanding inputs are the code vectors, targets the ids; ``decode``
  paints each token's code vector as a colour patch;
- ``kl-vae``: a frozen random patch convolution -> ``(B, 16, 8)`` continuous latents (cached float16); ``decode``
  paints each latent as a colour patch.

Run as a script (``python tests/_fakes.py CONFIG.json OUT``, e.g. under ``torchrun``) it trains the config with the
fake source.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from uvlm.data.config import SplitConfig
from uvlm.model.config import LLMConfig, UnifiedConfig
from uvlm.train.config import (CheckpointConfig, DataConfig, EvalConfig, LogConfig, OptimConfig, RunConfig,
                               variant_config)
from uvlm.vision.base import to_float_batch

RESOLUTION = 48
PATCH = 12
WIDTH = 32
CODES = 64
CODE_DIM = 8


class FakeSource:
    """A frozen random vision source at 48 px with 16 tokens per image (see the module docstring)."""

    def __init__(self, kind: str, resolution: int = RESOLUTION):
        assert kind in ("siglip", "vq", "kl-vae"), kind
        self.kind = kind
        self.resolution = resolution
        self.num_tokens = (resolution // PATCH) ** 2
        g = torch.Generator().manual_seed({"siglip": 1234, "vq": 4321, "kl-vae": 5678}[kind])
        out = WIDTH if kind == "siglip" else CODE_DIM
        self._conv = torch.randn(out, 3, PATCH, PATCH, generator=g) / (3 * PATCH * PATCH) ** 0.5
        self._bias = torch.randn(out, generator=g) * 0.1
        self._continuous = kind != "vq"
        if kind == "siglip":
            self.input_dim = self.target_dim = WIDTH
            self.cache_dtype = "float16"
            self._codebook = None
        elif kind == "kl-vae":
            self.input_dim = self.target_dim = CODE_DIM
            self.cache_dtype = "float16"
            self._codebook = None
            self._paint = torch.randn(CODE_DIM, 3, generator=g)
        else:
            self.input_dim, self.target_dim = CODE_DIM, CODES
            self.cache_dtype = "int32"
            self._codebook = F.normalize(torch.randn(CODES, CODE_DIM, generator=g), dim=-1)
            self._paint = torch.randn(CODE_DIM, 3, generator=g)

    def identity(self) -> dict:
        return {"fake": self.kind, "resolution": self.resolution, "version": 1}

    def _vectors(self, images) -> torch.Tensor:
        x = to_float_batch(images, self.resolution)
        y = F.conv2d(x * 2 - 1, self._conv, self._bias, stride=PATCH)  # (B, D, h, w)
        return y.flatten(2).transpose(1, 2)  # (B, N, D)

    def encode_cached(self, images) -> torch.Tensor:
        v = self._vectors(images)
        if self._continuous:
            return v
        return (F.normalize(v, dim=-1) @ self._codebook.T).argmax(-1)  # (B, N) nearest code

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.float() if self._continuous else self._codebook[cached.long()]

    def to_targets(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.float() if self._continuous else cached.long()

    @property
    def codebook(self) -> torch.Tensor | None:
        return self._codebook

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.kind == "siglip":
            raise NotImplementedError("the fake SigLIP source has no pixel decoder")
        side = self.resolution // PATCH
        vectors = tokens.float() if self.kind == "kl-vae" else self._codebook[tokens.long()]
        rgb = torch.sigmoid(vectors @ self._paint)  # (B, N, 3)
        img = rgb.transpose(1, 2).reshape(tokens.shape[0], 3, side, side)
        return F.interpolate(img, size=(self.resolution, self.resolution), mode="nearest")


_SOURCES: dict[str, FakeSource] = {}


def fake_vision_source(kind: str, source: str = "tiny") -> FakeSource:
    """Drop-in for ``uvlm.train.data.get_vision_source`` (one object per kind)."""
    if kind not in _SOURCES:
        _SOURCES[kind] = FakeSource(kind)
    return _SOURCES[kind]


def install(monkeypatch) -> None:
    """Make the training pipeline use the fake source."""
    import uvlm.train.data

    monkeypatch.setattr(uvlm.train.data, "get_vision_source", fake_vision_source)


def tiny_config(variant: str = "SigLIP-SigLIP", n: int = 24, steps: int | None = 4, batch: int = 8,
                lr: float = 3e-3, questions: int = 0, **kw) -> RunConfig:
    """A run of a few seconds: debug LLM, 48 px fake features, ``n`` samples per task."""
    data = DataConfig(train=SplitConfig.train(resolution=RESOLUTION, n_vqa=n, n_caption=n, n_generation=n),
                      test=SplitConfig.test(resolution=RESOLUTION, n_vqa=16, n_generation=8), feature_chunk=64)
    base = RunConfig(data=data, model=UnifiedConfig(llm=LLMConfig(preset="debug")),
                     optim=OptimConfig(batch_size=batch, steps=steps, lr_llm=lr, lr_vision=lr, warmup_ratio=0.0,
                                       schedule="constant_with_warmup"),
                     eval=EvalConfig(questions=questions, batch_size=16, max_new_tokens=8),
                     log=LogConfig(interval=1, tensorboard=False), checkpoint=CheckpointConfig(every=0))
    cfg = variant_config(variant, base)
    return cfg.with_(**kw) if kw else cfg


if __name__ == "__main__":  # python tests/_fakes.py CONFIG.json OUT
    import uvlm.train.data
    from uvlm.train.loop import train

    uvlm.train.data.get_vision_source = fake_vision_source
    cfg = RunConfig.from_dict(json.loads(open(sys.argv[1]).read()))
    from uvlm.eval.vqa import vqa_evaluator

    train(cfg, sys.argv[2], quiet=True, evaluator=vqa_evaluator)
