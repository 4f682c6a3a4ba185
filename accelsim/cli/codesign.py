"""``accelsim codesign SPEC``: per-group precision and sparsity searched with the hardware."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("co-design search: per-group bits and 2:4 chosen by an ILP per hardware point under an "
        "accuracy budget, then QAT-verified (resumable)")
DEFAULT_RESULTS = Path("experiments/codesign/results.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="co-design YAML (see docs/codesign.md)")
    parser.add_argument(
        "--out", type=Path,
        help="results store (SQLite); default: results/NAME.sqlite beside the spec. Rerunning "
        "with the same store skips every stored point, sensitivity and QAT run")
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS,
        help=f"results CSV; this task's rows are replaced, others kept (default "
        f"{DEFAULT_RESULTS})")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the QAT verification of the selected points")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch
    from tqdm import tqdm

    from accelsim.codesign.run import RESULT_COLUMNS, run_codesign
    from accelsim.codesign.spec import load_spec
    from accelsim.errors import AccelsimError
    from accelsim.files import check_output_path, outputs_together

    if args.threads < 1:
        raise AccelsimError(f"--threads {args.threads}: must be an integer >= 1")
    if args.results.suffix != ".csv":
        raise AccelsimError(f"--results {args.results}: the file name must end in .csv")
    results = check_output_path(args.results, "--results")
    if args.out is not None and args.out.is_dir():
        raise AccelsimError(f"--out {args.out}: is a folder; give the store's file path")
    spec = load_spec(args.spec)
    torch.set_num_threads(args.threads)
    out = args.out or args.spec.parent / "results" / f"{args.spec.stem}.sqlite"
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{spec.name} {stage}",
                                     disable=args.no_progress, smoothing=0.1)
        bar.update(done - bar.n)

    try:
        summary = run_codesign(spec, out, verify=not args.no_verify, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    frame = pd.DataFrame(summary.rows, columns=list(RESULT_COLUMNS))
    if results.is_file():
        kept = pd.read_csv(results)
        missing = [c for c in RESULT_COLUMNS if c not in kept]
        if missing:
            raise AccelsimError(f"--results {results}: not a co-design results file (no column "
                                f"{', '.join(missing)})")
        frame = pd.concat([kept[kept["task"].fillna("") != (spec.task or "")], frame])
    with outputs_together([results]) as (tmp,):
        frame.to_csv(tmp, index=False)
    verified = int((frame["accuracy_source"] == "qat_integer_reference").sum())
    print(f"{spec.name}: {summary.hardware_points} hardware points ({summary.skipped} rows "
          f"already stored, {summary.searched} evaluated); store {out}; {len(summary.rows)} "
          f"rows in {results} ({verified} QAT-verified)")
    return 0
