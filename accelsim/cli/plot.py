"""``accelsim plot pareto|codesign|breakdown|roofline``: figures from sweep or co-design results
or one run's JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim.files import check_output_path

if TYPE_CHECKING:
    import pandas as pd

HELP = ("plot a sweep's Pareto front, a co-design front, or one run's per-layer breakdown or "
        "roofline")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    pareto = kinds.add_parser(
        "pareto", help="design points of a sweep with the Pareto front highlighted and labelled"
    )
    pareto.add_argument(
        "results", type=Path, help="results store (.sqlite) or export (.csv, .parquet)"
    )
    pareto.add_argument("--x", default="latency_ms", help="x objective column (default latency_ms)")
    pareto.add_argument("--y", default="energy_uj", help="y objective column (default energy_uj)")
    pareto.add_argument("--x-sense", choices=("min", "max"), help="default: the column's usual")
    pareto.add_argument("--y-sense", choices=("min", "max"), help="default: the column's usual")
    pareto.add_argument("--color", help="colour points by this column (e.g. accuracy, recipe)")
    pareto.add_argument(
        "--objective", action="append", default=[], metavar="NAME[:min|max]",
        help="an extra objective the front is computed over (repeatable), e.g. accuracy_pct:max",
    )
    pareto.add_argument(
        "--constraint", action="append", default=[], metavar="'FIELD OP VALUE'",
        help="extra constraint on top of the sweep's own (repeatable), e.g. 'area_mm2 <= 20'",
    )
    pareto.add_argument(
        "--reference-recipe", default="fp32", metavar="RECIPE",
        help="with accuracy on y: a dashed line at this recipe's accuracy per model, from the "
        "store's accuracy table (default fp32; '' for none)",
    )
    pareto.add_argument("--title", default="", help="figure title")
    pareto.add_argument("--out", type=Path, help="PNG or SVG (default: RESULTS stem + _pareto.png)")
    codesign = kinds.add_parser(
        "codesign", help="a task's co-design front: searched and uniform points, QAT-measured")
    codesign.add_argument("results", type=Path,
                          help="co-design results CSV (experiments/codesign/results.csv)")
    codesign.add_argument("--task", required=True, help="the task whose rows are drawn")
    codesign.add_argument("--out", type=Path,
                          help="PNG or SVG (default: RESULTS folder / TASK_front.png)")
    for name, text in (
        ("breakdown", "per-layer stacked bars of cycles (compute/stall) or energy by component"),
        ("roofline", "GEMM layers under the compute and DRAM-bandwidth roofs"),
    ):
        sub = kinds.add_parser(name, help=text)
        sub.add_argument("run_json", type=Path, help="JSON written by `accelsim run --json`")
        sub.add_argument("--out", type=Path, help=f"PNG or SVG (default: RUN stem + _{name}.png)")
        if name == "breakdown":
            sub.add_argument("--metric", choices=("cycles", "energy"), default="cycles")
            sub.add_argument("--top", type=int, default=30,
                             help="largest bars shown; the rest are summed (default 30)")
            sub.add_argument("--per-layer", action="store_true",
                             help="one bar per layer instead of summing repeated blocks")
        else:
            sub.add_argument("--hw", type=Path,
                             help="the run's hardware YAML: only for a run JSON that does not "
                                  "record its hardware (the JSON's hw.config is used, and a "
                                  "--hw that disagrees with it is an error)")
            sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="with --hw: the run's config overrides (repeatable)")


def run(args: argparse.Namespace) -> int:
    kinds = {"pareto": plot_pareto, "codesign": plot_codesign}
    out = kinds.get(args.kind, plot_run)(args)
    print(f"wrote {out}")
    return 0


def plot_pareto(args: argparse.Namespace) -> Path:
    from accelsim.dse.pareto import DEFAULT_SENSES, pareto_front, parse_objectives
    from accelsim.dse.space import parse_constraint
    from accelsim.dse.store import constraint_mask, eligible_mask, load_accuracy, load_results
    from accelsim.report.plots.common import resolve_column
    from accelsim.report.plots.pareto import pareto_info, render_pareto

    out = check_output_path(
        args.out or args.results.with_name(f"{args.results.stem}_pareto.png"), "--out")
    frame = load_results(args.results)
    x, y = resolve_column(frame, args.x), resolve_column(frame, args.y)
    objectives = {
        x: args.x_sense or DEFAULT_SENSES.get(x, "min"),
        y: args.y_sense or DEFAULT_SENSES.get(y, "min"),
    }
    for name, sense in parse_objectives(args.objective).items():
        objectives[resolve_column(frame, name)] = sense
    constraints = [parse_constraint(text) for text in args.constraint]
    eligible = eligible_mask(frame) & constraint_mask(frame, constraints)
    front = pareto_front(frame, objectives, eligible, by="model")
    references = {}
    if y == "accuracy_pct" and args.reference_recipe:
        table = load_accuracy(args.results)
        chosen = table[table["recipe"] == args.reference_recipe]
        references = dict(zip(chosen["model"], chosen["accuracy_pct"], strict=True))
    info = pareto_info(frame, x, y, front, eligible, color=args.color,
                       staircase=len(objectives) == 2, references=references,
                       reference_label=f"{args.reference_recipe} accuracy (%)")
    return render_pareto(info, out, title=args.title)


def plot_codesign(args: argparse.Namespace) -> Path:
    import pandas as pd

    from accelsim.codesign.run import RESULT_COLUMNS
    from accelsim.errors import AccelsimError
    from accelsim.report.plots.codesign import render_codesign_front

    out = check_output_path(
        args.out or args.results.with_name(f"{args.task}_front.png"), "--out")
    try:
        frame = pd.read_csv(args.results)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise AccelsimError(f"{args.results}: cannot read a co-design results CSV "
                            f"({type(error).__name__})") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame]
    if missing:
        raise AccelsimError(f"{args.results}: not co-design results (no column "
                            f"{', '.join(missing)}; `accelsim codesign` writes them)")
    tasks = sorted(frame["task"].dropna().unique())
    if args.task not in tasks:
        raise AccelsimError(f"--task {args.task}: not in {args.results}; allowed: "
                            f"{', '.join(tasks) or '(none)'}")
    return render_codesign_front(frame, args.task, measured_front(frame), out)


def measured_front(frame: pd.DataFrame) -> pd.Series:
    """The QAT-measured rows no other measured row beats on both energy (lower) and accuracy
    (higher), per task."""
    from accelsim.dse.pareto import pareto_front
    from accelsim.report.plots.codesign import MEASURED

    measured = frame["accuracy_source"] == MEASURED
    return pareto_front(frame, {"energy_uj": "min", "accuracy_pct": "max"}, measured, by="task")


def plot_run(args: argparse.Namespace) -> Path:
    from accelsim.errors import AccelsimError
    from accelsim.report.plots.breakdown import breakdown_info, render_breakdown
    from accelsim.report.plots.common import load_run
    from accelsim.report.plots.roofline import render_roofline, roofline_info

    out = check_output_path(
        args.out or args.run_json.with_name(f"{args.run_json.stem}_{args.kind}.png"), "--out")
    run_data = load_run(args.run_json)
    if args.kind == "breakdown":
        if args.top < 1:
            raise AccelsimError(f"--top {args.top}: must be >= 1")
        info = breakdown_info(run_data, args.metric, args.top, group_blocks=not args.per_layer)
        return render_breakdown(info, out)
    return render_roofline(roofline_info(run_data, run_hardware(args, run_data)), out)


def first_difference(recorded: object, given: object, at: str = "") -> tuple[str, object, object]:
    """The first dotted path where two config dicts differ, with both values."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        for key in [*recorded, *(k for k in given if k not in recorded)]:
            if recorded.get(key) != given.get(key):
                return first_difference(recorded.get(key), given.get(key), f"{at}{key}.")
    return at.rstrip("."), recorded, given


