"""Run folders and atomic checkpoints that resume exactly (building the model is :mod:`uvlm.train.build`; its names
are importable from here too).

A run folder describes itself::

    OUT/config.json            the resolved RunConfig (model sizes filled in from the vision sources)
    OUT/model_config.json      the UnifiedConfig
    OUT/vision.json            the vision sources' identities
    OUT/tokenizer/             the tokenizer (save_pretrained), vision tokens included
    OUT/metrics.jsonl          one JSON line per log interval and per evaluation
    OUT/predictions/           VQA answers of each evaluation (JSON lines, re-scorable with ``uvlm score``)
    OUT/tensorboard/           TensorBoard events
    OUT/checkpoints/latest     the name of the newest complete checkpoint
    OUT/checkpoints/step-000100/
        model.safetensors      every weight (no LoRA), or with LoRA:
        trainable.safetensors  the trained weights only (LoRA, new token rows, adapters, head) and
        adapter/               the LLM's LoRA adapter as peft writes it (adapter_model.safetensors + config)
        optimizer.pt scheduler.pt rng.pt (python, numpy and torch RNG states of every process)
        state.json             step, data position, samples/tokens seen, best metrics, model config, file hashes

A checkpoint folder is written under a temporary name and renamed when complete, and ``latest`` is replaced
atomically, so a run killed at any moment leaves the last complete checkpoint intact. Loading checks the file hashes
and the model config: a corrupt checkpoint or one from another model is a one-line :class:`UserError`, and so is
optimizer, scheduler or RNG state that does not load safely (``checkpoint step-N is corrupt or unsafe: ...``).
Leftovers of killed writes (``.step-*.tmp``) are removed by :func:`remove_orphans` once a resume has loaded.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uvlm.errors import UserError, require
from uvlm.io import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from uvlm.model.config import UnifiedConfig
from uvlm.train.build import (LoadedRun, apply_lora, build_model, build_run_tokenizer, load_run,  # noqa: F401
                              real_token_norm, trainable_state)
from uvlm.train.config import RunConfig

CHECKPOINTS = "checkpoints"
LATEST = "latest"
_STEP_RE = re.compile(r"^step-(\d{6,})$")


# ----- RNG ----------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch RNG states, as plain types and tensors (``torch.load``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                       float(gauss)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----- run folder ---------------------------------------------------------------------------------------------------
def write_run_metadata(out: Path, config: RunConfig, tokenizer, sources) -> None:
    """Write ``config.json``, ``model_config.json``, ``vision.json`` and ``tokenizer/`` (atomically each)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", config.to_dict())
    write_json_atomic(out / "model_config.json", config.to_dict()["model"])
    write_json_atomic(out / "vision.json", _jsonable(sources.identities()))
    with atomic_path(out / "tokenizer") as tmp:
        tokenizer.save_pretrained(str(tmp))


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """The resolved :class:`RunConfig` of a run folder."""
    from uvlm.io import found, read_json

    run_dir = Path(run_dir)
    require(run_dir.exists(), f"run {str(run_dir)!r} does not exist: pass the --out folder of 'uvlm train'")
    require(run_dir.is_dir(), f"run {str(run_dir)!r} is {found(run_dir)}, not a run folder: pass the --out folder "
                              f"of 'uvlm train'")
    path = run_dir / "config.json"
    require(path.exists(), f"{str(run_dir)!r} is not a run folder (no config.json): pass the --out folder of "
                           f"'uvlm train'")
    return RunConfig.from_dict(read_json(path, "run config", "restore it or start a new run"))


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``checkpoints/latest`` (else the highest step), or ``None``."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        require(_STEP_RE.match(name) is not None and (root / name).is_dir(),
                f"{pointer} names {name!r}, which is not a checkpoint folder: delete the pointer to use the newest "
                f"checkpoint")
        return root / name
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def find_checkpoint(run_dir: str | os.PathLike, which: str | int | None = None) -> Path:
    """``which``: ``None``/``latest``, a step number, or a checkpoint folder name."""
    run_dir = Path(run_dir)
    if which is None or str(which) == "latest":
        ck = latest_checkpoint(run_dir)
        require(ck is not None, f"run {str(run_dir)!r} has no checkpoint yet: train it first (or wait for the "
                                f"first checkpoint)")
        return ck
    name = str(which).strip()
    if name.isdigit():
        name = checkpoint_name(int(name))
    require(_STEP_RE.match(name) is not None, f"checkpoint {str(which)!r} is not a checkpoint name: use a step number "
                                              f"or a folder name such as step-000100 (see {run_dir / CHECKPOINTS})")
    path = run_dir / CHECKPOINTS / name
    require(path.is_dir(), f"checkpoint {name!r} not found in {str(run_dir)!r}: use one of "
                           f"{', '.join(p.name for p in list_checkpoints(run_dir)) or '(none)'}")
    return path


