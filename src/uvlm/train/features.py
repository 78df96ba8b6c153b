"""Frozen-encoder outputs, computed once per image and cached on disk.

The vision encoders are frozen during training, so their outputs for a dataset never change. An image depends only
on what its dataset's :meth:`~uvlm.data.datasets.Dataset.image_key` names and its index (for SmartWatch: seed, split
name, resolution), not on the split's counts or bias, so the cache is keyed by the encoder's identity and the image
key, and a biased and an unbiased training split with the same seed share one cache (they show the same images).
Images come from :meth:`~uvlm.data.datasets.Dataset.image`.

Outputs are stored in chunks of ``chunk`` images (default :data:`CHUNK`) (``chunk-00000.npy``, memory-mapped when read), computed on
demand, written atomically and guarded by a file lock, so parallel runs that need the same chunk compute it once.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from uvlm.data.datasets import Dataset
from uvlm.io import atomic_path
from uvlm.vision.artifacts import cache_dir, config_hash

CHUNK = 2048

EncodeFn = Callable[[list], torch.Tensor]


class FeatureCache:
    """Per-image encoder outputs for one encoder and the images of one dataset split (at its resolution).

    ``encode`` maps a list of PIL images to a tensor ``(B, ...)``; it is called on batches of ``batch_size``.
    ``identity`` is a JSON-able description of the encoder (its artifact config hash, layer, ...): change it and
    the cache is recomputed. ``dtype``: storage dtype (float16 halves the disk of float features; ids use int32).
    """

    def __init__(self, encode: EncodeFn, identity: dict[str, Any], dataset: Dataset, dtype: str = "float16",
                 batch_size: int = 256, root: str | os.PathLike | None = None, chunk: int = CHUNK):
        self.encode = encode
        self.dataset = dataset
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        self.chunk = int(chunk)
        self.key = {"encoder": identity, **dataset.image_key(), "dtype": self.dtype.name, "chunk": self.chunk}
        self.dir = Path(root or cache_dir() / "features") / config_hash(self.key)
        self._chunks: dict[int, np.ndarray] = {}

    def _chunk_path(self, c: int) -> Path:
        return self.dir / f"chunk-{c:05d}.npy"

    def _images(self, start: int, stop: int) -> list:
        return [self.dataset.image(i) for i in range(start, stop)]

    def _compute_chunk(self, c: int) -> None:
        outs = []
        with torch.no_grad():
            for b in range(c * self.chunk, (c + 1) * self.chunk, self.batch_size):
                outs.append(self.encode(self._images(b, min(b + self.batch_size, (c + 1) * self.chunk))).cpu().numpy())
        arr = np.concatenate(outs).astype(self.dtype)
        with atomic_path(self._chunk_path(c), suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)

    def ensure(self, n_images: int, progress: Callable[[int, int], None] | None = None) -> None:
        """Make sure images ``0..n_images-1`` are cached (computing missing chunks under a lock)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(self.key, indent=2, sort_keys=True))
        n_chunks = (n_images + self.chunk - 1) // self.chunk
        for c in range(n_chunks):
            if self._chunk_path(c).exists():
                continue
            with open(self.dir / f"chunk-{c:05d}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if not self._chunk_path(c).exists():
                        self._compute_chunk(c)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            if progress is not None:
                progress(c + 1, n_chunks)

    def _chunk(self, c: int) -> np.ndarray:
        got = self._chunks.get(c)
        if got is None:
            path = self._chunk_path(c)
            if not path.exists():
                self.ensure((c + 1) * self.chunk)
            got = np.load(path, mmap_mode="r")
            self._chunks[c] = got
        return got

    def get(self, image_indices: Sequence[int]) -> torch.Tensor:
        """Outputs for these images, stacked ``(len(indices), ...)``, as float32 (features) or int64 (ids)."""
        rows = [self._chunk(i // self.chunk)[i % self.chunk] for i in image_indices]
        t = torch.from_numpy(np.stack(rows))
        return t.long() if self.dtype.kind in "iu" else t.float()
