"""``uvlm quickstart``: the main job on the CPU default."""

from __future__ import annotations

import argparse

from uvlm.cli._common import MAX_WORKERS, add_dataclass_args, bounded_int, count_arg, dataclass_from_args

#: Range checks of ``uvlm quickstart`` flags (0 workers: one per core; 0 evaluations: at the end only).
QUICKSTART_TYPES = {"seeds": bounded_int(1, 1000), "workers": bounded_int(0, MAX_WORKERS), "samples": count_arg,
                    "evals": bounded_int(0, 10_000), "questions": bounded_int(1, 10**7),
                    "final_questions": bounded_int(1, 10**7)}


def cmd_quickstart(args: argparse.Namespace) -> int:
    from uvlm.experiments.quickstart import QuickstartConfig, run_quickstart

    result = run_quickstart(dataclass_from_args(QuickstartConfig, args))
    return 1 if result["failures"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    from uvlm.experiments.quickstart import QuickstartConfig

    p = sub.add_parser(
        "quickstart", help="Knowledge transfer on weather-biased SmartWatch: understanding-only vs unified (Table A5).",
        description="The paired transfer study (the transfer-study recipe at the calibrated cpu preset): train the "
                    "chosen arms on weather-biased SmartWatch over several seeds in parallel processes, then print a "
                    "table in the layout of the paper's Table A5 beside the published numbers and the pre-registered "
                    "verdict, and plot weather accuracy against understanding samples seen. States its expected "
                    "runtime first; finished runs are skipped when it is run again.")
    add_dataclass_args(p, QuickstartConfig, QUICKSTART_TYPES)
    p.set_defaults(func=cmd_quickstart)
