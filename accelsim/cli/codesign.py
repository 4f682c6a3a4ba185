"""``accelsim codesign SPEC``: per-group precision and sparsity searched with the hardware."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = ("co-design search: per-group bits and 2:4 chosen by an ILP per hardware point under an "
        "accuracy budget, then QAT-verified (resumable)")
DEFAULT_RESULTS = Path("experiments/codesign/results.csv")
DEFAULT_QUALITY = Path("experiments/codesign/accuracy_model.csv")


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
    parser.add_argument(
        "--quality", type=int, metavar="N",
        help="check the accuracy model: QAT-train sampled assignments until N assignments of "
        "the task have both a prediction and a QAT measurement, and write predicted vs measured "
        "accuracy (Spearman rho, MAE) to --quality-out and its .md beside it")
    parser.add_argument(
        "--quality-out", type=Path, default=DEFAULT_QUALITY,
        help=f"accuracy model CSV for --quality; this task's rows are replaced, others kept; "
        f"the Markdown table is written beside it (default {DEFAULT_QUALITY})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _kept(path: Path, option: str, what: str, columns: tuple[str, ...]) -> Any:
    """The rows already in output CSV ``path`` (None when absent); one line when it is not one
    of this command's files."""
    import pandas as pd

    from accelsim.errors import AccelsimError

    if not path.is_file():
        return None
    try:
        kept = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise AccelsimError(f"{option} {path}: not a CSV file") from None
    missing = [c for c in columns if c not in kept]
    if missing:
        raise AccelsimError(f"{option} {path}: not a co-design {what} file (no column "
                            f"{', '.join(missing)})")
    return kept


def _merged(kept: Any, rows: list[dict[str, Any]], columns: tuple[str, ...], task: str) -> Any:
    """``rows`` in place of ``task``'s rows of ``kept``."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    if kept is None:
        return frame
    return pd.concat([kept[kept["task"].fillna("") != task][list(columns)], frame])


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from accelsim.codesign.quality import PAIR_COLUMNS, check_quality_request, markdown
    from accelsim.codesign.run import RESULT_COLUMNS, run_codesign
    from accelsim.codesign.spec import load_spec
    from accelsim.errors import AccelsimError
    from accelsim.files import check_distinct, check_output_path, outputs_together

    if args.threads < 1:
        raise AccelsimError(f"--threads {args.threads}: must be an integer >= 1")
    if args.results.suffix != ".csv":
        raise AccelsimError(f"--results {args.results}: the file name must end in .csv")
    results = check_output_path(args.results, "--results")
    if args.out is not None and args.out.is_dir():
        raise AccelsimError(f"--out {args.out}: is a folder; give the store's file path")
    outputs = [results]
    quality_csv = quality_md = None
    if args.quality is not None:
        if args.no_verify:
            raise AccelsimError("--quality with --no-verify: checking the accuracy model means "
                                "QAT-training assignments; drop one of them")
        if args.quality_out.suffix != ".csv":
            raise AccelsimError(f"--quality-out {args.quality_out}: the file name must end in "
                                ".csv")
        quality_csv = check_output_path(args.quality_out, "--quality-out")
        quality_md = quality_csv.with_suffix(".md")
        check_output_path(quality_md, "--quality-out (its .md)")
        check_distinct({"results": results, "quality-out": quality_csv})
        outputs += [quality_csv, quality_md]
    spec = load_spec(args.spec)
    task = spec.task or ""
    if args.quality is not None:
        check_quality_request(spec, args.quality)
    kept_results = _kept(results, "--results", "results", RESULT_COLUMNS)
    kept_quality = (None if quality_csv is None
                    else _kept(quality_csv, "--quality-out", "accuracy model",
                                  PAIR_COLUMNS))
    torch.set_num_threads(args.threads)
    out = args.out or args.spec.parent / "results" / f"{args.spec.stem}.sqlite"
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{spec.name} {stage}",
                                     disable=args.no_progress, smoothing=0.1)
        bar.update(done - bar.n)

    pairs = None
    try:
        summary = run_codesign(spec, out, verify=not args.no_verify, progress=progress)
        if args.quality is not None:
            from accelsim.codesign.quality import run_quality

            pairs = run_quality(spec, out, args.quality, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    frame = _merged(kept_results, summary.rows, RESULT_COLUMNS, task)
    texts: list[Any] = [frame]
    if pairs is not None:
        command = f"python -m accelsim codesign {args.spec} --quality {args.quality}"
        quality = _merged(kept_quality, [p.row(command) for p in pairs], PAIR_COLUMNS, task)
        texts += [quality, markdown(quality.to_dict("records"))]
    with outputs_together(outputs) as temps:
        for tmp, content in zip(temps, texts, strict=True):
            if isinstance(content, str):
                tmp.write_text(content)
            else:
                content.to_csv(tmp, index=False)
    verified = int((frame["accuracy_source"] == "qat_integer_reference").sum())
    print(f"{spec.name}: {summary.hardware_points} hardware points ({summary.skipped} rows "
          f"already stored, {summary.searched} evaluated); store {out}; {len(summary.rows)} "
          f"rows in {results} ({verified} QAT-verified)")
    if pairs is not None:
        from accelsim.codesign.quality import summaries

        # From the values as the CSV keeps them (2 decimals), so the line equals the table's:
        # the accuracy table's rows are rounded, and two clips' worth of ties decide ranks.
        for q in summaries(quality[quality["task"] == task].to_dict("records")):
            print(f"{task} accuracy model {q.model}: {q.n} held-out pairs, Spearman rho "
                  f"{q.spearman_rho:.3f} (p {q.spearman_p:.3g}), MAE {q.mae_pct:.2f} points, "
                  f"mean signed error {q.mean_signed_error_pct:+.2f} points")
        print(f"{quality_csv}, {quality_md}")
    return 0
