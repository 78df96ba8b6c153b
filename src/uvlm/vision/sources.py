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


class PooledSource:
    """A continuous source whose square token grid is average-pooled ``k x k`` before the LLM sees it.

    The LLaVA-style lever for shorter sequences: 2x2 pooling turns the tiny SigLIP tower's 8x8 = 64 patch tokens into
    4x4 = 16, so every image costs the LLM 4x fewer positions, for understanding inputs and generation targets alike.
    The frozen encoder and its feature cache are unchanged (the cache holds the full grid; pooling happens when cached
    rows become inputs or targets). Decoding repeats each pooled token over its ``k x k`` cells and runs the wrapped
    source's decoder, so drawings from pooled tokens are coarser than from the full grid.
    """

    def __init__(self, base, k: int):
        side = int(round(base.num_tokens ** 0.5))
        if side * side != base.num_tokens or side % k:
            from uvlm.errors import UserError

            raise UserError(f"cannot pool the {base.kind} token grid of {base.num_tokens} tokens {k}x{k}: the grid "
                            f"side must be a multiple of {k}; set vision.pool to 1 or a divisor of {side}")
        self.base, self.k, self.side = base, int(k), side
        self.kind = base.kind
        self.cache_dtype = base.cache_dtype
        self.resolution = base.resolution
        self.num_tokens = (side // k) ** 2
        self.input_dim, self.target_dim = base.input_dim, base.target_dim

    def identity(self) -> dict[str, Any]:
        return {**self.base.identity(), "pool": self.k}

    def cache_identity(self) -> dict[str, Any]:
        """The feature cache key: the wrapped source's (the cache holds unpooled rows)."""
        return self.base.identity()

    def encode_cached(self, images: list) -> torch.Tensor:
        return self.base.encode_cached(images)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, side*side, D)`` -> ``(B, (side/k)**2, D)`` by averaging ``k x k`` cells (row-major grids)."""
        b, _, d = x.shape
        grid = x.reshape(b, self.side, self.side, d).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.avg_pool2d(grid, self.k)
        return pooled.permute(0, 2, 3, 1).reshape(b, self.num_tokens, d)

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        return self.pool(self.base.to_inputs(cached))

    def to_targets(self, cached: torch.Tensor) -> torch.Tensor:
        return self.pool(self.base.to_targets(cached))

    @property
    def codebook(self) -> None:
        return None

    def unpool(self, tokens: torch.Tensor) -> torch.Tensor:
        b, _, d = tokens.shape
        s = self.side // self.k
        grid = tokens.reshape(b, s, s, d).repeat_interleave(self.k, 1).repeat_interleave(self.k, 2)
        return grid.reshape(b, self.side * self.side, d)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.base.decode(self.unpool(tokens.float()))
