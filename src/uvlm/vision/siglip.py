"""The SigLIP vision tower: patch tokens of one hidden layer of a ``transformers`` ``SiglipVisionModel``.

The paper takes ``google/siglip-base-patch16-224`` and feeds the language model the *second-to-last* layer's patch
tokens, all 196 of them (SigLIP has no CLS token). :class:`SiglipTower` does the same for any SigLIP checkpoint:

- a Hugging Face folder on local disk (a ``SiglipModel`` or a ``SiglipVisionModel`` checkpoint, with an optional
  ``preprocessor_config.json`` for the normalisation and size); nothing is ever downloaded;
- a uvlm artifact folder (``config.json`` with ``"kind": "siglip"``, written by :mod:`uvlm.vision.siglip_train`),
  such as the tiny 64 px preset trained on this machine.

Preprocessing belongs to the tower: images must already have the model's size (a wrong size or mode is a
:class:`~uvlm.errors.UserError`, see :func:`uvlm.vision.base.to_float_batch`); pixel values in ``[0, 1]`` are
normalised with the model's mean and std (SigLIP: 0.5 and 0.5, i.e. to ``[-1, 1]``).

Layer numbering follows ``output_hidden_states``: ``hidden_states[0]`` is the patch embedding (with position
embedding), ``hidden_states[k]`` the output of encoder layer ``k``; ``-1`` is the last encoder layer *before* the
final ``post_layernorm``, ``-2`` the second-to-last layer (the paper's choice).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import safetensors
import torch
from torch import nn

from uvlm.errors import UserError, require
from uvlm.vision.artifacts import CONFIG, WEIGHTS, check_state_dict, load_artifact
from uvlm.vision.base import ImageBatch, to_float_batch

KIND = "siglip"
SIGLIP_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SIGLIP_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class SiglipTowerConfig:
    """How to build a :class:`SiglipTower`."""

    path: str | None = None
    """A local folder: a Hugging Face SigLIP checkpoint or a uvlm ``siglip`` artifact. ``None``: the tiny 64 px
    preset trained on SmartWatch by :mod:`uvlm.vision.siglip_train` (trained once, then reused from the cache)."""
    feature_layer: int = -2
    """Which ``output_hidden_states`` entry ``encode`` returns: ``-2`` second-to-last layer (paper), ``-1`` the last
    layer before ``post_layernorm``, ``0`` the patch embeddings, ``k`` the output of layer ``k``."""
    resolution: int | None = None
    """Expected image side in pixels; ``None`` takes the checkpoint's ``image_size``. A value that differs from the
    checkpoint is an error (the tower never resizes)."""
    image_mean: tuple[float, float, float] | None = None
    """Per-channel mean for normalisation; ``None``: ``preprocessor_config.json`` if present, else SigLIP's 0.5."""
    image_std: tuple[float, float, float] | None = None
    """Per-channel std for normalisation; ``None``: ``preprocessor_config.json`` if present, else SigLIP's 0.5."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SiglipTower(nn.Module):
    """A frozen-by-default SigLIP image encoder returning the patch tokens of one layer.

    Attributes:
        model: the wrapped ``transformers.SiglipVisionModel``.
        feature_layer: the ``hidden_states`` index returned by :meth:`encode`.
    """

    def __init__(self, model: "SiglipVisionModel", feature_layer: int = -2,  # noqa: F821
                 image_mean: Sequence[float] = SIGLIP_MEAN, image_std: Sequence[float] = SIGLIP_STD):
        super().__init__()
        self.model = model
        n_layers = int(model.config.num_hidden_layers)
        require(isinstance(feature_layer, int) and -(n_layers + 1) <= feature_layer <= n_layers,
                f"feature_layer {feature_layer!r} is out of range for a {n_layers}-layer SigLIP: use -2 (second-to-last"
                f" layer), -1 (last) or 0..{n_layers}")
        require(len(image_mean) == 3 and len(image_std) == 3 and all(float(s) > 0 for s in image_std),
                f"image_mean and image_std must have 3 entries (std > 0), got {list(image_mean)} and {list(image_std)}")
        self.feature_layer = feature_layer
        self.register_buffer("mean", torch.tensor([float(m) for m in image_mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in image_std]).view(1, 3, 1, 1), persistent=False)

    # ----- shape facts ------------------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        """Image side in pixels the tower takes."""
        size = self.model.config.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def patch_size(self) -> int:
        p = self.model.config.patch_size
        return int(p if isinstance(p, int) else p[0])

    @property
    def num_tokens(self) -> int:
        """N: patch tokens per image, ``(resolution / patch_size) ** 2`` (196 for SigLIP-B/16 at 224 px)."""
        return (self.resolution // self.patch_size) ** 2

    @property
    def dim(self) -> int:
        """D: feature width (the model's ``hidden_size``; 768 for SigLIP-B)."""
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    # ----- encoding ---------------------------------------------------------------------------------------------
    def preprocess(self, images: ImageBatch) -> torch.Tensor:
        """Images -> normalised pixel values, float32 ``(B, 3, R, R)``; a wrong size or mode raises ``UserError``."""
        x = to_float_batch(images, self.resolution)
        return (x.to(self.mean.device) - self.mean) / self.std

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``(B, 3, R, R)`` -> patch tokens of ``feature_layer``, float32 ``(B, N, D)``.

        Keeps the autograd graph (for training); :meth:`encode` is the inference entry point.
        """
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[self.feature_layer]

    forward = features

    @torch.no_grad()
    def encode(self, images: ImageBatch) -> torch.Tensor:
        """Images (PIL list, uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in ``[0, 1]``) -> float32 ``(B, N, D)``.

        Runs in eval mode without gradients; the module's train/eval mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            return self.features(self.preprocess(images)).float()
        finally:
            self.train(was_training)

    # ----- loading ----------------------------------------------------------------------------------------------
    def tower_config(self) -> dict[str, Any]:
        """The tower's own settings (layer, normalisation), as stored in a uvlm artifact."""
        return {"feature_layer": self.feature_layer, "image_mean": self.mean.flatten().tolist(),
                "image_std": self.std.flatten().tolist()}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, feature_layer: int = -2,
                        image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                        resolution: int | None = None) -> "SiglipTower":
        """Load a local folder: a Hugging Face SigLIP checkpoint, or a uvlm ``siglip`` artifact.

        A path that is neither raises a one-line :class:`UserError`. Never downloads (``local_files_only=True``).
        """
        folder = Path(path)
        if not folder.is_dir():
            raise UserError(f"SigLIP checkpoint {folder} does not exist or is not a folder: pass a local folder holding "
                            f"config.json and model.safetensors (downloads are disabled)")
        cfg = _read_json(folder / CONFIG, folder)
        if cfg.get("kind") == KIND:
            tower = _from_artifact(folder, feature_layer, image_mean, image_std)
        else:
            tower = _from_hf_folder(folder, cfg, feature_layer, image_mean, image_std)
        if resolution is not None:
            require(resolution == tower.resolution,
                    f"resolution {resolution} does not match the checkpoint's image_size {tower.resolution} in {folder}:"
                    f" use --resolution {tower.resolution}")
        return tower

    @classmethod
    def from_config(cls, config: SiglipTowerConfig) -> "SiglipTower":
        """Build from a :class:`SiglipTowerConfig`; ``path=None`` gives the tiny preset (trained once if not cached)."""
        if config.path is None:
            from uvlm.vision.siglip_train import tiny_siglip_path

            path: str | Path = tiny_siglip_path()
        else:
            path = config.path
        return cls.from_pretrained(path, config.feature_layer, config.image_mean, config.image_std, config.resolution)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the loading report (a SiglipModel checkpoint's text weights are expected to be unused)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _read_json(file: Path, folder: Path) -> dict[str, Any]:
    if not file.is_file():
        raise UserError(f"{folder} is not a SigLIP checkpoint: config.json is missing (pass the folder that holds "
                        f"config.json and the weights)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is not valid JSON ({e}): the checkpoint is corrupt, copy it again") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} does not hold a JSON object: the checkpoint is corrupt, copy it again")
    return data


