"""Build a :class:`~uvlm.vision.sources.VisionSource` from a kind and a source name.

- ``vision_source("siglip", "tiny")``: the tiny SigLIP tower trained here (cached; trained on first use).
- ``vision_source("siglip", "/path/to/siglip-base-patch16-224")``: a local Hugging Face SigLIP folder.
- ``vision_source("vq", "tiny")``: the tiny VQ tokenizer trained here (cached; trained on first use).
- ``vision_source("vq", "/path/to/vq_ds16_t2i.pt")``: LlamaGen's published VQ-16 weights; or a uvlm ``vq`` artifact
  folder.

Continuous (SigLIP) outputs are turned back into pixels by a pixel decoder trained here on the frozen tower's
features (cached per tower; trained on first ``decode``).

Any other kind is the source kind of a generation target, which builds its own source
(:meth:`uvlm.model.targets.Target.load_source`).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from uvlm.errors import UserError

KINDS = ("siglip", "vq")


def file_identity(path: Path) -> dict[str, Any]:
    """Identity of weights on disk: the artifact's config hash if it is a uvlm cache folder, else a content digest."""
    files = sorted(p for p in (path.iterdir() if path.is_dir() else [path]) if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}".encode())
        if f.suffix in (".json", ".safetensors", ".pt", ".bin", ".pth"):
            with open(f, "rb") as fh:  # head and tail are enough to tell checkpoints apart cheaply
                h.update(fh.read(1 << 20))
                if st.st_size > 1 << 21:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
    return {"path_name": path.name, "digest": h.hexdigest()[:16]}


class ContinuousSource:
    """A source of float tokens ``(B, N, D)``, cached as float16 and used as they are, input and target alike."""

    cache_dtype = "float16"

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.float()

    def to_targets(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.float()

    @property
    def codebook(self) -> None:
        return None


class SiglipSource(ContinuousSource):
    """SigLIP patch tokens as understanding input and as generation target (the paper's SigLIP spaces)."""

    kind = "siglip"

    def __init__(self, tower, weights: Path):
        self.tower = tower.eval().requires_grad_(False)
        self.weights = weights
        self.resolution = tower.resolution
        self.num_tokens = tower.num_tokens
        self.input_dim = self.target_dim = tower.dim
        self._decoder = None

    def identity(self) -> dict[str, Any]:
        return {"kind": "siglip", "weights": file_identity(self.weights), **self.tower.tower_config()}

    def encode_cached(self, images: list) -> torch.Tensor:
        return self.tower.encode(images)

    def decoder(self):
        """The pixel decoder for this tower (trained on first use, then cached)."""
        if self._decoder is None:
            from uvlm.vision.pixel_decoder import load_pixel_decoder, train_pixel_decoder

            self._decoder = load_pixel_decoder(train_pixel_decoder(_IdentifiedTower(self))).eval()
        return self._decoder

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.decoder().decode(tokens.float())


class _IdentifiedTower:
    """The tower as the pixel-decoder trainer sees it: ``encode``, ``resolution`` and an identity."""

    def __init__(self, source: SiglipSource):
        self.source = source
        self.resolution = source.resolution

    def encode(self, images) -> torch.Tensor:
        return self.source.tower.encode(images)

    def config_dict(self) -> dict[str, Any]:
        return self.source.identity()


class VQSource:
    """VQ code ids as generation targets, their L2-normalised codebook vectors as understanding input."""

    kind = "vq"
    cache_dtype = "int32"

    def __init__(self, tokenizer, weights: Path):
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.weights = weights
        self.resolution = tokenizer.resolution
        self.num_tokens = tokenizer.num_tokens
        self.input_dim = tokenizer.embed_dim
        self.target_dim = tokenizer.codebook_size

    def identity(self) -> dict[str, Any]:
        return {"kind": "vq", "weights": file_identity(self.weights), "config": self.tokenizer.config.to_dict()}

    def encode_cached(self, images: list) -> torch.Tensor:
        return self.tokenizer.encode(images)

    def to_inputs(self, cached: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.tokenizer.embed_codes(cached.long())

    def to_targets(self, cached: torch.Tensor) -> torch.Tensor:
        return cached.long()

    @property
    def codebook(self) -> torch.Tensor:
        with torch.no_grad():
            return self.tokenizer.quantize.codebook().detach().clone()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.tokenizer.decode(tokens.long())


@lru_cache(maxsize=8)
def vision_source(kind: str, source: str = "tiny"):
    """A frozen vision source by kind (``siglip``, ``vq``, or a generation target's own kind) and source (``tiny`` or
    a local path)."""
    if kind not in KINDS:
        from uvlm.model.targets import TARGETS

        owners = [t for t in TARGETS.values() if t.source_kind == kind]
        if owners:
            return owners[0].load_source(source)
        kinds = [*KINDS, *sorted({t.source_kind for t in TARGETS.values() if t.source_kind not in (None, *KINDS)})]
        raise UserError(f"unknown vision encoder {kind!r}: use one of {', '.join(kinds)}")
    if kind == "siglip":
        from uvlm.vision.siglip import load_siglip
        from uvlm.vision.siglip_train import tiny_siglip_path

        path = tiny_siglip_path() if source == "tiny" else Path(source)
        return SiglipSource(load_siglip(path), path)
    from uvlm.vision.vq import load_llamagen, load_vq
    from uvlm.vision.vq_train import train_vq

    if source == "tiny":
        path = train_vq()
        return VQSource(load_vq(path), path)
    path = Path(source)
    if path.is_dir():
        return VQSource(load_vq(path), path)
    if not path.is_file():
        raise UserError(f"VQ checkpoint {path} does not exist: pass LlamaGen's vq_ds16_*.pt file or a uvlm vq folder")
    return VQSource(load_llamagen(path), path)
