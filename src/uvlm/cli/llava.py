"""``uvlm llava``: the LLaVA-1.5 extension (the paper's section 4.3, Table 2).

    uvlm llava train --stage 1 --base llava-1.5-7b-hf --target clip --understanding blip_laion_cc_sbu_558k.json \\
        --images llava-pretrain --generation sharegpt4v_pt.json --generation-images sharegpt4v --out runs/llava-s1
    uvlm llava train --stage 2 --init runs/llava-s1 --understanding llava_v1_5_mix665k.json --images data \\
        --generation sharegpt4v_pt.json --generation-images sharegpt4v --out runs/llava-s2
    uvlm llava ask runs/llava-s2 photo.jpg "What is in the image?"
    uvlm llava draw runs/llava-s2 "A red double-decker bus on a street." out.safetensors
    uvlm llava assemble --llm vicuna-7b-v1.5 --vision clip-vit-large-patch14-336 llava-fresh   # fresh projector
    uvlm llava tiny-checkpoint tiny-llava          # a tiny random LLaVA in the real format, to try the commands

See docs/llava.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from uvlm.cli._common import add_group, bounded_float, bounded_int, count_arg, seed_arg
from uvlm.errors import require
from uvlm.train.config import MAX_BATCH, MAX_STEPS


def _set(d: dict, key: str, value: Any) -> None:
    """``d[key] = value`` unless the flag was not given (``None``)."""
    if value is not None:
        d[key] = value


def _abs(path: str | None) -> str | None:
    """A path flag as an absolute path (run folders record where their data and base came from)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def stage_config_from_args(args: argparse.Namespace):
    from uvlm.io import read_json
    from uvlm.train.llava import LlavaStageConfig, stage_optim

    d: dict[str, Any] = {}
    if args.config:
        d = read_json(args.config, "llava stage config", "fix the JSON file")
        require(isinstance(d, dict), f"{args.config} must hold a JSON object (a llava stage config)")
    _set(d, "stage", args.stage)
    require("stage" in d, "pass --stage 1 or --stage 2")
    if args.base is not None or args.target is not None or args.vq is not None:
        ext = d.get("extension") or {}
        _set(ext, "base", _abs(args.base))
        if args.target is not None:
            ext["target"] = None if args.target == "none" else args.target
        _set(ext, "vq_source", _abs(args.vq))
        d["extension"] = ext
    _set(d, "init", _abs(args.init))
    data = d.get("data") or {}
    for key in ("understanding", "images", "generation", "generation_images"):
        _set(data, key, _abs(getattr(args, key)))
    for key in ("understanding_samples", "generation_samples", "generation_seed"):
        _set(data, key, getattr(args, key))
    require("understanding" in data, "pass --understanding FILE.json (LLaVA's 558K or 665K JSON)")
    d["data"] = data
    if args.freeze_vision:
        d["train_vision"] = False
    if args.lora:
        d["lora"] = {**(d.get("lora") or {}), "enabled": True}
    lora_on = bool((d.get("lora") or {}).get("enabled"))
    optim = d.get("optim")
    if optim is None and any(getattr(args, k) is not None for k in ("steps", "batch_size", "lr", "grad_accumulation")):
        from dataclasses import asdict

        optim = json.loads(json.dumps(asdict(stage_optim(int(d["stage"]), lora_on))))
    if optim is not None:
        _set(optim, "steps", args.steps)
        _set(optim, "batch_size", args.batch_size)
        _set(optim, "grad_accumulation", args.grad_accumulation)
        if args.lr is not None:
            optim["lr_llm"] = optim["lr_vision"] = args.lr
        d["optim"] = optim
    _set(d, "seed", args.seed)
    _set(d, "checkpoint_every", args.checkpoint_every)
    _set(d, "log_interval", args.log_interval)
    if args.threads is not None:
        d["runtime"] = {**(d.get("runtime") or {}), "threads": args.threads}
    return LlavaStageConfig.from_dict(d)