# ----- save / load --------------------------------------------------------------------------------------------------
def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict[str, Any],
                    rng_states: list[dict[str, Any]], lora: bool, keep: int | None = None) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically and point ``latest`` at it. ``model`` is the unwrapped model;
    ``rng_states`` one entry per process. Returns the folder."""
    root = run_dir / CHECKPOINTS
    final = root / checkpoint_name(step)
    from safetensors.torch import save_file, save_model

    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        if lora:
            save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
            # the LoRA weights in peft's format; not the whole resized embedding and head (hundreds of MB for a
            # pretrained vocabulary): the new vision-token rows are in trainable.safetensors
            model.llm.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False)
        else:
            save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"world_size": len(rng_states), "states": rng_states}, tmp / "rng.pt")
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        state = {**state, "step": step, "lora": lora,
                 "files": {f: sha256_file(tmp / f) for f in files}}
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    write_text_atomic(root / LATEST, final.name + "\n")
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """``state.json`` of a checkpoint; with ``verify`` every file's SHA-256 is checked against it."""
    path = ckpt / "state.json"
    require(path.is_file(), f"{str(ckpt)!r} is not a complete checkpoint (no state.json): resume from another one")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"checkpoint {str(ckpt)!r} is corrupt (state.json is not JSON): resume from an earlier "
                        f"checkpoint") from None
    require(isinstance(state, dict) and isinstance(state.get("files"), dict),
            f"checkpoint {str(ckpt)!r} is corrupt (state.json lacks its file list): resume from an earlier checkpoint")
    if verify:
        for name, digest in state["files"].items():
            f = ckpt / name
            require(f.is_file(), f"checkpoint {str(ckpt)!r} is incomplete ({name} is missing): resume from an earlier "
                                 f"checkpoint")
            require(sha256_file(f) == digest, f"checkpoint {str(ckpt)!r} is corrupt ({name} does not match its "
                                              f"hash): resume from an earlier checkpoint")
    return state


def check_model_config(state: dict[str, Any], model_config: UnifiedConfig, lora: bool, where: Path) -> None:
    """A checkpoint of another model (different model config, or LoRA on/off) is a :class:`UserError`."""
    saved = state.get("model_config")
    now = json.loads(json.dumps(model_config.to_dict()))
    if saved != now:
        diff = sorted(k for k in set(saved or {}) | set(now) if (saved or {}).get(k) != now.get(k))
        raise UserError(f"checkpoint {str(where)!r} belongs to another model (model config differs in "
                        f"{', '.join(diff) or 'everything'}): resume with the run's own config or start a new run")
    require(bool(state.get("lora")) == lora,
            f"checkpoint {str(where)!r} was saved with LoRA {'on' if state.get('lora') else 'off'} but this run has it "
            f"{'on' if lora else 'off'}: use the same lora.enabled")


