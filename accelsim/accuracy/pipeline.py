"""One row of the accuracy table: FP32 fine-tune -> QAT per recipe -> integer reference.

Used by the per-task commands ``python experiments/accuracy/<task>.py``:

1. FP32: ``accelsim.compress.finetune`` with the ``fp32`` recipe, from the pre-trained backbone
   plus a fresh head. Its final weights are the critical initialization of every recipe with
   ``init: finetuned``.
2. Each compressed recipe: the FP32 weights (or, for ``init: pretrained``, the raw pre-trained
   model) -> ``finetune`` (apply recipe, calibrate clips, QAT) -> ``export_int_model`` -> test
   accuracy from the integer reference (``accelsim.accuracy.evaluate_accuracy``). The
   fake-quant PyTorch accuracy is recorded beside it as a cross-check.

Training state lives under ``${ACCELSIM_CACHE:-~/.cache/accelsim}/runs`` (outside git); a
finished run is reused, an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from accelsim.accuracy.budgets import (
    BASELINE,
    BUDGETS,
    RUN_ORDER,
    TABLE_RECIPES,
    Budget,
    budgeted,
    schedule_of,
)
from accelsim.accuracy.evaluate import evaluate_accuracy, evaluate_float, table_datapath
from accelsim.accuracy.provenance import (
    code_commit,
    finish_run,
    split_sha256,
    start_run,
    tensors_sha256,
)
from accelsim.accuracy.runs import run_dir
from accelsim.accuracy.table import RESULTS_MD, RowResult, write_rows
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import Recipe, load_recipe
from accelsim.compress.train import FinetuneResult, Progress, finetune
from accelsim.ref.qat import emulate_datapath
from accelsim.tasks import Task, get_task
from accelsim.tasks.base import Batch


def progress_printer(tag: str, every: int = 20) -> Callable[[Progress], None]:
    """``finetune``'s ``on_progress``: a line every ``every`` steps and at each epoch's end."""
    start = time.monotonic()

    def report(p: Progress) -> None:
        if p.metric is not None or p.step % every == 0:
            metric = "" if p.metric is None else f" val {p.metric:.2f}"
            print(
                f"[{tag}] {p.stage} epoch {p.epoch}/{p.epochs_total} step "
                f"{p.step}/{p.steps_per_epoch} loss {p.loss:.4f}{metric} "
                f"({(time.monotonic() - start) / 60:.1f} min)",
                flush=True,
            )

    return report


def remake_command(task_name: str, recipe_name: str, seed: int) -> str:
    """The command that trains the pipeline's run of ``recipe_name`` (and its FP32 parent)."""
    return f"python experiments/accuracy/{task_name}.py --recipes {recipe_name} --seeds {seed}"


def train(task: Task, recipe: Recipe, init_state: dict | None, seed: int,
          remake: str | None = None) -> FinetuneResult:
    """Run, resume or reuse ``finetune`` of ``recipe`` from ``init_state`` (else pre-trained).

    A run directory whose provenance says another recipe, another parent or other training code
    made it is refused (one line with ``remake``, by default the pipeline's command for it).
    """
    out_dir = run_dir(task.name, recipe.name, seed)
    parent = tensors_sha256(init_state) if init_state is not None else ""
    start_run(out_dir, recipe, parent, remake or remake_command(task.name, recipe.name, seed))
    model = task.build_model(seed)
    if init_state is not None:
        model.load_state_dict(init_state)

    def unlabeled(epoch: int) -> Iterable[Batch]:
        return task.unlabeled_batches(recipe.batch_size, seed=seed * 1000 + epoch)

    result = finetune(
        model,
        lambda epoch: task.batches("train", recipe.batch_size, seed=seed * 1000 + epoch),
        lambda: task.batches("val", 64, seed=0),
        task.metric,
        recipe,
        seed=seed,
        out_dir=out_dir,
        on_progress=progress_printer(f"{task.name}/{recipe.name}"),
        # Only a distill_unlabeled recipe reads the pool (vision and speech have none).
        unlabeled_batches=unlabeled if recipe.distill_unlabeled else None,
        # A recipe with a datapath trains on the chip's arithmetic (ignored without one).
        emulate_datapath=emulate_datapath,
    )
    finish_run(out_dir, result.model.state_dict())
    return result


