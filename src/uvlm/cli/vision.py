"""``uvlm vision``: train the tiny vision artifacts, inspect an artifact folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from uvlm.cli._common import add_group
from uvlm.errors import UserError

ARTIFACTS = ("siglip", "vq", "reader", "pixel-decoder")
#: Artifacts trained only when named (the pixel latent of the ``diffusion`` target).
ON_REQUEST = ("kl-vae",)


def _train_one(what: str, preset: str) -> Path:
    if preset != "tiny":
        raise UserError(f"unknown vision preset {preset!r}: only 'tiny' is trained here (full-scale models are "
                        f"loaded from local checkpoints)")
    if what == "siglip":
        from uvlm.vision.siglip_train import tiny_siglip_path

        return tiny_siglip_path()
    if what == "vq":
        from uvlm.vision.vq_train import train_vq

        return train_vq()
    if what == "reader":
        from uvlm.vision.reader import train_reader

        return train_reader()
    if what == "kl-vae":
        from uvlm.vision.kl_vae import train_kl_vae

        return train_kl_vae()
    from uvlm.vision.pixel_decoder import train_pixel_decoder
    from uvlm.vision.presets import _IdentifiedTower, vision_source

    return train_pixel_decoder(_IdentifiedTower(vision_source("siglip", "tiny")))


def cmd_train(args: argparse.Namespace) -> int:
    whats = ARTIFACTS if args.what == "all" else (args.what,)
    for what in whats:
        t0 = time.perf_counter()
        path = _train_one(what, args.preset)
        print(f"{what}: {path} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from uvlm.vision.artifacts import CONFIG, WEIGHTS, load_artifact

    folder = Path(args.path)
    state, config = load_artifact(folder)
    n_params = sum(v.numel() for v in state.values())
    info_file = folder / "info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    if args.json:
        print(json.dumps({"path": str(folder), "kind": config.get("kind"), "parameters": n_params,
                          "config": config, "info": info}, indent=2, sort_keys=True))
        return 0
    print(f"{folder}: {config.get('kind')} artifact, {n_params:,} parameters in {WEIGHTS} (+ {CONFIG})")
    for key, value in sorted(info.items()):
        if isinstance(value, (dict, list)) and len(json.dumps(value)) > 200:
            continue
        print(f"  {key}: {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    group = add_group(sub, "vision", "Train the tiny vision artifacts and inspect artifact folders.")
    p = group.add_parser("train", help="Train (or reuse from the cache) the tiny vision artifacts.",
                         description="Train the tiny vision artifacts on SmartWatch images, or reuse them from the "
                                     "cache ($UVLM_CACHE, default ~/.cache/uvlm). Prints each artifact's folder.")
    p.add_argument("--preset", default="tiny", help="vision preset (only 'tiny' is trained here)")
    p.add_argument("--what", default="all", choices=ARTIFACTS + ON_REQUEST + ("all",),
                   help=f"which artifact (default: all, which is {', '.join(ARTIFACTS)})")
    p.set_defaults(func=cmd_train)
    p = group.add_parser("info", help="Describe an artifact folder (kind, parameters, training figures).")
    p.add_argument("path", help="artifact folder (model.safetensors + config.json)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
