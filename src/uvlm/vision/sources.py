"""Vision sources: what the training pipeline needs from a frozen vision model, behind one small interface.

A :class:`VisionSource` wraps a frozen encoder (SigLIP tower or VQ tokenizer) and says

- what to cache per image (``encode_cached``: float patch features, or int code ids),
- how cached rows become understanding inputs (``to_inputs``: ``(B, N, D_in)`` float) and generation targets
  (``to_targets``: float ``(B, N, D_out)`` or long ids ``(B, N)``),
- how generated tokens become pixels (``decode``), where a decoder exists.

Concrete sources are built by :func:`uvlm.vision.presets.vision_source` (tiny presets trained here, or local
full-scale checkpoints).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class VisionSource(Protocol):
    kind: str
    """``siglip`` or ``vq`` (the space name the model config uses)."""
    resolution: int
    """Image side the encoder takes."""
    num_tokens: int
    """Tokens per image (N)."""
    input_dim: int
    """Width of ``to_inputs`` rows (SigLIP width, or 8 for VQ latents)."""
    target_dim: int
    """Width of continuous targets (SigLIP width); for VQ the codebook size K."""
    cache_dtype: str
    """``float16`` for features, ``int32`` for code ids."""

    def identity(self) -> dict[str, Any]:
        """JSON-able identity of the frozen weights and settings (the feature cache key)."""

    def encode_cached(self, images: list) -> torch.Tensor:
        """PIL images -> what is cached per image: ``(B, N, D)`` float or ``(B, N)`` long."""

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        """Cached rows -> understanding input features ``(B, N, D_in)`` float32."""

    def to_targets(self, cached: torch.Tensor) -> torch.Tensor:
        """Cached rows -> generation targets: ``(B, N, D)`` float32 or ``(B, N)`` long ids."""

    @property
    def codebook(self) -> torch.Tensor | None:
        """``(K, D)`` code vectors for VQ sources (what the model embeds generated ids with), else ``None``."""

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens (ids ``(B, N)`` or vectors ``(B, N, D)``) -> images ``(B, 3, H, W)`` in [0, 1]."""