def run_recipe(
    task: Task, name: str, budget: Budget, fp_state: dict | None, seed: int, command: str
) -> tuple[RowResult, FinetuneResult]:
    recipe = budgeted(load_recipe(name), budget)
    init_state = fp_state if recipe.quantized and recipe.init == "finetuned" else None
    if recipe.quantized and recipe.init == "finetuned" and fp_state is None:
        raise RuntimeError(f"{name}: needs the fp32 weights first")
    result = train(task, recipe, init_state, seed)
    parent = tensors_sha256(init_state) if init_state is not None else ""
    reused = result.resumed_from_epoch == len(result.history)
    train_minutes = None if reused else round(result.train_seconds / 60, 1)
    start = time.monotonic()
    model = result.model.eval()
    if recipe.quantized:
        fake_quant = evaluate_float(task, model, "test")
        chip = table_datapath(recipe)
        accuracy = evaluate_accuracy(task, model, export_int_model(model), "test",
                                     datapath=chip.datapath)
        measured_by, datapath = "integer_reference", chip.label
    else:
        fake_quant = None
        accuracy = evaluate_float(task, model, "test")
        measured_by, datapath = "pytorch_fp32", ""
    eval_minutes = (time.monotonic() - start) / 60
    examples = sum(len(b.labels) for b in task.batches("test", 256, seed=0))
    schedule = schedule_of(name, budget)
    row = RowResult(
        task=task.name, model=task.backbone, recipe=name, accuracy_pct=round(accuracy, 2),
        measured_by=measured_by, datapath=datapath,
        fake_quant_accuracy_pct=None if fake_quant is None else round(fake_quant, 2),
        val_accuracy_pct=round(result.metric, 2), test_examples=examples, init=schedule.init,
        fp_epochs=schedule.fp_epochs, qat_epochs=schedule.qat_epochs,
        batch_size=schedule.batch_size, lr=schedule.lr, train_minutes=train_minutes,
        eval_minutes=round(eval_minutes, 1), seed=seed, command=command,
        code_commit=code_commit(), checkpoint_sha256=tensors_sha256(model.state_dict()),
        parent_sha256=parent, split_sha256=split_sha256(task),
    )  # fmt: skip
    return row, result


def run_row(task: Task, recipes: list[str], seed: int, command: str) -> None:
    """Train and measure ``recipes`` of ``task`` with one seed; each row lands in the CSV/MD."""
    budget = BUDGETS[task.name]
    skipped = dict(budget.skip)
    fp_state: dict | None = None
    for name in recipes:
        tag = f"{task.name}/{name}/seed{seed}"
        if name in skipped:
            print(f"[{tag}] not run: {skipped[name]}", flush=True)
            continue
        needs_fp = name == BASELINE or load_recipe(name).init == "finetuned"
        if needs_fp and fp_state is None:
            # Written even when not asked for: the compressed rows of this seed pair with it.
            row, result = run_recipe(task, BASELINE, budget, None, seed, command)
            fp_state = {k: v.clone() for k, v in result.model.state_dict().items()}
            write_rows([row], markdown=RESULTS_MD)
            print(f"[{task.name}/{BASELINE}/seed{seed}] {row.accuracy_pct:.2f} %", flush=True)
        if name == BASELINE:
            continue
        row, _ = run_recipe(task, name, budget, fp_state, seed, command)
        write_rows([row], markdown=RESULTS_MD)
        print(
            f"[{tag}] {row.accuracy_pct:.2f} % (integer reference), "
            f"fake-quant {row.fake_quant_accuracy_pct:.2f} %",
            flush=True,
        )


def main(task_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Accuracy row of task {task_name}.")
    parser.add_argument("--recipes", nargs="+", choices=RUN_ORDER,
                        help="default: the README table's recipes, in run order")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="training seeds, one row each"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task(task_name)
    # The thread count is part of the command: torch's CPU kernels split reductions by thread,
    # so a run is bit-for-bit reproducible at the thread count it was made with.
    command = f"python experiments/accuracy/{Path(sys.argv[0]).name} --threads {args.threads}"
    recipes = args.recipes or [name for name in RUN_ORDER if name in TABLE_RECIPES]
    for seed in args.seeds:
        run_row(task, recipes, seed, command + (f" --seeds {seed}" if seed else ""))
    return 0
