"""``uvlm score``: the SmartWatch VQA score of a predictions file on a materialized test split.

    uvlm score --test data/test --predictions answers.jsonl [--json]

Prints the paper's rows (time, weather, position, battery, total, in percent) as a Markdown table, or with ``--json``
the full report including the two positions separately (see :mod:`uvlm.data.scoring`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uvlm.errors import require

EPILOG = """\
The predictions file has one JSON object per line, one per VQA question of the test split:
  {"id": "test-vqa-00000012.0", "prediction": "The time is 02:07:00."}
The id is the sample id, a dot, and the question's turn number (0 for the first question).
Answers may contain surrounding words; an answer naming no value, or several different values, scores 0."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score VQA answers on a test split (time, weather, position, battery, total)",
        description="Score VQA answers on a materialized SmartWatch test split with the paper's VQA score.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--test", required=True, metavar="PATH", help="folder of a materialized test split")
    p.add_argument("--predictions", required=True, metavar="FILE",
                   help="JSON-lines answers: {\"id\": ..., \"prediction\": ...} per question")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the predictions and the test split's VQA questions, score, print. Bad input raises ``UserError``."""
    from uvlm.data.scoring import questions_from_samples, read_predictions, score_predictions
    from uvlm.data.storage import read_samples

    from uvlm.io import found

    test = Path(args.test)
    require(test.exists(), f"test split folder {str(test)!r} not found: pass the folder of a materialized test split")
    require(test.is_dir(), f"test split folder {str(test)!r} is {found(test)}, not a folder: pass the folder of a "
                           f"materialized test split")
    from uvlm.data.storage import require_dataset

    require_dataset(test, "smartwatch", "uvlm score")  # a damaged split is reported before the answers are read
    predictions = read_predictions(args.predictions)
    questions = questions_from_samples(read_samples(test, "vqa", with_images=False))
    require(len(questions) > 0, f"the split in {str(test)!r} has no VQA questions: pass a test split with VQA samples")
    report = score_predictions(questions, predictions)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_table())
    return 0
