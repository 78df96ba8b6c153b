"""``uvlm data``: generate, preview, inspect and export SmartWatch splits.

    uvlm data generate data/train --vqa 60K --caption 60K --generation 60K --resolution 64
    uvlm data generate data/test --split test
    uvlm data generate data/train-biased --bias weather:0.05:0
    uvlm data preview sheet.png --from data/train -n 16 --task vqa
    uvlm data info data/train --verify
    uvlm data export-llava data/train data/train-llava
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from uvlm.cli._common import add_group, bounded_int, count_arg, default_workers, seed_arg, workers_arg
from uvlm.data.config import MAX_RESOLUTION, MIN_RESOLUTION, TASKS, Bias, SplitConfig
from uvlm.errors import UserError, require


def bias_arg(text: str) -> Bias:
    """argparse type for ``--bias ATTR[:VQA_SHARE[:CAPTION_SHARE]]``."""
    try:
        return Bias.parse(text)
    except UserError as e:  # argparse turns ArgumentTypeError into a one-line usage error
        raise argparse.ArgumentTypeError(str(e)) from None


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
    g.add_argument("--split", choices=("train", "test"), default="train",
                   help="preset to start from: train (60K+60K+60K sharing images) or test (1,000 VQA + 500 "
                        "generation on their own images); also the split name, so train and test differ per seed")
    g.add_argument("--seed", type=seed_arg, default=None, help="base seed (default 0)")
    g.add_argument("--resolution", type=resolution_arg, default=None, metavar="PX",
                   help=f"image side in pixels, {MIN_RESOLUTION} to {MAX_RESOLUTION} (default 64)")
    g.add_argument("--vqa", type=count_arg, default=None, metavar="N", help="VQA conversations (e.g. 60K)")
    g.add_argument("--caption", type=count_arg, default=None, metavar="N", help="caption samples")
    g.add_argument("--generation", type=count_arg, default=None, metavar="N", help="text-to-image samples")
    g.add_argument("--bias", type=bias_arg, default=None, metavar="ATTR[:VQA_SHARE[:CAPTION_SHARE]]",
                   help="under-represent one attribute in VQA and captions: the share of VQA questions asking about "
                        "it (default 0.05, unbiased 0.2) and the probability a caption states it (default 0)")


def split_config_from_args(args: argparse.Namespace) -> SplitConfig:
    """The :class:`SplitConfig` the split flags describe (invalid values raise :class:`UserError`)."""
    kw: dict = {}
    for flag, field in (("seed", "seed"), ("resolution", "resolution"), ("vqa", "n_vqa"), ("caption", "n_caption"),
                        ("generation", "n_generation"), ("bias", "bias")):
        value = getattr(args, flag)
        if value is not None:
            kw[field] = value
    preset = SplitConfig.test if args.split == "test" else SplitConfig.train
    return preset(**kw)


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
    group = add_group(sub, "data", "generate, preview, inspect and export SmartWatch splits")

    p = group.add_parser("generate", help="write a split as sharded Parquet with a manifest",
                         description="Render a SmartWatch split into OUT (sharded Parquet per task, manifest.json "
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
