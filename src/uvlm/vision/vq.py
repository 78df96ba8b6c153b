"""A VQ image tokenizer with the LlamaGen VQ-16 architecture (encoder, L2-normalised codebook, decoder).

Module names and tensor shapes match the published LlamaGen ``vq_ds16_c2i.pt`` / ``vq_ds16_t2i.pt`` state dicts, so
those weights load with ``strict=True`` (:func:`load_llamagen`); the list of keys and shapes is kept in
``tests/data/llamagen_vq_ds16_keys.json``. The same code builds a small CPU model (:meth:`VQConfig.tiny`) that
:mod:`uvlm.vision.vq_train` trains on SmartWatch images.

Shapes, for a config with resolution ``R``, downsampling ``f = 2 ** (len(ch_mult) - 1)``, grid ``g = R // f`` and
``N = g * g`` tokens:

- ``encode(images)`` -> int64 ``(B, N)`` code ids in ``[0, codebook_size)``, raster order (row-major over the grid).
- ``encode_latents(images)`` -> float32 ``(B, N, codebook_embed_dim)``: the quantised latents, L2-normalised codebook
  rows (the understanding input of a unified model).
- ``decode(ids)`` -> float32 ``(B, 3, R, R)`` in ``[0, 1]``.
- ``embed_codes(ids)`` -> float32 ``(B, N, codebook_embed_dim)``, the same vectors ``encode_latents`` returns.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uvlm.errors import UserError, check_keys, require
from uvlm.vision.artifacts import check_state_dict, load_artifact
from uvlm.vision.base import ImageBatch, to_float_batch

KIND = "vq"


@dataclass(frozen=True)
class VQConfig:
    """Architecture of a VQ tokenizer (LlamaGen VQ family: same encoder/decoder layout, any width and depth).

    Presets: :meth:`vq16` (the published VQ-16, 256 px, 16 x 16 = 256 tokens) and :meth:`tiny` (CPU; 64 px,
    downsampling 4, 16 x 16 = 256 tokens per image, 1,024 codes). The tiny choice was measured on SmartWatch
    images against 64 px / downsampling 8 (64 tokens) and weighed against 96 px / downsampling 8 (144 tokens):
    see :meth:`tiny`.
    """

    resolution: int = 256
    """Image side in pixels the model takes (square images)."""
    codebook_size: int = 16384
    """Number of codebook entries (code ids are in ``[0, codebook_size)``)."""
    codebook_embed_dim: int = 8
    """Dimension of a codebook entry (the quantised latent)."""
    codebook_l2_norm: bool = True
    """Compare and return L2-normalised latents and codes (LlamaGen: True)."""
    commit_loss_beta: float = 0.25
    """Weight of the commitment loss ``||z - sg(e)||^2`` (the codebook loss ``||sg(z) - e||^2`` has weight 1)."""
    ch: int = 128
    """Base channel count of encoder and decoder."""
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    """Channel multiplier per resolution level (encoder and decoder); ``len - 1`` halvings of the image side."""
    num_res_blocks: int = 2
    """Residual blocks per encoder level (the decoder has one more per level)."""
    z_channels: int = 256
    """Channels of the encoder output / decoder input before the 1x1 convs to and from the codebook dimension."""
    dropout: float = 0.0
    """Dropout inside residual blocks."""
    norm_groups: int = 32
    """GroupNorm groups (LlamaGen: 32); every channel count must be divisible by it."""
    usage_window: int = 65536
    """Length of the ``quantize.codebook_used`` buffer: the most recent code ids assigned in training, used for the
    code-usage statistic and dead-code restarts. 65,536 in LlamaGen checkpoints."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        for name in ("resolution", "codebook_size", "codebook_embed_dim", "ch", "num_res_blocks", "z_channels",
                     "norm_groups", "usage_window"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= (0 if name == "usage_window" else 1),
                    f"VQ config {name} must be a positive integer, got {v!r}")
        require(len(self.ch_mult) >= 1 and all(m >= 1 for m in self.ch_mult),
                f"VQ config ch_mult must be a non-empty list of positive integers, got {list(self.ch_mult)}")
        require(self.resolution % self.downsample == 0,
                f"VQ resolution {self.resolution} is not divisible by the downsampling factor {self.downsample}: "
                f"use a multiple of {self.downsample}")
        require(0.0 <= self.dropout < 1.0, f"VQ config dropout must be in [0, 1), got {self.dropout!r}")
        require(self.commit_loss_beta >= 0, f"VQ config commit_loss_beta must be >= 0, got {self.commit_loss_beta!r}")
        bad = sorted(c for c in {self.ch * m for m in self.ch_mult} if c % self.norm_groups)
        require(not bad, f"VQ channel counts {bad} are not divisible by norm_groups={self.norm_groups}: "
                         f"change ch/ch_mult or norm_groups")

    # ----- derived -------------------------------------------------------------------------------------------------
    @property
    def downsample(self) -> int:
        """Image side / token grid side."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        """Token grid side ``resolution // downsample``."""
        return self.resolution // self.downsample

    @property
    def num_tokens(self) -> int:
        """Tokens per image, ``grid ** 2``."""
        return self.grid * self.grid

    # ----- presets -------------------------------------------------------------------------------------------------
    @classmethod
    def vq16(cls, **kw: Any) -> "VQConfig":
        """The published LlamaGen VQ-16: 16,384 x 8 codes, ch 128, ch_mult (1, 1, 2, 2, 4), 256 px -> 256 tokens."""
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "VQConfig":
        """CPU preset: 64 px, downsampling 4 -> 16 x 16 = 256 tokens per image, 1,024 codes of dimension 8.

        Channels 16/32/64 (ch 16, ch_mult (1, 2, 4)), one residual block per encoder level, z_channels 32: 0.77 M
        parameters. Chosen by measurement (table in :mod:`uvlm.vision.vq_train`): after the same 2,000 training
        images, 64 px / ds 4 reached 15.7 dB held-out PSNR with the clock hands already visible, 64 px / ds 8
        (64 tokens) 14.5 dB with no hands at all; 96 px / ds 8 (144 tokens) costs 3x more per training image.
        A 4 x 4 pixel token is needed for the 5-6 px battery digits at 64 px. 256 tokens equals the paper's VQ-16
        count, so the unified model's image sequence length matches the paper's VQ runs.
        """
        base = dict(resolution=64, codebook_size=1024, ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=32,
                    norm_groups=8, usage_window=16384)
        return cls(**{**base, **kw})

    @classmethod
    def preset(cls, name: str, **kw: Any) -> "VQConfig":
        presets = {"vq16": cls.vq16, "tiny": cls.tiny}
        require(name in presets, f"unknown VQ preset {name!r}: use one of {', '.join(presets)}")
        return presets[name](**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VQConfig":
        check_keys(cls, d, "VQ config")
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"bad VQ config ({e}): the checkpoint's config.json is corrupt") from None