def run_train(args: argparse.Namespace) -> int:
    from uvlm.train.llava import train_stage

    config = stage_config_from_args(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        return 0
    require(args.out is not None, "pass --out DIR (the run folder to write)")
    result = train_stage(config, args.out, quiet=args.quiet)
    print(f"trained stage {config.stage}: {result['steps']} steps, final loss {result['losses'][-1]:.4f}, "
          f"checkpoint {result['checkpoint']}")
    return 0


def _image(path: str):
    from uvlm.data.llava_json import open_image

    p = Path(path).expanduser()
    require(p.is_file(), f"image {path!r} not found: give an image file")
    return open_image(p)


def run_ask(args: argparse.Namespace) -> int:
    import torch

    from uvlm.model.config import SamplingConfig
    from uvlm.model.generate import answer
    from uvlm.train.llava import load_llava_run

    run = load_llava_run(args.run, args.checkpoint)
    m = run.model
    with torch.no_grad():
        feats = m.encode_images(m.preprocess([_image(args.image)]))
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    print(answer(m, feats, [args.question], sampling=sampling, max_new_tokens=args.max_new_tokens)[0])
    return 0


def run_draw(args: argparse.Namespace) -> int:
    from uvlm.model.config import SamplingConfig
    from uvlm.model.generate import generate_images
    from uvlm.train.llava import load_llava_run

    out = Path(args.out)
    run = load_llava_run(args.run, args.checkpoint)
    m = run.model
    require(m.target is not None, f"run {args.run!r} is understanding-only (CLIP_u): it generates no images")
    target = m.extension.target
    if target == "clip":
        require(out.suffix == ".safetensors", f"a CLIP-CLIP model generates CLIP features, which have no pixel "
                                              f"decoder: write them to a .safetensors file, not {out.name!r}")
    else:
        require(out.suffix.lower() == ".png", f"a CLIP-VQ drawing is an image: give a .png output, not {out.name!r}")
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    tokens = generate_images(m, [args.instruction], sampling=sampling)
    if target == "clip":
        from safetensors.torch import save_file

        save_file({"clip_features": tokens[0].contiguous()}, str(out),
                  metadata={"instruction": args.instruction, "run": str(args.run)})
        print(f"wrote {out}: {tokens.shape[1]} CLIP feature tokens of width {tokens.shape[2]}")
    else:
        from uvlm.vision.base import to_pil

        to_pil(run.vq.decode(tokens))[0].save(out)
        print(f"wrote {out}: {tokens.shape[1]} VQ codes decoded")
    return 0


def run_tiny(args: argparse.Namespace) -> int:
    from uvlm.model.llava_tiny import save_tiny_llava, save_tiny_llava_data

    out = Path(args.out)
    require(not out.exists() or (out.is_dir() and not any(out.iterdir())),
            f"{str(out)!r} exists and is not an empty folder: choose a new folder")
    d = Path(args.data) if args.data is not None else None
    if d is not None:  # checked before anything is written
        require(d.resolve() != out.resolve(), "--data must be another folder than the checkpoint's")
        require(not d.exists() or (d.is_dir() and not any(d.iterdir())),
                f"{str(d)!r} exists and is not an empty folder: choose a new folder for --data")
    save_tiny_llava(out, seed=args.seed)
    print(f"wrote {out}: a tiny random LlavaForConditionalGeneration (CLIP tower, projector, Llama, tokenizer, "
          f"image processor)")
    if d is not None:
        files = save_tiny_llava_data(d)
        print(f"wrote {d}: {', '.join(p.name for k, p in files.items() if k != 'images')} and images/")
    return 0


def run_assemble(args: argparse.Namespace) -> int:
    from uvlm.model.llava import assemble_llava

    out = assemble_llava(args.llm, args.vision, args.out, seed=args.seed)
    print(f"wrote {out}: a LlavaForConditionalGeneration with a fresh projector (seed {args.seed}); train it with "
          f"uvlm llava train --stage 1 --base {out} ...")
    return 0


def _sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="STEP", help="checkpoint step or folder name (default: the latest)")
    p.add_argument("--temperature", type=bounded_float(0.0, 100.0), default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=bounded_int(0, 10**6), default=0, help="sample among the k most likely tokens")
    p.add_argument("--seed", type=seed_arg, default=0, help="sampling seed")


