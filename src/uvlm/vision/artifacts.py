"""Trained vision artifacts: a folder with ``model.safetensors`` and ``config.json``, cached by config hash.

The cache folder is ``$UVLM_CACHE`` if set, else ``~/.cache/uvlm``. An artifact trained once for a config is reused by
every run that asks for the same config: ``cached(kind, config)`` returns its folder or ``None``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from uvlm.errors import UserError
from uvlm.io import atomic_path

WEIGHTS = "model.safetensors"
CONFIG = "config.json"

#: The ``kind`` of every artifact uvlm writes (``config.json``'s ``"kind"``).
ARTIFACT_KINDS: tuple[str, ...] = ("siglip", "vq", "reader", "pixel-decoder", "kl-vae")


#: Measured training minutes of the tiny artifacts on one idle core of the development machines (docs/results.md).
EXPECTED_MINUTES: dict[str, int] = {"siglip": 18, "vq": 13, "pixel-decoder": 8, "reader": 9}


def announce_training(kind: str) -> None:
    """Say, before an artifact is trained on first use, that it is, how long it takes and how to do it ahead of time
    (a command that would otherwise be quick must not turn slow silently)."""
    import logging

    minutes = EXPECTED_MINUTES.get(kind)
    cost = f"about {minutes} min on one idle core, longer on a busy machine" if minutes else "this takes minutes"
    logging.getLogger(__name__).warning(
        f"{kind}: not in the cache ({cache_dir()}), training it now ({cost}); later commands reuse it, and "
        f"'uvlm vision train --what {kind}' trains it ahead of time")


def cache_dir() -> Path:
    return Path(os.environ.get("UVLM_CACHE") or Path.home() / ".cache" / "uvlm")


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able config (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def artifact_dir(kind: str, config: dict[str, Any]) -> Path:
    return cache_dir() / kind / config_hash(config)


def cached(kind: str, config: dict[str, Any]) -> Path | None:
    d = artifact_dir(kind, config)
    return d if (d / WEIGHTS).is_file() and (d / CONFIG).is_file() else None


def save_artifact(folder: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                  info: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ ``info.json``: metrics, minutes) into ``folder`` atomically."""
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if info is not None:
            (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder


def load_artifact(folder: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact folder; a path that is not one is a :class:`UserError` that says what is missing."""
    from uvlm.io import found

    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder} is not a uvlm vision checkpoint folder (no such directory): "
                        f"train one with 'uvlm vision train' or pass the folder it printed")
    if not folder.is_dir():
        raise UserError(f"{folder} is {found(folder)}, not a uvlm vision checkpoint folder: pass the folder that "
                        f"holds {WEIGHTS} and {CONFIG}")
    for name in (WEIGHTS, CONFIG):
        if not (folder / name).is_file():
            raise UserError(f"{folder} is not a uvlm vision checkpoint: {name} is missing")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{folder / CONFIG} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}): "
                        f"the checkpoint is corrupt, retrain it") from None
    except RecursionError:
        raise UserError(f"{folder / CONFIG} is nested too deeply to be an artifact config: the checkpoint is "
                        f"corrupt, retrain it") from None
    if not isinstance(config, dict):
        raise UserError(f"{folder / CONFIG} is a JSON {type(config).__name__}, not an object: the checkpoint is "
                        f"corrupt, retrain it")
    if config.get("kind") not in ARTIFACT_KINDS:
        raise UserError(f"{folder} holds an unknown artifact kind {config.get('kind')!r}: uvlm writes "
                        f"{', '.join(ARTIFACT_KINDS)}; retrain it with 'uvlm vision train'")
    if kind is not None and config.get("kind") != kind:
        raise UserError(f"{folder} holds a {config.get('kind')!r} model, not a {kind!r} model")
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{folder / WEIGHTS} cannot be read ({str(e).splitlines()[0]}): the checkpoint is corrupt or "
                        f"truncated, retrain it") from None
    return state, config


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict key and shape check with a one-line error listing what is missing, unexpected or mis-shaped."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    problems = []
    if missing:
        problems.append(f"missing keys: {show(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {show(unexpected)}")
    if shapes:
        problems.append("shape mismatch: " + show([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]))
    if problems:
        raise UserError(f"state dict from {source} does not fit {type(module).__name__}: " + "; ".join(problems))
