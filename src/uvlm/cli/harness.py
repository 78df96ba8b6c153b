"""``uvlm harness``: SmartWatch test splits for outside evaluation harnesses.

    uvlm harness lmms-task data/test lmms-tasks          # lmms-eval task file (then --include_path lmms-tasks)
    uvlm harness vlmevalkit data/test ~/LMUData/SmartWatch.tsv
    uvlm harness vlmevalkit-predictions results.tsv answers.jsonl

See docs/lmms-eval.md; a uvlm run inside lmms-eval is ``lmms-eval --model uvlm --model_args run=RUN``.
"""

from __future__ import annotations

import argparse
import time

from uvlm.cli._common import add_group


def _smartwatch_only(args: argparse.Namespace, what: str) -> None:
    from uvlm.data.storage import require_dataset

    require_dataset(args.split_dir, "smartwatch", what)


def _lmms_task(args: argparse.Namespace) -> int:
    _smartwatch_only(args, "uvlm harness lmms-task")
    from uvlm.integrations.lmms_eval import write_task

    path = write_task(args.split_dir, args.out, name=args.name, overwrite=args.overwrite)
    print(f"wrote {path}: run it with lmms-eval --include_path {args.out} --tasks {args.name} ...")
    return 0


def _vlmevalkit(args: argparse.Namespace) -> int:
    _smartwatch_only(args, "uvlm harness vlmevalkit")
    from uvlm.integrations.vlmevalkit import export_tsv

    t0 = time.perf_counter()
    n = export_tsv(args.split_dir, args.out)
    print(f"wrote {args.out}: {n:,} questions in {time.perf_counter() - t0:.1f} s")
    return 0


def _vlmevalkit_predictions(args: argparse.Namespace) -> int:
    from uvlm.data.scoring import write_predictions
    from uvlm.integrations.vlmevalkit import predictions_from_table

    predictions = predictions_from_table(args.table)
    write_predictions(args.out, predictions)
    print(f"wrote {args.out}: {len(predictions):,} answers (score them with uvlm score --test SPLIT "
          f"--predictions {args.out})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    group = add_group(sub, "harness", "SmartWatch test splits for lmms-eval and VLMEvalKit")

    p = group.add_parser("lmms-task", help="write an lmms-eval task file for a split (scored with uvlm's VQA score)",
                         description="Write TASK_DIR/NAME.yaml, an lmms-eval task reading the VQA shards of "
                                     "SPLIT_DIR (by absolute path) and scoring with uvlm's exact VQA score. Use it "
                                     "with lmms-eval --include_path TASK_DIR --tasks NAME.")
    p.add_argument("split_dir", metavar="SPLIT_DIR", help="a split folder written by uvlm data generate")
    p.add_argument("out", metavar="TASK_DIR", help="folder for the task file (created if absent)")
    p.add_argument("--name", default="smartwatch", help="task name (default smartwatch)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing task file of that name")
    p.set_defaults(func=_lmms_task)

    p = group.add_parser("vlmevalkit", help="export a split's VQA questions as a VLMEvalKit TSV",
                         description="Write OUT.tsv with index, base64 PNG image, question, answer, id and category "
                                     "(the attribute asked), one row per VQA question. VLMEvalKit reads it as a "
                                     "custom VQA benchmark from $LMUData/NAME.tsv.")
    p.add_argument("split_dir", metavar="SPLIT_DIR", help="a split folder written by uvlm data generate")
    p.add_argument("out", metavar="OUT.tsv", help="output file")
    p.set_defaults(func=_vlmevalkit)

    p = group.add_parser("vlmevalkit-predictions", help="turn a VLMEvalKit result table into a uvlm predictions file",
                         description="Read the id and prediction columns of a VLMEvalKit result table (TSV or CSV) "
                                     "for a TSV from uvlm harness vlmevalkit, and write the JSON-lines predictions "
                                     "file uvlm score reads.")
    p.add_argument("table", metavar="TABLE", help="VLMEvalKit's result table (.tsv or .csv)")
    p.add_argument("out", metavar="OUT.jsonl", help="predictions file to write")
    p.set_defaults(func=_vlmevalkit_predictions)
