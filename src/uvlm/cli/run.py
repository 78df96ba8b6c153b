"""``uvlm train`` / ``ask`` / ``draw`` / ``eval``: train a unified VLM and use the trained run.

    uvlm train --variant SigLIP-SigLIP --out runs/siglip            # the CPU default sizes
    uvlm train --config run.json                                     # everything in a RunConfig JSON file
    uvlm train --resume runs/siglip [--steps N]                      # continue a killed (or finished) run
    uvlm ask runs/siglip watch.png "What time does the watch show?"
    uvlm draw runs/vq "Draw a smart watch showing the time 02:07:00." watch.png
    uvlm eval runs/siglip --questions 1000

The config file is the main interface (``uvlm train --variant NAME --print-config > run.json`` writes a complete one
to edit); the flags cover the common sizes only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from uvlm.cli._common import bounded_float, bounded_int, count_arg, seed_arg
from uvlm.errors import UserError, require
from uvlm.train.config import MAX_BATCH, MAX_QUESTIONS, MAX_STEPS

#: Bounds of the inference flags (a longer answer or drawing than this is a typo, not a request).
MAX_NEW_TOKENS = 4096
MAX_TEMPERATURE = 100.0
MAX_TOP_K = 10**6
MAX_SAMPLING_STEPS = 100_000
MAX_GUIDANCE = 100.0
MAX_EVAL_SAMPLES = 10**6


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="STEP", help="checkpoint step or folder name (default: the latest)")
    p.add_argument("--temperature", type=bounded_float(0.0, MAX_TEMPERATURE), default=0.0,
                   help="0 = greedy (default); above 0 samples")
    p.add_argument("--top-k", type=bounded_int(0, MAX_TOP_K), default=0,
                   help="sample among the k most likely tokens (0: all)")
    p.add_argument("--seed", type=seed_arg, default=0, help="sampling seed")


def register(sub: argparse._SubParsersAction) -> None:
    from uvlm.train.config import variant_names

    p = sub.add_parser("train", help="train a unified VLM on SmartWatch (or resume a run)",
                       description="Train a unified VLM. Start from a named variant and/or a RunConfig JSON file; "
                                   "flags override both. Valid variants: " + ", ".join(variant_names()))
    p.add_argument("--variant", metavar="NAME", help="the paper's model name, e.g. SigLIP-SigLIP, VQ_u, VQ*-VQ-D")
    p.add_argument("--config", metavar="FILE.json", help="a RunConfig as JSON (missing keys keep their defaults)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: config out_dir, else runs/<variant>-seed<N>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint")
    p.add_argument("--checkpoint", metavar="STEP",
                   help="with --resume: continue from this checkpoint (a step or step-NNNNNN) instead of the latest")
    p.add_argument("--steps", type=bounded_int(1, MAX_STEPS), help="optimiser steps (default: one epoch)")
    p.add_argument("--seed", type=seed_arg, help="training seed (data order and weight init)")
    p.add_argument("--source", metavar="NAME", help="vision source: tiny (default) or a local checkpoint folder")
    p.add_argument("--llm", metavar="PRESET", help="LLM preset: debug or tiny (default)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), help="global batch size (default 32)")
    p.add_argument("--celeba-root", metavar="DIR",
                   help="train on CelebA from this local folder (data.dataset celeba, the paper's train and test "
                        "splits of its pools; see docs/celeba.md)")
    p.add_argument("--samples", type=count_arg, metavar="N",
                   help="training samples per task (VQA, caption, generation each; default 60K)")
    p.add_argument("--eval-every", type=bounded_int(0, MAX_STEPS), metavar="STEPS",
                   help="evaluate every N steps (0: at the end)")
    p.add_argument("--questions", type=bounded_int(0, MAX_QUESTIONS), metavar="N",
                   help="test questions per evaluation")
    p.add_argument("--print-config", action="store_true", help="print the resolved RunConfig as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no console log line and no progress bar")
    p.set_defaults(func=run_train)

    p = sub.add_parser("ask", help="ask a trained run a question about an image",
                       description="Answer a question about an image with a trained run (greedy by default).")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("image", metavar="IMAGE", help="image file (resized to the vision source's resolution)")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=48, help="answer length limit")
    _sampling_args(p)
    p.set_defaults(func=run_ask)

    p = sub.add_parser("draw", help="draw an image from an instruction with a trained run",
                       description="Generate an image's vision tokens and decode them with the source's decoder.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("instruction", metavar="INSTRUCTION")
    p.add_argument("output", metavar="OUT.png", help="image file to write (.png, .jpg, .webp)")
    _sampling_args(p)
    p.add_argument("--steps", type=bounded_int(None, MAX_SAMPLING_STEPS), default=None,
                   help="denoising steps of a diffusion target (default: its head's; at least 1)")
    p.add_argument("--guidance", type=bounded_float(0.0, MAX_GUIDANCE), default=1.0,
                   help="classifier-free guidance scale of a diffusion target (1: none)")
    p.set_defaults(func=run_draw)

    p = sub.add_parser("eval", help="VQA score of a trained run on its test split",
                       description="Answer the test split's VQA questions greedily and print the VQA score table; "
                                   "the answers are written to RUN/predictions/ for 'uvlm score'.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--questions", type=bounded_int(1, MAX_QUESTIONS),
                   help="how many test questions (default: the run's eval setting)")
    p.add_argument("--checkpoint", metavar="STEP", help="checkpoint step or folder name (default: the latest)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--generation", type=bounded_int(1, MAX_EVAL_SAMPLES), metavar="N",
                   help="instead of VQA: FID and faithfulness of N test generations (paper: 500)")
    p.add_argument("--inception", metavar="FILE",
                   help="with --generation: FID with this local TorchScript Inception-v3 instead of the reader")
    p.add_argument("--trust-inception-file", action="store_true",
                   help="load an --inception file whose digest is not a known Inception-v3 export (TorchScript "
                        "files carry code: pass this only for a file you trust)")
    p.add_argument("--conditioning", type=bounded_int(1, MAX_EVAL_SAMPLES), metavar="N",
                   help="instead of VQA: the teacher-forced vision loss of N test generations with their own vs "
                        "shuffled instructions (does the generation head listen to the text?), and for mixed runs "
                        "the gradient norms of the text and vision losses")
    p.add_argument("--drawings", type=bounded_int(1, MAX_EVAL_SAMPLES), metavar="N",
                   help="instead of VQA: does the run draw the requested weather? Its drawings of N test instructions "
                        "that name the weather, read by a probe fitted on real features and by the nearest real class "
                        "mean, and their similarity to their own ground truth against the others'")
    p.set_defaults(func=run_eval)


# ----- train ---------------------------------------------------------------------------------------------------------
def _read_config_file(path: str, check_variant: bool = True):
    from uvlm.io import read_json
    from uvlm.train.config import RunConfig

    d = read_json(path, "config file", "write one with 'uvlm train --print-config > run.json' and edit it")
    cfg = RunConfig.from_dict(d)
    if check_variant and "variant" in d:
        _check_variant_fields(cfg)
    return cfg


def _check_variant_fields(cfg) -> None:
    """A config file's ``variant`` names the model its fields describe (else runs would be labelled wrongly)."""
    from uvlm.train.config import variant_config

    implied = variant_config(cfg.variant, cfg)
    names = {"mode": (cfg.mode, implied.mode), "vision.understanding": (cfg.vision.understanding,
             implied.vision.understanding)}
    for k in ("encoder", "target", "detach", "affine"):
        names[f"model.{k}"] = (getattr(cfg.model, k), getattr(implied.model, k))
    diff = [f"{k} is {a!r}, the variant's {b!r}" for k, (a, b) in names.items() if a != b]
    require(not diff, f"variant {cfg.variant!r} does not match the config's fields ({'; '.join(diff)}): fix the "
                      f"variant or pass --variant {cfg.variant} to set the fields it implies")


