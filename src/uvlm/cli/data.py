"""``uvlm data``: generate, preview, inspect and export splits of the registered datasets.

    uvlm data generate data/train --vqa 60K --caption 60K --generation 60K --resolution 64
    uvlm data generate data/test --split test
    uvlm data generate data/train-biased --bias weather:0.05:0
    uvlm data preview sheet.png --from data/train -n 16 --task vqa
    uvlm data preview faces.png --dataset celeba --celeba-root /data/celeba -n 16 --task caption
    uvlm data distribution --dataset celeba --celeba-root /data/celeba --vqa 60K
    uvlm data info data/train --verify
    uvlm data export-llava data/train data/train-llava

The split flags describe a split of ``--dataset`` (default ``smartwatch``). What a dataset does not support yet is one
line and exit code 2, naming what does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from uvlm.cli._common import add_group, bounded_int, count_arg, default_workers, seed_arg, workers_arg
from uvlm.data.config import MAX_RESOLUTION, MIN_RESOLUTION, TASKS
from uvlm.data.datasets import DEFAULT_DATASET, dataset_class, dataset_names
from uvlm.errors import UserError, require


def resolution_arg(text: str) -> int:
    """argparse type for ``--resolution``: an integer from the legible minimum to the maximum side length."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image side in pixels, got {text!r}") from None
    if v < MIN_RESOLUTION:
        raise argparse.ArgumentTypeError(f"{v} px is below the legible minimum of {MIN_RESOLUTION} px: use "
                                         f"{MIN_RESOLUTION} or more (64 is the CPU default)")
    if v > MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"{v} px is above the maximum of {MAX_RESOLUTION} px: use at most "
                                         f"{MAX_RESOLUTION} (the paper uses 224 and 256, the CPU default 64)")
    return v


