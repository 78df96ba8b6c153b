"""``uvlm recipes``, ``uvlm run RECIPE`` and ``uvlm report RECIPE``: the paper's experiments as named recipes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uvlm.cli._common import MAX_WORKERS, add_dataclass_args, bounded_int, dataclass_from_args
from uvlm.errors import require

#: Range checks of ``uvlm run`` flags (0 workers: one per core; the sweep itself says that --seeds must be >= 1).
RUN_TYPES = {"seeds": bounded_int(None, 1000), "workers": bounded_int(0, MAX_WORKERS)}


def cmd_recipes(args: argparse.Namespace) -> int:
    from uvlm.experiments.recipe import load_preset, load_recipe, preset_names, recipe_names

    for name in recipe_names():
        r = load_recipe(name)
        exp = r.expected.get("cpu", {})
        print(f"{name} (v{r.version}): {r.title}")
        print(f"    reproduces: {r.reproduces}")
        print(f"    command: {r.command}; cpu preset: about {exp.get('minutes', '?')} min on 2 cores; {exp.get('result', '')}")
    print("presets: " + "; ".join(f"{p}: {' '.join(load_preset(p).description.split())}" for p in preset_names()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from uvlm.experiments.recipe import load_preset, load_recipe
    from uvlm.experiments.sweep import SweepOptions, run_sweep

    from uvlm.experiments.sweep import sweep_root
    from uvlm.io import check_output_dir, unchanged_on_error

    opts = dataclass_from_args(SweepOptions, args)
    recipe, preset = load_recipe(args.recipe), load_preset(opts.preset)
    if opts.dry_run:
        result = run_sweep(recipe, preset, opts)
        return 0
    roots = [sweep_root(opts, preset)] + ([Path(opts.results)] if opts.results else [])
    for root in roots:
        check_output_dir(root, "the results")
    if opts.tables_only:  # writes tables only: a failure leaves the folders as they were
        with unchanged_on_error(*roots):
            result = run_sweep(recipe, preset, opts)
    else:
        result = run_sweep(recipe, preset, opts)
    return 1 if any(r["status"] == "failed" for r in result["records"]) else 0


def cmd_report(args: argparse.Namespace) -> int:
    from uvlm.experiments.recipe import load_preset, load_recipe
    from uvlm.experiments.report import write_report
    from uvlm.experiments.sweep import SweepOptions, check_sweep_folder, sweep_root

    recipe, preset = load_recipe(args.recipe), load_preset(args.preset)
    folder = sweep_root(SweepOptions(preset=args.preset, root=args.root), preset) / recipe.name
    stamp = folder / "records.json"
    require(stamp.is_file(), f"no results of {recipe.name!r} in {folder}: run 'uvlm run {recipe.name} --preset "
                             f"{preset.name}' first (or pass --root)")
    check_sweep_folder(folder, recipe, preset)
    records = json.loads(stamp.read_text())["records"]
    out = Path(args.out) if args.out else folder
    for path in write_report(recipe.name, records, out, recipe.report):
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from uvlm.experiments.sweep import SweepOptions

    p = sub.add_parser("recipes", help="list the paper's experiments (recipes) and presets",
                       description="List every recipe with what it reproduces, its command and expected CPU runtime.")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("run", help="run a recipe: every model x seed, in parallel processes, then its tables",
                       description="Expand a recipe at a preset into runs, train them in parallel processes (one "
                                   "thread each), skip finished runs, record failures and carry on, and write "
                                   "results.csv/json/md with mean, std and 95%% interval over seeds. Interrupt and "
                                   "rerun freely: finished work is kept.")
    p.add_argument("recipe", help="recipe name (see 'uvlm recipes')")
    add_dataclass_args(p, SweepOptions, RUN_TYPES)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write a recipe's report: the paper's table layout and figures",
                       description="Write report.md (ours beside the published numbers) and the figures (PNG and "
                                   "PDF) of a recipe's finished runs.")
    p.add_argument("recipe", help="recipe name (see 'uvlm recipes')")
    p.add_argument("--preset", default="cpu", help="the preset the recipe ran at (default: cpu)")
    p.add_argument("--root", default="", help="folder of runs and results (default: runs/<preset>)")
    p.add_argument("--out", default="", help="where to write the report (default: the recipe's results folder)")
    p.set_defaults(func=cmd_report)