#: What each size flag of ``uvlm train`` sets in the RunConfig (dotted keys of its JSON form), and whether a resumed
#: run may change it (the others would make the checkpoint belong to another run). The flags are parsed with the
#: ranges above; the config they produce is validated like a config file.
TRAIN_OVERRIDES: dict[str, tuple[Any, bool]] = {
    "steps": (lambda v: {"optim.steps": v}, True),
    "eval_every": (lambda v: {"eval.every": v, "eval.unit": "steps"}, True),
    "questions": (lambda v: {"eval.questions": v}, True),
    "seed": (lambda v: {"seed": v, "model.seed": v}, False),
    "source": (lambda v: {"vision.source": v}, False),
    "llm": (lambda v: {"model.llm.preset": v}, False),
    "batch_size": (lambda v: {"optim.batch_size": v}, False),
    "celeba_root": (lambda v: _celeba_data(v), False),
    "samples": (lambda v: {"data.train.n_vqa": v, "data.train.n_caption": v, "data.train.n_generation": v}, False),
    "out": (lambda v: {"out_dir": v}, False),
}


def _celeba_data(root: str) -> dict[str, Any]:
    """``--celeba-root DIR``: the dataset and the paper's train and test splits of the CelebA folder ``DIR``."""
    from uvlm.data.celeba import CelebA

    return {"data.dataset": "celeba", "data.train": CelebA.split("train", root=root).to_dict(),
            "data.test": CelebA.split("test", root=root).to_dict()}


