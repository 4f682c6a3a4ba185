"""Whether a task's FP32 fine-tuning is long enough: its FP32 run at another number of epochs.

    python experiments/accuracy/fp32_length.py --task speech_commands --epochs 8 --seed 0 \\
        --threads 2

Trains the task's FP32 recipe under its budget (``BUDGETS``) with ``--epochs`` instead of the
budget's FP32 length (same learning rate and schedule; cached as run ``fp32_ep<N>``, so a rerun
only re-measures), then prints the validation accuracy after every epoch, to compare with the
budget's run on validation, and the test accuracy, which is not for choosing (docs/accuracy.md,
"Selection on the validation split only")."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from accelsim.accuracy import evaluate_float
from accelsim.accuracy.budgets import BASELINE, BUDGETS, budgeted
from accelsim.accuracy.pipeline import train
from accelsim.compress.recipe import load_recipe
from accelsim.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(BUDGETS))
    parser.add_argument("--epochs", type=int, required=True, help="FP32 epochs to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: must be >= 1")
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    budget = dataclasses.replace(BUDGETS[args.task], fp_epochs=args.epochs)
    recipe = dataclasses.replace(budgeted(load_recipe(BASELINE), budget),
                                 name=f"{BASELINE}_ep{args.epochs}")
    result = train(task, recipe, None, args.seed)
    curve = ", ".join(f"{record.metric:.2f}" for record in result.history)
    print(f"{args.task} FP32 {args.epochs} epochs, seed {args.seed}: validation % by epoch "
          f"{curve}; test {evaluate_float(task, result.model, 'test'):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