def register(sub: argparse._SubParsersAction) -> None:
    group = add_group(sub, "llava", "the LLaVA-1.5 extension (Table 2): two-stage training, ask, draw")

    p = group.add_parser("train", help="train stage 1 or stage 2 of the LLaVA extension",
                         description="Stage 1: LLM and tower frozen; projector, generation adapter and head train on "
                                     "LLaVA's 558K JSON plus reversed ShareGPT4V captions. Stage 2 (--init a stage-1 "
                                     "run): everything trains (--freeze-vision keeps the tower frozen; --lora adapts "
                                     "the LLM with LoRA) on the 665K mix plus further captions. See docs/llava.md.")
    p.add_argument("--stage", type=int, choices=(1, 2), help="1 or 2")
    p.add_argument("--config", metavar="FILE.json", help="a llava stage config as JSON (flags override it)")
    p.add_argument("--base", metavar="DIR", help="stage 1: local LlavaForConditionalGeneration folder")
    p.add_argument("--target", choices=("clip", "vq", "none"), help="stage 1: generation target (default clip)")
    p.add_argument("--vq", metavar="PATH", help="stage 1, --target vq: LlamaGen's vq_ds16_t2i.pt")
    p.add_argument("--init", metavar="RUN", help="stage 2: the stage-1 run folder")
    p.add_argument("--understanding", metavar="FILE.json", help="LLaVA JSON (558K for stage 1, 665K for stage 2)")
    p.add_argument("--images", metavar="DIR", help="folder the understanding images are relative to")
    p.add_argument("--generation", metavar="FILE.json", help="ShareGPT4V-PT captions, reversed into generation data")
    p.add_argument("--generation-images", metavar="DIR", help="folder the caption images are relative to")
    p.add_argument("--understanding-samples", type=count_arg, metavar="N", help="use the first N understanding "
                                                                                "records (default: all)")
    p.add_argument("--generation-samples", type=count_arg, metavar="N",
                   help="generation samples of this stage (default: the paper's 150K / 200K)")
    p.add_argument("--generation-seed", type=seed_arg, help="seed of the stages' disjoint caption subsets (default 0)")
    p.add_argument("--lora", action="store_true", help="stage 2: LoRA on the LLM instead of full fine-tuning")
    p.add_argument("--freeze-vision", action="store_true", help="stage 2: keep the tower frozen (LLaVA-1.5's recipe)")
    p.add_argument("--steps", type=bounded_int(1, MAX_STEPS), help="optimiser steps (default: one epoch)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), help="global batch (default 256 / 128)")
    p.add_argument("--grad-accumulation", type=bounded_int(1, MAX_BATCH), help="micro-batches per step")
    p.add_argument("--lr", type=bounded_float(0.0, 10.0), help="peak learning rate of every group")
    p.add_argument("--seed", type=seed_arg, help="data order and dropout seed")
    p.add_argument("--threads", type=bounded_int(1, 256), help="CPU threads")
    p.add_argument("--checkpoint-every", type=bounded_int(0, MAX_STEPS), metavar="STEPS",
                   help="save every N steps (0: at the end)")
    p.add_argument("--log-interval", type=bounded_int(1, MAX_STEPS), metavar="STEPS", help="log every N steps")
    p.add_argument("--out", metavar="DIR", help="run folder to write (new or empty)")
    p.add_argument("--print-config", action="store_true", help="print the resolved stage config as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no console log lines")
    p.set_defaults(func=run_train)

    p = group.add_parser("ask", help="answer a question about an image with a trained stage")
    p.add_argument("run", metavar="RUN")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("--max-new-tokens", type=bounded_int(1, 4096), default=64, help="answer length limit")
    _sampling(p)
    p.set_defaults(func=run_ask)

    p = group.add_parser("draw", help="generate an image's vision tokens from an instruction",
                         description="CLIP-CLIP writes the generated CLIP features to OUT.safetensors (they have no "
                                     "pixel decoder); CLIP-VQ decodes its VQ codes to OUT.png.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("instruction", metavar="INSTRUCTION")
    p.add_argument("out", metavar="OUT")
    _sampling(p)
    p.set_defaults(func=run_draw)

    p = group.add_parser("assemble", help="build a LLaVA checkpoint from a Vicuna LLM and a CLIP model",
                         description="Write OUT, a LlavaForConditionalGeneration folder (real format) made of a local "
                                     "Llama/Vicuna causal LM, a local CLIP model and a fresh LLaVA-1.5 projector: the "
                                     "starting point of LLaVA-1.5's own stage 1.")
    p.add_argument("--llm", metavar="DIR", required=True, help="local causal LM folder (vicuna-7b-v1.5)")
    p.add_argument("--vision", metavar="DIR", required=True, help="local CLIP folder (clip-vit-large-patch14-336)")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the projector's weights")
    p.set_defaults(func=run_assemble)

    p = group.add_parser("tiny-checkpoint", help="write a tiny random LLaVA checkpoint in the real format",
                         description="A tiny random-weight LlavaForConditionalGeneration (CLIP tower, projector, "
                                     "Llama, tokenizer, image processor) saved with save_pretrained, to try the "
                                     "commands on a CPU.")
    p.add_argument("out", metavar="DIR")
    p.add_argument("--data", metavar="DATA_DIR", help="also write tiny LLaVA-format data: pretrain.json, mix.json, "
                                                      "captions.json and images/")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.set_defaults(func=run_tiny)


__all__ = ["register", "stage_config_from_args"]
