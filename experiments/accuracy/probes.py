"""The probe rows of results.csv: logistic regression on frozen features (accelsim.accuracy.probe).

    python experiments/accuracy/probes.py --task fortunes [--probes linear_probe tfidf_probe]
        [--threads 2]

Writes the task's ``linear_probe`` row (and, for a text task, its ``tfidf_probe`` row) to
results.csv with provenance and re-renders results.md. The probes depend on no seed (seed 0).
"""

from __future__ import annotations

import argparse
import sys

import torch

from accelsim.accuracy.budgets import BUDGETS, PROBES
from accelsim.accuracy.probe import probe_row
from accelsim.accuracy.table import RESULTS_MD, write_rows
from accelsim.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=list(BUDGETS))
    parser.add_argument("--probes", nargs="+", choices=PROBES, help="default: those that apply")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    skipped = dict(BUDGETS[args.task].skip)
    command = f"python experiments/accuracy/probes.py --task {args.task} --threads {args.threads}"
    for probe in args.probes or [p for p in PROBES if p not in skipped]:
        if probe in skipped:
            parser.error(f"--probes {probe}: {skipped[probe]}")
        row = probe_row(task, probe, command)
        write_rows([row], markdown=RESULTS_MD)
        print(f"[{args.task}/{probe}] test {row.accuracy_pct:.2f} %, val "
              f"{row.val_accuracy_pct:.2f} % ({row.selection}), {row.train_minutes} min",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