def load_weights(ckpt: Path, model, lora: bool) -> None:
    """Load the checkpoint's weights into the (unwrapped) model, strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    try:
        if lora:
            tensors = load_file(str(ckpt / "trainable.safetensors"))
            params = dict(model.named_parameters())
            from uvlm.train.build import stateful_names

            want = {n for n, p in params.items() if p.requires_grad} | set(stateful_names(model))
            require(set(tensors) == want, f"checkpoint {str(ckpt)!r} has other trainable weights than this model "
                                          f"({len(set(tensors) ^ want)} names differ): use the run's own config")
            with torch.no_grad():
                for n, t in tensors.items():
                    require(params[n].shape == t.shape, f"checkpoint weight {n} has shape {tuple(t.shape)}, the "
                                                        f"model {tuple(params[n].shape)}: use the run's own config")
                    params[n].copy_(t)
        else:
            missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=False)
            require(not missing and not unexpected,
                    f"checkpoint {str(ckpt)!r} does not fit this model (missing {len(missing)}, unexpected "
                    f"{len(unexpected)} weights): use the run's own config")
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read the weights of checkpoint {str(ckpt)!r} ({str(e).splitlines()[0]}): "
                        f"resume from an earlier checkpoint") from None
    except RuntimeError as e:  # shape mismatch
        raise UserError(f"checkpoint {str(ckpt)!r} does not fit this model ({str(e).splitlines()[0][:200]}): use "
                        f"the run's own config") from None


def earlier_checkpoint_hint(ckpt: Path) -> str:
    """What to do when ``ckpt`` cannot be used: resume from the newest earlier checkpoint, if the run has one."""
    earlier = [p for p in list_checkpoints(ckpt.parent.parent) if p.name < ckpt.name]
    if earlier:
        return (f"resume from an earlier checkpoint with 'uvlm train --resume {ckpt.parent.parent} --checkpoint "
                f"{earlier[-1].name}'")
    return "the run has no earlier checkpoint: start it again in a new folder"


def _check_rng_states(rng: Any) -> list[dict[str, Any]]:
    """The per-process RNG states of ``rng.pt``, each tried on a fresh generator (the global ones are untouched)."""
    require(isinstance(rng, dict) and isinstance(rng.get("states"), list) and rng["states"],
            "rng.pt does not hold a list of RNG states")
    for state in rng["states"]:
        require(isinstance(state, dict) and {"python", "numpy", "torch"} <= set(state),
                "an RNG state lacks its python, numpy or torch part")
        random.Random().setstate(_tuples(state["python"]))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        require(isinstance(keys, torch.Tensor), "the numpy RNG state is not a tensor")
        np.random.RandomState().set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        require(isinstance(state["torch"], torch.Tensor), "the torch RNG state is not a tensor")
        torch.Generator().set_state(state["torch"])
    return list(rng["states"])


def load_training_state(ckpt: Path, optimizer, scheduler) -> list[dict[str, Any]]:
    """Restore the optimizer and scheduler; return the saved per-process RNG states.

    The files are loaded with ``weights_only=True`` (no code in them runs). A file that does not load, holds anything
    but tensors and plain values, or has the wrong structure is a :class:`UserError`
    ``checkpoint step-N is corrupt or unsafe: ...``."""
    import pickle

    def load(name: str):
        return torch.load(ckpt / name, map_location="cpu", weights_only=True)

    name = "optimizer.pt"
    try:
        optimizer.load_state_dict(load(name))
        name = "scheduler.pt"
        scheduler.load_state_dict(load(name))
        name = "rng.pt"
        return _check_rng_states(load(name))
    except pickle.UnpicklingError:
        reason = "it holds objects other than tensors and plain values, which are not loaded for safety"
    except UserError as e:
        reason = str(e)
    except Exception as e:  # a damaged file fails in many ways (zip, pickle, structure, shapes)
        first = (str(e).splitlines() or [""])[0][:160]
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
    raise UserError(f"checkpoint {ckpt.name} is corrupt or unsafe: {name} cannot be restored ({reason}) in run "
                    f"{str(ckpt.parent.parent)!r}: {earlier_checkpoint_hint(ckpt)}")


def remove_orphans(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed checkpoint writes leave in ``checkpoints/``: ``.step-*.tmp`` folders, ``.latest.*.tmp``
    files and ``.step-*.old-*`` folders of an interrupted replacement. Returns what was removed."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    removed = []
    for p in root.iterdir():
        if re.match(r"^\.(step-\d{6,}|latest)\..+(\.tmp|\.old-\d+)$", p.name) or re.match(
                r"^\.step-\d{6,}\.old-\d+$", p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


__all__ = ["build_run_tokenizer", "build_model", "apply_lora", "trainable_state", "rng_state", "set_rng_state",
           "write_run_metadata", "read_run_config", "checkpoint_name", "list_checkpoints", "latest_checkpoint",
           "find_checkpoint", "save_checkpoint", "read_state", "check_model_config", "load_weights",
           "load_training_state", "earlier_checkpoint_hint", "remove_orphans", "LoadedRun", "load_run",
           "real_token_norm"]