def run_hardware(args: argparse.Namespace, run_data: dict) -> dict:
    """The hardware config the run used: the one its JSON records; ``--hw`` (plus ``--set``)
    only for a JSON that records none, and an error when it disagrees with the recorded one."""
    import json

    from accelsim.errors import AccelsimError
    from accelsim.hw import hw_to_dict, load_hw, parse_override, with_overrides

    recorded = run_data.get("hw")
    config = recorded.get("config") if isinstance(recorded, dict) else None
    if args.set and args.hw is None:
        raise AccelsimError("--set: needs --hw (the run JSON's own hw.config already holds "
                            "its overrides)")
    if args.hw is None:
        if config is None:
            raise AccelsimError(f"{args.run_json}: records no hardware config (written by an "
                                "older accelsim); give the run's --hw PATH [--set KEY=VALUE]")
        return config
    overrides = dict(parse_override(text) for text in args.set)
    # Through JSON, as the run wrote it (tuples become lists).
    given = json.loads(json.dumps(hw_to_dict(with_overrides(load_hw(args.hw), overrides))))
    if config is not None and given != config:
        path, ran, asked = first_difference(config, given)
        raise AccelsimError(f"--hw {args.hw}: the run used other hardware ({path} is {ran!r} in "
                            f"{args.run_json}, {asked!r} here); leave out --hw: the run JSON "
                            "records its hardware")
    return given
