"""The one interface every vision model in uvlm follows.

- ``encode(images) -> Tensor``: images are a list of PIL images, or a uint8 tensor ``(B, H, W, 3)``, or a float tensor
  ``(B, 3, H, W)`` in ``[0, 1]``. The model owns its preprocessing (resize, normalisation), so callers cannot get it
  wrong. Output: ``(B, N, D)`` float32 features (SigLIP, reader features) or ``(B, N)`` int64 code ids (VQ).
- ``decode(tokens) -> Tensor``: the inverse where defined, ``(B, 3, H, W)`` float32 in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from uvlm.errors import UserError

ImageBatch = Sequence[Image.Image] | torch.Tensor


def to_float_batch(images: ImageBatch, resolution: int, resize: bool = False) -> torch.Tensor:
    """Convert a batch of images to float32 ``(B, 3, R, R)`` in ``[0, 1]``.

    Images of the wrong size are an error unless ``resize`` is set (then they are resized with bicubic filtering);
    images that are not RGB (for example RGBA or greyscale PIL images) are an error that says how to convert them.
    """
    if isinstance(images, torch.Tensor):
        x = images
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise UserError(f"uint8 image tensors must be (B, H, W, 3), got {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2).float() / 255.0
        elif x.ndim != 4 or x.shape[1] != 3:
            raise UserError(f"float image tensors must be (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        x = x.float()
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            if not resize:
                raise UserError(f"images are {x.shape[-2]}x{x.shape[-1]} but this model takes {resolution}x{resolution}:"
                                f" render at --resolution {resolution} or resize first")
            x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bicubic",
                                                align_corners=False).clamp(0, 1)
        return x
    arrays = []
    for k, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise UserError(f"image {k} is a {type(im).__name__}, not a PIL image or tensor")
        if im.mode != "RGB":
            raise UserError(f"image {k} has mode {im.mode}; convert it with image.convert('RGB') first")
        if im.size != (resolution, resolution):
            if not resize:
                raise UserError(f"image {k} is {im.size[0]}x{im.size[1]} but this model takes "
                                f"{resolution}x{resolution}: render at --resolution {resolution} or resize first")
            im = im.resize((resolution, resolution), Image.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.uint8))
    if not arrays:
        return torch.zeros(0, 3, resolution, resolution)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` float in ``[0, 1]`` -> PIL images."""
    arr = (images.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