# ----- building blocks (LlamaGen layout and parameter names) ------------------------------------------------------

def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3 twice plus a (1x1 conv if the width changes) shortcut. ``(B, Cin, H, W) -> (B, Cout, H, W)``."""

    def __init__(self, cin: int, cout: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions with 1x1-conv q/k/v/out projections. Shape-preserving."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2).unsqueeze(1) for m in (self.q, self.k, self.v))  # (B, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding one pixel on the right and bottom. ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv. ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``res`` blocks, ``attn`` blocks (only at the lowest resolution), optional resampler."""

    def __init__(self, res: list[nn.Module], attn: list[nn.Module], resample_name: str | None, resample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self.resample_name = resample_name
        if resample_name is not None:
            self.add_module(resample_name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        if self.resample_name is not None:
            h = getattr(self, self.resample_name)(h)
        return h


class Encoder(nn.Module):
    """``(B, 3, R, R)`` in ``[-1, 1]`` -> ``(B, z_channels, R/f, R/f)``."""

    def __init__(self, c: VQConfig):
        super().__init__()
        g = c.norm_groups
        self.conv_in = nn.Conv2d(3, c.ch, 3, padding=1)
        levels = []
        block_in = c.ch
        last = len(c.ch_mult) - 1
        for i, mult in enumerate(c.ch_mult):
            block_out = c.ch * mult
            res, attn = [], []
            for _ in range(c.num_res_blocks):
                res.append(ResnetBlock(block_in, block_out, g, c.dropout))
                block_in = block_out
                if i == last:
                    attn.append(AttnBlock(block_in, g))
            levels.append(_Level(res, attn, None if i == last else "downsample",
                                 None if i == last else Downsample(block_in)))
        self.conv_blocks = nn.ModuleList(levels)
        self.mid = nn.ModuleList([ResnetBlock(block_in, block_in, g, c.dropout), AttnBlock(block_in, g),
                                  ResnetBlock(block_in, block_in, g, c.dropout)])
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """``(B, z_channels, R/f, R/f)`` -> ``(B, 3, R, R)`` (roughly in ``[-1, 1]``, unclamped)."""

    def __init__(self, c: VQConfig):
        super().__init__()
        g = c.norm_groups
        block_in = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, block_in, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(block_in, block_in, g, c.dropout), AttnBlock(block_in, g),
                                  ResnetBlock(block_in, block_in, g, c.dropout)])
        levels = []
        last = len(c.ch_mult) - 1
        for i in reversed(range(len(c.ch_mult))):
            block_out = c.ch * c.ch_mult[i]
            res, attn = [], []
            for _ in range(c.num_res_blocks + 1):
                res.append(ResnetBlock(block_in, block_out, g, c.dropout))
                block_in = block_out
                if i == last:
                    attn.append(AttnBlock(block_in, g))
            levels.append(_Level(res, attn, None if i == 0 else "upsample", None if i == 0 else Upsample(block_in)))
        self.conv_blocks = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantiser with L2-normalised codes (LlamaGen ``VectorQuantizer``).

    Parameters: ``embedding.weight`` float32 ``(codebook_size, codebook_embed_dim)``. Buffer: ``codebook_used``
    float32 ``(usage_window,)``, the most recent assigned ids (``-1`` = empty slot), present when the window is > 0.
    """

    def __init__(self, c: VQConfig):
        super().__init__()
        self.n_e = c.codebook_size
        self.e_dim = c.codebook_embed_dim
        self.l2_norm = c.codebook_l2_norm
        self.beta = c.commit_loss_beta
        self.embedding = nn.Embedding(self.n_e, self.e_dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / self.n_e, 1.0 / self.n_e)
            if self.l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        if c.usage_window > 0:
            self.register_buffer("codebook_used", torch.full((c.usage_window,), -1.0))
        else:
            self.codebook_used = None

    def codebook(self) -> torch.Tensor:
        """The code vectors as compared and returned: float32 ``(codebook_size, codebook_embed_dim)``."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 ids of any shape ``S`` -> float32 ``S + (codebook_embed_dim,)``."""
        return F.embedding(ids, self.codebook())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise ``z`` float32 ``(B, D, h, w)``.

        Returns ``(z_q, ids, losses)``: ``z_q`` ``(B, D, h, w)`` with straight-through gradients to ``z``; ``ids``
        int64 ``(B, h, w)``; ``losses`` with scalar ``codebook`` (``||sg(z) - e||^2``) and ``commit``
        (``beta * ||z - sg(e)||^2``).
        """
        zf = z.permute(0, 2, 3, 1)  # (B, h, w, D)
        if self.l2_norm:
            zf = F.normalize(zf, dim=-1)
        emb = self.codebook()
        flat = zf.reshape(-1, self.e_dim)
        # squared distances via ||z||^2 + ||e||^2 - 2 z.e (addmm keeps it one BLAS call)
        d = torch.addmm((flat ** 2).sum(1, keepdim=True) + (emb ** 2).sum(1), flat, emb.t(), alpha=-2.0)
        ids = d.argmin(dim=1)
        zq = emb[ids].view_as(zf)
        losses = {"codebook": F.mse_loss(zq, zf.detach()), "commit": self.beta * F.mse_loss(zf, zq.detach())}
        zq = zf + (zq - zf).detach()
        return zq.permute(0, 3, 1, 2), ids.view(zf.shape[:-1]), losses

    @torch.no_grad()
    def record_usage(self, ids: torch.Tensor) -> None:
        """Push assigned ids into the ``codebook_used`` window (oldest ones drop out)."""
        if self.codebook_used is None:
            return
        flat = ids.reshape(-1).to(self.codebook_used.dtype)[-self.codebook_used.numel():]
        n = flat.numel()
        self.codebook_used.copy_(torch.cat([self.codebook_used[n:], flat]))

    @torch.no_grad()
    def usage(self) -> float:
        """Fraction of codes seen in the ``codebook_used`` window (0 when there is no window)."""
        if self.codebook_used is None:
            return 0.0
        used = self.codebook_used[self.codebook_used >= 0]
        return float(torch.unique(used).numel()) / self.n_e


# ----- the tokenizer ----------------------------------------------------------------------------------------------

class VQTokenizer(nn.Module):
    """Image <-> code ids. State-dict names follow LlamaGen's ``VQModel`` (``encoder.*``, ``decoder.*``,
    ``quantize.*``, ``quant_conv.*``, ``post_quant_conv.*``)."""

    def __init__(self, config: VQConfig | None = None):
        super().__init__()
        self.config = c = config or VQConfig.vq16()
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quantize = VectorQuantizer(c)
        self.quant_conv = nn.Conv2d(c.z_channels, c.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.codebook_embed_dim, c.z_channels, 1)

    # ----- interface properties ------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def embed_dim(self) -> int:
        """Dimension of ``encode_latents`` / ``embed_codes`` vectors."""
        return self.config.codebook_embed_dim

    # ----- tensors in model space ([-1, 1]) ------------------------------------------------------------------------
    def preprocess(self, images: ImageBatch) -> torch.Tensor:
        """Images (see :func:`uvlm.vision.base.to_float_batch`) -> float32 ``(B, 3, R, R)`` in ``[-1, 1]``."""
        x = to_float_batch(images, self.resolution)
        return x.to(self.quant_conv.weight.device) * 2.0 - 1.0

    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` float32 ``(B, 3, R, R)`` in ``[-1, 1]`` -> ``(z_q (B, D, g, g), ids (B, g, g), losses)``."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode_latents(self, zq: torch.Tensor) -> torch.Tensor:
        """``(B, D, g, g)`` quantised latents -> ``(B, 3, R, R)`` in model space (about ``[-1, 1]``, unclamped)."""
        return self.decoder(self.post_quant_conv(zq))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Training pass: ``x`` ``(B, 3, R, R)`` in ``[-1, 1]`` -> ``(reconstruction, ids (B, g, g), losses)``."""
        zq, ids, losses = self.quantise(x)
        return self.decode_latents(zq), ids, losses

    # ----- the uvlm vision interface -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: ImageBatch) -> torch.Tensor:
        """Images -> int64 ``(B, N)`` code ids, raster order."""
        _, ids, _ = self.quantise(self.preprocess(images))
        return ids.flatten(1)

    @torch.no_grad()
    def encode_latents(self, images: ImageBatch) -> torch.Tensor:
        """Images -> float32 ``(B, N, D)`` quantised, L2-normalised latents (``D = codebook_embed_dim``)."""
        return self.embed_codes(self.encode(images))

    def embed_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, N)`` code ids -> float32 ``(B, N, D)`` code vectors (differentiable w.r.t. the codebook)."""
        self._check_ids(ids)
        return self.quantize.lookup(ids.to(self.quant_conv.weight.device))

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """int64 ``(B, N)`` code ids -> float32 ``(B, 3, R, R)`` images in ``[0, 1]``."""
        self._check_ids(ids)
        g = self.config.grid
        zq = self.embed_codes(ids).view(ids.shape[0], g, g, -1).permute(0, 3, 1, 2)
        return ((self.decode_latents(zq) + 1.0) / 2.0).clamp(0.0, 1.0)

    def _check_ids(self, ids: torch.Tensor) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.ndim != 2:
            raise UserError(f"code ids must be an integer tensor (B, {self.num_tokens}), got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
        if ids.shape[1] != self.num_tokens:
            raise UserError(f"code ids have {ids.shape[1]} tokens per image but this tokenizer uses {self.num_tokens}"
                            f" ({self.config.grid}x{self.config.grid}): use ids from the same tokenizer")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise UserError(f"code ids must be in [0, {self.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]")


# ----- loading ----------------------------------------------------------------------------------------------------

def load_vq(path: str | os.PathLike, device: str | torch.device = "cpu") -> VQTokenizer:
    """Load a uvlm VQ artifact folder (``model.safetensors`` + ``config.json`` with ``"kind": "vq"``); eval mode."""
    state, config = load_artifact(path, kind=KIND)
    require(isinstance(config.get("model"), dict), f"{path}/config.json has no 'model' section: retrain the tokenizer")
    model = VQTokenizer(VQConfig.from_dict(config["model"]))
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _read_torch_checkpoint(path: Path) -> Any:
    try:
        # Training checkpoints also pickle their argparse namespace; allow exactly that class, nothing else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many kinds (IndexError, KeyError, ...) on a file that is not one
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} is not a readable torch checkpoint ({first}): pass a LlamaGen VQ .pt file such as "
                        f"vq_ds16_c2i.pt") from None


def load_llamagen(path: str | os.PathLike, config: VQConfig | None = None,
                  device: str | torch.device = "cpu") -> VQTokenizer:
    """Load published LlamaGen VQ weights (``vq_ds16_c2i.pt`` / ``vq_ds16_t2i.pt``) into a :class:`VQTokenizer`.

    The file may hold ``{"ema": state}``, ``{"model": state}``, ``{"state_dict": state}`` (first found wins, in that
    order, as LlamaGen's own loader does) or a bare state dict. It is read with ``torch.load(weights_only=True)``.
    Keys and shapes must match exactly; a checkpoint saved without the usage buffer ``quantize.codebook_used`` (a
    training statistic, not a weight) gets an empty one. ``config`` defaults to :meth:`VQConfig.vq16`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"LlamaGen checkpoint {path} does not exist: download vq_ds16_c2i.pt and pass its path")
    ckpt = _read_torch_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a state dict: pass a LlamaGen VQ checkpoint")
    state = next((ckpt[k] for k in ("ema", "model", "state_dict") if isinstance(ckpt.get(k), dict)), ckpt)
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path} is not a state dict (entries {[str(k) for k in bad[:5]]} are not tensors): pass a "
                        f"LlamaGen VQ checkpoint")
    model = VQTokenizer(config or VQConfig.vq16())
    state = dict(state)
    own = model.state_dict()
    if "quantize.codebook_used" in own and "quantize.codebook_used" not in state:
        state["quantize.codebook_used"] = own["quantize.codebook_used"]
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def published_keys(config: VQConfig | None = None) -> dict[str, list[int]]:
    """Parameter and buffer names -> shapes of the architecture (``vq16`` by default), built on the meta device."""
    with torch.device("meta"):
        model = VQTokenizer(config or VQConfig.vq16())
    return {k: list(v.shape) for k, v in model.state_dict().items()}