def _add_split_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split (defaults: the paper's train split, or its test split with --split test)")
    g.add_argument("--dataset", choices=dataset_names(), default=DEFAULT_DATASET,
                   help=f"which registered dataset (default {DEFAULT_DATASET})")
    g.add_argument("--celeba-root", default=None, metavar="DIR",
                   help="--dataset celeba: the local CelebA folder (img_align_celeba/, list_attr_celeba.txt, "
                        "list_eval_partition.txt)")
    g.add_argument("--attributes", default=None, metavar="A,B,...",
                   help="--dataset celeba: the attributes drawn, asked and stated, comma-separated (default the "
                        "paper's seven)")
    g.add_argument("--min-images", type=bounded_int(1, 10**9), default=None, metavar="N",
                   help="--dataset celeba: a combination is drawn only if each pool holds N images with it "
                        "(default 10)")
    g.add_argument("--split", choices=("train", "test"), default="train",
                   help="preset to start from: train (60K+60K+60K sharing images) or test (1,000 VQA + 500 "
                        "generation on their own images); also the split name, so train and test differ per seed")
    g.add_argument("--seed", type=seed_arg, default=None, help="base seed (default 0)")
    g.add_argument("--resolution", type=resolution_arg, default=None, metavar="PX",
                   help=f"image side in pixels, {MIN_RESOLUTION} to {MAX_RESOLUTION} (default 64)")
    g.add_argument("--vqa", type=count_arg, default=None, metavar="N", help="VQA conversations (e.g. 60K)")
    g.add_argument("--caption", type=count_arg, default=None, metavar="N", help="caption samples")
    g.add_argument("--generation", type=count_arg, default=None, metavar="N", help="text-to-image samples")
    g.add_argument("--bias", default=None, metavar="ATTR[:VQA_SHARE[:CAPTION_SHARE]]",
                   help="under-represent one attribute in VQA and captions: the share of VQA questions asking about "
                        "it (default 0.05, unbiased 0.2) and the probability a caption states it (default 0); "
                        "SmartWatch's attributes, or CelebA's (e.g. Wearing_Hat) with --dataset celeba")


def _bias(dataset: str, text: str):
    """The bias of ``--bias`` in the dataset's own type; a bad one is an ``argument --bias`` error."""
    try:
        return dataset_class(dataset).parse_bias(text)
    except UserError as e:
        raise UserError(f"argument --bias: {e}") from None


def split_config_from_args(args: argparse.Namespace):
    """The split config the split flags describe, of the dataset ``--dataset`` (invalid values raise
    :class:`UserError`)."""
    kw: dict = {}
    for flag, field in (("seed", "seed"), ("resolution", "resolution"), ("vqa", "n_vqa"), ("caption", "n_caption"),
                        ("generation", "n_generation")):
        value = getattr(args, flag)
        if value is not None:
            kw[field] = value
    dataset = getattr(args, "dataset", DEFAULT_DATASET)
    root = getattr(args, "celeba_root", None)
    if dataset == "celeba":
        require(root is not None, "--dataset celeba needs --celeba-root DIR: the local CelebA folder (CelebA cannot be "
                                  "downloaded by uvlm; see docs/celeba.md)")
        kw["root"] = root
        if getattr(args, "attributes", None) is not None:
            kw["attributes"] = tuple(a.strip() for a in args.attributes.split(",") if a.strip())
        if getattr(args, "min_images", None) is not None:
            kw["min_images"] = args.min_images
    else:
        for flag in ("celeba_root", "attributes", "min_images"):
            require(getattr(args, flag, None) is None, f"--{flag.replace('_', '-')} is for --dataset celeba, not "
                                                       f"{dataset}: add --dataset celeba or drop it")
    if args.bias is not None:
        kw["bias"] = _bias(dataset, args.bias)
    return dataset_class(dataset).split(args.split, **kw)


def not_for(dataset: str, what: str, instead: str) -> UserError:
    """The one-line error of a command a dataset does not support yet."""
    return UserError(f"{what} is not supported for --dataset {dataset} yet: {instead}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while writing, so the temporary output is removed either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _generate(args: argparse.Namespace) -> int:
    from uvlm.data.storage import materialize

    from uvlm.io import check_output_dir

    config = split_config_from_args(args)
    check_output_dir(args.out, "the split")
    t0 = time.perf_counter()
    with _terminate_as_interrupt():
        manifest = materialize(config, args.out, workers=args.workers, shard_size=args.shard_size,
                               overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    rows = sum(manifest["counts"].values())
    counts = ", ".join(f"{t} {manifest['counts'][t]:,}" for t in TASKS)
    print(f"wrote {args.out}: {counts} ({config.n_images:,} distinct images) in {seconds:.1f} s, "
          f"{rows / max(seconds, 1e-9):,.0f} images/s")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from uvlm.data.preview import contact_sheet
    from uvlm.io import atomic_path

    from uvlm.io import check_output_file

    require(args.n >= 1, f"-n must be at least 1, got {args.n}")
    require(Path(args.out).suffix.lower() == ".png", f"preview output {args.out} must end in .png")
    check_output_file(args.out, "the preview")
    if args.source is not None:
        from uvlm.data.storage import read_samples

        samples = []
        for s in read_samples(args.source, args.task):
            samples.append(s)
            if len(samples) == args.n:
                break
        what = f"{args.source}"
    else:
        from uvlm.data.datasets import open_dataset

        config = split_config_from_args(args)
        samples = list(open_dataset(config).stream(args.task, 0, args.n))
        what = f"the {config.name} split (seed {config.seed})"
    require(samples, f"{what} has no {args.task} samples: pick another --task")
    sheet = contact_sheet(samples, columns=args.columns)
    with atomic_path(args.out, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out}: {len(samples)} {args.task} samples from {what}")
    return 0


def _distribution(args: argparse.Namespace) -> int:
    from uvlm.data.datasets import open_dataset

    config = split_config_from_args(args)
    if args.dataset != "celeba":
        raise not_for(args.dataset, "uvlm data distribution",
                      "SmartWatch draws every attribute independently and uniformly (docs/smartwatch.md); the "
                      "command reports CelebA's effective distribution under its rare-combination rule")
    from uvlm.data.celeba import attribute_distribution

    ds = open_dataset(config)
    require(args.task is None or config.count(args.task) > 0,
            f"the split has no {args.task} samples: pick another --task or raise its count")
    report = attribute_distribution(ds, args.task)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        what = f"{args.task} samples" if args.task else "images"
        print(f"the {config.name} split of {config.root} (seed {config.seed}, pool {config.pool}), its {what}:")
        print(report.format_table())
    return 0


def _info(args: argparse.Namespace) -> int:
    from uvlm.data.storage import read_manifest, summary, verify

    manifest = verify(args.split_dir) if args.verify else read_manifest(args.split_dir)
    print(f"{args.split_dir}")
    print(summary(manifest))
    if args.verify:
        n = sum(len(v) for v in manifest["shards"].values())
        print(f"verified: {n} shards match their sha256 checksums and row counts")
    return 0


def _export_llava(args: argparse.Namespace) -> int:
    from uvlm.data.llava import export_llava

    from uvlm.data.storage import read_manifest
    from uvlm.io import check_output_dir

    read_manifest(args.split_dir)  # a missing or damaged split fails before anything is written
    check_output_dir(args.out, "the export")
    t0 = time.perf_counter()
    with _terminate_as_interrupt():
        meta = export_llava(args.split_dir, args.out, overwrite=args.overwrite)
    files = ", ".join(f"{f} ({meta['counts'][t]:,} records)" for t, f in meta["files"].items())
    print(f"wrote {args.out}: {files}, {meta['n_images']:,} images in {time.perf_counter() - t0:.1f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    group = add_group(sub, "data", "generate, preview, inspect and export dataset splits (SmartWatch, CelebA)")

    p = group.add_parser("generate", help="write a split as sharded Parquet with a manifest",
                         description="Render a split of --dataset (SmartWatch by default) into OUT (sharded Parquet "
                                     "per task, manifest.json "
                                     "with checksums, README.md dataset card that datasets.load_dataset reads). "
                                     "The bytes depend only on the flags, not on --workers.")
    p.add_argument("out", metavar="OUT", help="output folder (must be absent or empty unless --overwrite)")
    _add_split_flags(p)
    p.add_argument("--workers", type=workers_arg, default=default_workers(), metavar="N",
                   help="worker processes (default: all usable cores)")
    p.add_argument("--shard-size", type=bounded_int(1, 10**7), default=5000, metavar="N",
                   help="rows per shard (default 5000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split at OUT once the new one is done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_generate)

    p = group.add_parser("preview", help="draw a contact sheet of samples to a PNG",
                         description="Contact sheet of the first N samples of a task, from a split folder (--from) "
                                     "or generated on the fly from the split flags.")
    p.add_argument("out", metavar="OUT.png", help="output image")
    p.add_argument("--from", dest="source", default=None, metavar="SPLIT_DIR", help="read samples from this split")
    _add_split_flags(p)
    p.add_argument("-n", type=bounded_int(1, 1024), default=16, help="number of samples, at most 1024 (default 16)")
    p.add_argument("--task", choices=TASKS, default="vqa", help="which task (default vqa)")
    p.add_argument("--columns", type=bounded_int(1, 1024), default=None, metavar="N",
                   help="sheet columns (default: auto)")
    p.set_defaults(func=_preview)

    p = group.add_parser("distribution", help="the effective attribute distribution of a CelebA split",
                         description="Draw a split's ground truths (labels only, no image is read) and print each "
                                     "attribute's share against the share the rare-combination rule implies and the "
                                     "independent one, with how many combinations are eligible and how often images "
                                     "repeat.")
    _add_split_flags(p)
    p.add_argument("--task", choices=TASKS, default=None, help="only the images of one task (default: every image)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_distribution)

    p = group.add_parser("info", help="print a split's manifest summary",
                         description="Print a split folder's config, counts, shards and library versions.")
    p.add_argument("split_dir", metavar="SPLIT_DIR")
    p.add_argument("--verify", action="store_true", help="also check every shard's sha256 and row count")
    p.set_defaults(func=_info)

    p = group.add_parser("export-llava", help="export a split to LLaVA JSON + PNG files",
                         description="Write one LLaVA JSON file per task (vqa.json, caption.json, generation.json) "
                                     "and each image once under images/, with export.json describing the source.")
    p.add_argument("split_dir", metavar="SPLIT_DIR")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing export at OUT once the new one is done")
    p.set_defaults(func=_export_llava)