def apply_overrides(cfg, args: argparse.Namespace, names):
    """``cfg`` with the flags ``names`` that were given applied (through its JSON form, so it is re-validated)."""
    from uvlm.train.config import RunConfig

    d = cfg.to_dict()
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        for key, v in TRAIN_OVERRIDES[name][0](value).items():
            *parents, last = key.split(".")
            node = d
            for part in parents:
                node = node[part]
            node[last] = v
    return RunConfig.from_dict(d)


def build_config(args: argparse.Namespace):
    """The RunConfig of ``uvlm train`` flags: config file, then variant, then the size flags."""
    from uvlm.train.config import RunConfig, variant_config

    # a config's own variant must match its fields, unless --variant sets them
    cfg = _read_config_file(args.config, check_variant=not args.variant) if args.config else RunConfig()
    if args.variant:
        cfg = variant_config(args.variant, cfg)
    return apply_overrides(cfg, args, TRAIN_OVERRIDES)


def run_train(args: argparse.Namespace) -> int:
    from uvlm.eval.vqa import vqa_evaluator
    from uvlm.train.checkpoint import read_run_config
    from uvlm.train.loop import train

    from uvlm.io import check_output_dir, found

    require(args.checkpoint is None or args.resume, "--checkpoint needs --resume DIR: it names the checkpoint of "
                                                    "that run to continue from")
    if args.resume:
        fixed = [f"--{k.replace('_', '-')}" for k in ("variant", "config", *(n for n, (_, ok) in
                                                                             TRAIN_OVERRIDES.items() if not ok))
                 if getattr(args, k) is not None]
        require(not fixed, f"{', '.join(fixed)} cannot change a run being resumed: resume with --resume DIR "
                           f"[--steps N] only, or start a new run")
        run = Path(args.resume)
        require(run.is_dir(), f"cannot resume: {args.resume!r} is not a run folder ("
                              f"{'nothing is there' if not run.exists() else 'it is ' + found(run)}): pass the --out "
                              f"folder of an earlier 'uvlm train'")
        cfg = apply_overrides(read_run_config(args.resume), args, [n for n, (_, ok) in TRAIN_OVERRIDES.items() if ok])
        out = Path(args.resume)
        if args.checkpoint is not None:
            from uvlm.train.checkpoint import find_checkpoint, read_state

            read_state(find_checkpoint(out, args.checkpoint))  # a missing or damaged one fails before anything loads
    else:
        cfg = build_config(args)
        out = Path(cfg.default_out_dir)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return 0
    if cfg.data.dataset != "smartwatch":  # its files are read (and checked) before anything is written
        from uvlm.data.datasets import open_dataset

        open_dataset(cfg.data.train), open_dataset(cfg.data.test)
    if not args.resume:
        check_output_dir(out, "the run")
        require(not out.is_dir() or not any(out.iterdir()) or (out / "config.json").is_file(),
                f"run folder {str(out)!r} is not empty and is not a run (no config.json): choose another --out, or "
                f"empty the folder yourself")
    result = train(cfg, out, resume=bool(args.resume), quiet=args.quiet, checkpoint=args.checkpoint,
                   evaluator=vqa_evaluator)
    if not args.quiet:
        print(f"done: {result.steps} steps in {result.out_dir}", file=sys.stderr)
    return 0


# ----- ask / draw / eval ---------------------------------------------------------------------------------------------
def _sampling(args: argparse.Namespace):
    from uvlm.model.config import SamplingConfig

    return SamplingConfig(temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                          steps=getattr(args, "steps", None), guidance=getattr(args, "guidance", 1.0))


def _load(args: argparse.Namespace):
    from uvlm.train.checkpoint import load_run

    return load_run(args.run, args.checkpoint)