def _preprocessor_stats(folder: Path) -> tuple[list[float] | None, list[float] | None]:
    pp = folder / "preprocessor_config.json"
    if not pp.is_file():
        return None, None
    data = _read_json(pp, folder)
    return data.get("image_mean"), data.get("image_std")


def _from_hf_folder(folder: Path, cfg: dict[str, Any], feature_layer: int, image_mean: Sequence[float] | None,
                    image_std: Sequence[float] | None) -> SiglipTower:
    from transformers import SiglipVisionModel

    model_type = cfg.get("model_type")
    if model_type not in ("siglip", "siglip_vision_model"):
        raise UserError(f"{folder} holds a {model_type!r} model, not a SigLIP one: pass a SigLIP checkpoint folder "
                        f"(model_type 'siglip' or 'siglip_vision_model')")
    if not any((folder / w).is_file() for w in _HF_WEIGHTS):
        raise UserError(f"{folder} is not a SigLIP checkpoint: no weights file ({', '.join(_HF_WEIGHTS[::2])})")
    try:
        with _quiet_transformers():
            model, info = SiglipVisionModel.from_pretrained(str(folder), local_files_only=True,
                                                            output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, safetensors.SafetensorError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load SigLIP checkpoint {folder} ({first}): check that the folder is a complete "
                        f"SigLIP checkpoint") from None
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise UserError(f"SigLIP checkpoint {folder} lacks vision weights ({', '.join(missing[:4])}"
                        f"{' ...' if len(missing) > 4 else ''}): pass a complete SigLIP checkpoint")
    pm, ps = _preprocessor_stats(folder)
    mean = image_mean if image_mean is not None else (pm or SIGLIP_MEAN)
    std = image_std if image_std is not None else (ps or SIGLIP_STD)
    return SiglipTower(model.eval(), feature_layer, mean, std)


def _from_artifact(folder: Path, feature_layer: int, image_mean: Sequence[float] | None,
                   image_std: Sequence[float] | None) -> SiglipTower:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    state, cfg = load_artifact(folder, KIND)
    require(isinstance(cfg.get("vision_config"), dict),
            f"{folder / CONFIG} has no 'vision_config': the artifact is corrupt, retrain it")
    model = SiglipVisionModel(SiglipVisionConfig.from_dict(cfg["vision_config"]))
    check_state_dict(model, state, str(folder / WEIGHTS))
    model.load_state_dict(state)
    tower_cfg = cfg.get("tower", {})
    mean = image_mean if image_mean is not None else tower_cfg.get("image_mean", SIGLIP_MEAN)
    std = image_std if image_std is not None else tower_cfg.get("image_std", SIGLIP_STD)
    return SiglipTower(model.eval(), feature_layer, mean, std)


def load_siglip(path: str | os.PathLike, feature_layer: int = -2) -> SiglipTower:
    """Load a SigLIP tower from a local folder (a uvlm ``siglip`` artifact or a Hugging Face checkpoint)."""
    return SiglipTower.from_pretrained(path, feature_layer=feature_layer)
