"""``accelsim report RESULTS_OR_RUN --html OUT``: one self-contained interactive HTML page.

A sweep's results (``.sqlite`` store, ``.csv`` or ``.parquet`` export) become the Pareto explorer;
a run's JSON (``accelsim run --json``) becomes its per-layer breakdown (accelsim.report.html).
"""

from __future__ import annotations

import argparse
from itertools import permutations
from pathlib import Path

from accelsim.errors import AccelsimError
from accelsim.files import check_output_path, write_text_atomic

HELP = "write an interactive HTML report (Pareto explorer of a sweep, or one run's layers)"
RESULT_SUFFIXES = (".sqlite", ".csv", ".parquet")
# Objective columns offered as axes, when the results have values for them.
AXES = ("latency_ms", "energy_uj", "area_mm2", "tops_per_w", "tops", "accuracy_pct",
        "dram_bytes", "utilization", "cycles")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="RESULTS_OR_RUN",
                        help="sweep results (.sqlite, .csv, .parquet) or a run's .json")
    parser.add_argument("--html", type=Path, required=True, metavar="OUT",
                        help="the HTML file to write (opens offline: plotly.js is inlined)")
    parser.add_argument("--x", default="latency_ms", help="initial x axis (default latency_ms)")
    parser.add_argument("--y", default="energy_uj", help="initial y axis (default energy_uj)")
    parser.add_argument("--title", default="", help="page title")


def run(args: argparse.Namespace) -> int:
    out = check_output_path(args.html, "--html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise AccelsimError(f"--html {out}: suffix {out.suffix!r} is not one of .html, .htm")
    suffix = args.source.suffix.lower()
    if suffix == ".json":
        page = run_page(args.source)
    elif suffix in RESULT_SUFFIXES:
        page = explorer_page(args)
    else:
        raise AccelsimError(f"{args.source}: suffix {args.source.suffix!r} is not one of "
                            f".json (a run), {', '.join(RESULT_SUFFIXES)} (sweep results)")
    write_text_atomic(out, page)
    print(f"wrote {out}")
    return 0


def run_page(path: Path) -> str:
    from accelsim.report.html import run_report_html
    from accelsim.report.plots.common import load_run

    return run_report_html(load_run(path))


def explorer_page(args: argparse.Namespace) -> str:
    from accelsim.dse.pareto import DEFAULT_SENSES, pareto_front
    from accelsim.dse.store import eligible_mask, load_results
    from accelsim.report.html import ExplorerData, pareto_explorer_html
    from accelsim.report.plots.common import resolve_column

    frame = load_results(args.source).reset_index(drop=True)
    axes = tuple(a for a in AXES if a in frame and frame[a].notna().any())
    x, y = resolve_column(frame, args.x), resolve_column(frame, args.y)
    for option, axis in (("--x", x), ("--y", y)):
        if axis not in axes:
            raise AccelsimError(f"{option} {axis}: not an axis of these results; allowed: "
                                f"{', '.join(axes)}")
    eligible = eligible_mask(frame)
    fronts = {}
    for first, second in permutations(axes, 2):
        mask = pareto_front(frame, {first: DEFAULT_SENSES[first], second: DEFAULT_SENSES[second]},
                            eligible, by="model").to_numpy(bool)
        models = frame["model"].astype(str) if "model" in frame else None
        per_model: dict[str, list[int]] = {}
        for row in frame.index[mask].to_list():
            per_model.setdefault("" if models is None else models[row], []).append(row)
        fronts[(first, second)] = {model: sorted(rows, key=lambda r: frame.at[r, first])
                                   for model, rows in per_model.items()}
    title = args.title or f"{args.source.stem}: Pareto explorer"
    return pareto_explorer_html(ExplorerData(frame, axes, eligible.to_numpy(), fronts, x, y,
                                             title))
