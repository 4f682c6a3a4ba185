"""``accelsim sweep FILE``: evaluate a sweep file's design points into a resumable store."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate a sweep file's design points (resumable; local cores or a Dask cluster)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_file", type=Path, help="sweep YAML (see docs/sweeps.md)")
    parser.add_argument(
        "--out", type=Path,
        help="results store (SQLite); default: results/NAME.sqlite beside the sweep file. "
        "Rerunning with the same store skips finished points",
    )
    parser.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    parser.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT",
        help="run on this Dask scheduler instead of local processes",
    )
    parser.add_argument("--batch-size", type=int, help="points per task (default: automatic)")
    parser.add_argument("--csv", type=Path, help="also export all results to this CSV file")
    parser.add_argument("--parquet", type=Path, help="also export all results to this Parquet file "
                        "(with --csv: both are written, or neither)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from accelsim.dse.runner import run_sweep
    from accelsim.dse.store import export_results, load_results
    from accelsim.dse.sweepfile import load_sweep
    from accelsim.errors import AccelsimError
    from accelsim.files import check_output_path, outputs_together

    for option, value in (("--workers", args.workers), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise AccelsimError(f"{option} {value}: must be an integer >= 1")
    exports = []
    for suffix, path in ((".csv", args.csv), (".parquet", args.parquet)):
        if path is not None:
            if path.suffix != suffix:
                raise AccelsimError(f"--{suffix[1:]} {path}: the file name must end in {suffix}")
            exports.append(check_output_path(path, f"--{suffix[1:]}"))
    if args.out is not None and args.out.is_dir():
        raise AccelsimError(f"--out {args.out}: is a folder; give the store's file path")
    spec = load_sweep(args.sweep_file)
    out = args.out or args.sweep_file.parent / "results" / f"{args.sweep_file.stem}.sqlite"
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="pt", desc=spec.name, disable=args.no_progress,
                       smoothing=0.1)
        bar.update(done - bar.n)

    try:
        summary = run_sweep(
            spec, out, workers=args.workers, scheduler=args.scheduler,
            batch_size=args.batch_size, progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    frame = load_results(out)
    with outputs_together(exports) as temps:
        for tmp in temps:
            export_results(frame, tmp)
    print(
        f"{spec.name}: {summary.total} points ({summary.skipped} already stored, "
        f"{summary.evaluated} evaluated); store {out} holds {len(frame)} points, "
        f"{int(frame['feasible'].sum())} feasible, {int(frame['meets_constraints'].sum())} "
        "meet the constraints"
    )
    return 0
