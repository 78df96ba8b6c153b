"""Vision adapters (encoder space -> LLM input space) and the fixed random affine distortion."""

from __future__ import annotations

import torch
from torch import nn

from uvlm.errors import require


def build_adapter(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """``linear``: ``Linear(in_dim, out_dim)``; ``mlp``: ``Linear(in_dim, out_dim) - GELU - Linear(out_dim, out_dim)``.

    Maps ``(..., in_dim)`` float to ``(..., out_dim)`` float.
    """
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    require(kind == "mlp", f"unknown adapter {kind!r}: use linear or mlp")
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class AffineMap(nn.Module):
    """A fixed random invertible affine map ``y = x @ A + b`` on ``(..., dim)`` tensors.

    ``A = Q @ diag(s)``: ``Q`` a random orthogonal matrix (QR of a Gaussian, signs fixed so it is unique) and ``s``
    uniform in ``scale``, so the singular values of ``A`` are exactly ``s`` and its condition number is at most
    ``hi / lo``. ``b`` is Gaussian with standard deviation ``offset_std``. Everything is drawn in float64 from
    ``seed`` alone and stored as buffers: the map is saved with the model but is not a parameter, so no optimizer
    ever sees it and it receives no gradient.
    """

    def __init__(self, dim: int, seed: int, scale: tuple[float, float] = (0.5, 2.0), offset_std: float = 0.1):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        lo, hi = scale
        s = lo + (hi - lo) * torch.rand(dim, generator=g, dtype=torch.float64)
        b = offset_std * torch.randn(dim, generator=g, dtype=torch.float64)
        # A (dim, dim), its closed-form inverse diag(1/s) @ Q^T, and b (dim,); all float32
        self.register_buffer("matrix", (q * s.unsqueeze(0)).float())
        self.register_buffer("inverse_matrix", (q / s.unsqueeze(0)).T.contiguous().float())
        self.register_buffer("offset", b.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ A + b``."""
        return x @ self.matrix.to(x.dtype) + self.offset.to(x.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(y - b) @ A^-1``: undoes :meth:`forward`."""
        return (y - self.offset.to(y.dtype)) @ self.inverse_matrix.to(y.dtype)