def run_ask(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from uvlm.model.generate import answer

    sampling = _sampling(args)
    from uvlm.io import found

    path = Path(args.image)
    require(path.exists(), f"image {args.image!r} not found: pass an image file (PNG, JPEG ...)")
    require(path.is_file(), f"image {args.image!r} is {found(path)}, not an image file: pass an image file (PNG, "
                            f"JPEG ...)")
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot read image {args.image!r} ({e}): pass a PNG or JPEG file") from None
    require(args.question.strip() != "", "the question is empty: ask something, e.g. \"What time does the watch show?\"")
    loaded = _load(args)
    source = loaded.sources.understanding
    r = int(source.resolution)
    if image.size != (r, r):
        image = image.resize((r, r), Image.Resampling.BICUBIC)
    import torch

    with torch.no_grad():
        feats = source.to_inputs(source.encode_cached([image]))
    print(answer(loaded.model, feats, [args.question], sampling=sampling, max_new_tokens=args.max_new_tokens)[0])
    return 0


def run_draw(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from uvlm.io import atomic_path, check_output_file
    from uvlm.model.generate import generate_images

    sampling = _sampling(args)
    out = Path(args.output)
    require(out.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"),
            f"output {args.output!r} must end in .png, .jpg or .webp")
    require(args.instruction.strip() != "", "the instruction is empty: describe the watch to draw")
    check_output_file(out, "the drawing")
    loaded = _load(args)
    model = loaded.model
    require(model.target is not None, f"run {args.run!r} is an understanding-only model ({loaded.config.variant}): "
                                      f"it cannot draw; use a run with a generation target")
    target = loaded.config.model.target_class()
    require(target.draws(), f"run {args.run!r} cannot draw: {target.no_drawing_reason()}")
    tokens = generate_images(model, [args.instruction], sampling=sampling)
    try:
        with torch.no_grad():
            pixels = target.to_pixels(loaded.sources.generation, tokens)
    except NotImplementedError as e:
        raise UserError(f"the {loaded.config.model.target} generation target of {args.run!r} cannot be turned into "
                        f"pixels ({e}): draw with a VQ-target run or a source with a pixel decoder") from None
    arr = (pixels[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    with atomic_path(out, suffix=out.suffix) as tmp:
        Image.fromarray(arr).save(tmp, format=Image.registered_extensions()[out.suffix.lower()])
    print(f"wrote {out} ({arr.shape[1]}x{arr.shape[0]})", file=sys.stderr)
    if loaded.config.data.dataset == "smartwatch":
        _read_back_drawing(pixels[:1], args.instruction)
    return 0


#: A stated attribute counts as drawn when the reader reads it back at this score or better (time within about a
#: minute, battery within 10 points, weather and corners exactly).
DRAWN_SCORE = 0.9


def _read_back_drawing(pixels, instruction: str) -> None:
    """Say what the SmartWatch reader reads in a drawing, against what the instruction asked, and warn when it reads
    none of it. Uses the cached reader only (never trains one)."""
    from uvlm.eval.faithfulness import read_images, read_back, stated_in_instruction
    from uvlm.vision.reader import cached_reader, load_reader

    path = cached_reader()
    if path is None:
        print("(no reader in the cache: 'uvlm vision train --what reader' lets draw read its drawings back)",
              file=sys.stderr)
        return
    reading = read_images(load_reader(path), pixels.float().clamp(0, 1), batch_size=1)[0]
    stated = stated_in_instruction(instruction)
    if not stated:
        print("the reader reads: " + ", ".join(f"{k} {v}" for k, v in reading.items() if k != "face_color"),
              file=sys.stderr)
        return
    back = read_back(reading, stated)
    drawn = [a for a, r in back.items() if r["score"] >= DRAWN_SCORE]
    print("the reader reads back: " + ", ".join(
        f"{a} {r['read']} (asked {r['asked']})" for a, r in back.items()) +
        f"; {len(drawn)} of {len(back)} stated attributes drawn", file=sys.stderr)
    if not drawn:
        print(f"warning: the reader finds none of the {len(back)} stated attributes in this drawing: this model does "
              f"not draw watches yet (more generation training is needed; 'uvlm eval RUN --generation N' measures "
              f"how faithfully a run draws)", file=sys.stderr)


def run_eval(args: argparse.Namespace) -> int:
    from uvlm.eval.vqa import evaluate_vqa

    require(not args.inception or args.generation, "--inception needs --generation N")
    require(sum(map(bool, (args.generation, args.conditioning, args.drawings))) <= 1,
            "--generation, --conditioning and --drawings are separate evaluations: give one of them per call")
    require(not args.trust_inception_file or args.inception, "--trust-inception-file needs --inception FILE")
    fid_extractor = "reader"
    if args.inception:  # a bad weights file fails before the model loads
        from uvlm.eval.fid import inception_extractor
        from uvlm.io import found

        require(not Path(args.inception).exists() or Path(args.inception).is_file(),
                f"Inception weights file {args.inception!r} is {found(args.inception)}, not a file: pass the "
                f"TorchScript file itself")

        fid_extractor = inception_extractor(args.inception, trust=args.trust_inception_file)
    loaded = _load(args)
    cfg = loaded.config
    if cfg.data.dataset != "smartwatch" and (args.generation or args.drawings):
        flag = "--generation" if args.generation else "--drawings"
        raise UserError(f"uvlm eval {flag} is not supported for {cfg.data.dataset} runs yet (its judge, the "
                        f"reader, and the icon probe are SmartWatch's): evaluate this run with --questions N or "
                        f"--conditioning N")
    if args.generation:
        return _eval_generation(args, loaded, fid_extractor)
    if args.conditioning:
        return _eval_conditioning(args, loaded)
    if args.drawings:
        from uvlm.eval.generation import feature_faithfulness

        import torch

        target = cfg.model.target_class()
        require(loaded.sources.generation is not None and target is not None and target.feature_probe,
                f"run {cfg.variant!r} draws no tokens the feature probe can read: --drawings needs a run with a "
                f"target in its source's feature space (siglip or vq)")
        torch.set_num_threads(cfg.runtime.threads)
        r = feature_faithfulness(loaded.model, loaded.sources.generation, "weather", n_generate=args.drawings)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            print(f"{cfg.variant} ({loaded.checkpoint.name}), {r['generated']} drawings of instructions naming the "
                  f"weather: probe {r['probe_on_generated']:.3f} (on real images {r['probe_on_real']:.3f}), nearest "
                  f"class mean {r['centroid_on_generated']:.3f}, chance {r['chance']:.3f}; similarity to its own "
                  f"ground truth {r['similarity_own']:.3f} vs the others' {r['similarity_other']:.3f}")
        return 0
    n = args.questions or cfg.eval.questions
    require(n > 0, "no questions to evaluate: pass --questions N")
    step = int(loaded.state["step"])
    path = Path(args.run) / "predictions" / f"eval-step-{step:06d}.jsonl"
    report = evaluate_vqa(loaded.model, loaded.sources.understanding, cfg.data.test, n,
                          batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens,
                          feature_chunk=cfg.data.feature_chunk, predictions_path=path)
    if args.json:
        print(json.dumps({"step": step, "predictions": str(path), **report.to_dict()}, indent=2))
    else:
        print(f"{cfg.variant} at step {step} ({loaded.checkpoint.name}), {report.count('total')} test questions:")
        print(report.format_table())
        print(f"answers: {path}", file=sys.stderr)
    return 0


def _eval_conditioning(args: argparse.Namespace, loaded) -> int:
    from uvlm.eval.conditioning import gradient_balance, text_conditioning

    import torch

    torch.set_num_threads(loaded.config.runtime.threads)
    r = text_conditioning(loaded, n=args.conditioning)
    if loaded.config.mode == "mixed":
        r["gradient_balance"] = gradient_balance(loaded)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{loaded.config.variant} ({loaded.checkpoint.name}), teacher-forced vision loss of {r['n']} test "
          f"generations, own vs shuffled instructions:")
    parts = [("all image tokens", r)] + ([(f"weather icon ({r['icon']['samples']} instructions name it)", r["icon"])]
                                         if "icon" in r else [])
    for name, x in parts:
        print(f"  {name}: own {x['own']:.4f}, shuffled {x['shuffled']:.4f}, gap {x['gap']:+.4f} "
              f"({100 * x['relative_gap']:+.1f}%)")
    b = r.get("gradient_balance")
    if b:
        print(f"gradient norms on {b['batches']} x {b['n']} training samples, text loss vs {b['alpha']:g} x vision "
              f"loss: " + "; ".join(f"{g} {b[g]['text']:.4f} vs {b[g]['vision']:.4f} (ratio {b[g]['ratio']:.1f})"
                                    for g in ("blocks", "embeddings", "vision")))
    return 0


def _eval_generation(args: argparse.Namespace, loaded, fid_extractor) -> int:
    from uvlm.eval.generation_metrics import evaluate_generation

    import torch

    torch.set_num_threads(loaded.config.runtime.threads)
    r = evaluate_generation(loaded, n=args.generation, fid_extractor=fid_extractor)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    fid, faith = r["fid"], r["faithfulness"]["scores"]
    floor = f" (ground truth vs other real images: {r['fid_floor']['fid']:.1f})" if r.get("fid_floor") else ""
    print(f"{loaded.config.variant} ({loaded.checkpoint.name}), {r['n']} test generations in {r['seconds']:.0f} s:")
    print(f"FID ({fid['extractor']} features): {fid['fid']:.1f}{floor}")
    print("faithfulness (reader on the drawings, VQA score rules): "
          + ", ".join(f"{k} {'n/a' if v is None else f'{v:.1f}'}" for k, v in faith.items()))  # n/a: none stated
    return 0
