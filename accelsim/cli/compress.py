"""``accelsim compress``: fine-tune a task model under a compression recipe and export it.

Writes into ``--out``: ``checkpoint.pt`` (every epoch; rerunning the same command resumes),
``progress.json`` (per-epoch loss and metric), ``model.pt`` (final state dict), ``run.json``
(arguments, recipe, what was compressed, metrics) and, for quantized recipes, ``int_model.npz``
(docs/compression.md §6) and ``compression_report.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from accelsim.files import write_texts_atomic

HELP = "fine-tune a task model with 4-bit / 2:4 compression and export the integer model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo model name (the task's backbone)")
    parser.add_argument("--task", required=True, help="task name (accelsim.tasks)")
    parser.add_argument("--recipe", required=True,
                        help="recipe name in experiments/recipes (e.g. w4a4_sp24) or a .yaml path")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of model head, data, dropout")
    parser.add_argument("--limit", type=int, default=None,
                        help="cap every split to about this many examples (smoke runs)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random-init backbone of the same family (smoke runs)")
    parser.add_argument("--checkpoint-batches", type=int, default=None, metavar="N",
                        help="also checkpoint every N training batches within an epoch (long "
                             "epochs: an interruption loses at most N batches); default: at "
                             "epoch ends only")


def _get_task(name: str, limit: int | None, tiny: bool) -> Any:
    from accelsim.errors import AccelsimError

    try:
        from accelsim.tasks import get_task
    except ImportError as exc:
        raise AccelsimError(f"--task: the task registry accelsim.tasks.get_task is not "
                            f"available ({exc})") from None
    return get_task(name, limit=limit, tiny=tiny)


def check_backbone(model: str, task_name: str, tiny: bool) -> None:
    """``--model`` must be the model the task fine-tunes: its pre-trained backbone, or with
    ``--tiny`` the tiny random-init one of the same family."""
    from accelsim.errors import AccelsimError

    real = _get_task(task_name, None, False).backbone
    small = _get_task(task_name, None, True).backbone
    if model == (small if tiny else real):
        return
    if tiny and model == real:
        raise AccelsimError(
            f"--tiny: task {task_name!r} then trains the tiny random-init {small!r} (smoke "
            f"runs), not the pre-trained {real!r}; give --model {small} --tiny, or leave out "
            f"--tiny to fine-tune {real}")
    if not tiny and model == small:
        raise AccelsimError(f"--model {model!r}: the tiny random-init backbone of task "
                            f"{task_name!r} needs --tiny; without it the task fine-tunes {real!r}")
    raise AccelsimError(f"--model {model!r}: task {task_name!r} fine-tunes {real!r} "
                        f"({small!r} with --tiny)")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from accelsim.compress.export import export_int_model, save_int_model
    from accelsim.compress.recipe import load_recipe, recipe_to_dict
    from accelsim.compress.report import compression_report, report_rows
    from accelsim.compress.train import Progress, finetune

    recipe = load_recipe(args.recipe)
    task = _get_task(args.task, args.limit, args.tiny)
    check_backbone(args.model, task.name, args.tiny)
    torch.manual_seed(args.seed)
    model = task.build_model(args.seed)
    bar: tqdm | None = None

    if recipe.distill_unlabeled > 0:
        task.unlabeled_batches(recipe.batch_size, args.seed)  # no pool: one line, before training

    def on_progress(p: Progress) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=p.epochs_total * p.steps_per_epoch, unit="step",
                       initial=(p.epoch - 1) * p.steps_per_epoch + p.step - 1)
        if p.metric is None:
            # Epochs of stage compress are longer under distill_unlabeled: re-estimate the total.
            bar.total = (bar.n + 1 + p.steps_per_epoch - p.step
                         + (p.epochs_total - p.epoch) * p.steps_per_epoch)
            bar.set_description(f"{p.stage} epoch {p.epoch}/{p.epochs_total}")
            bar.set_postfix(loss=f"{p.loss:.4f}", refresh=False)
            bar.update(1)
        else:
            bar.set_postfix(loss=f"{p.loss:.4f}", **{task.metric_name: f"{p.metric:.2f}"})

    def train_batches(epoch: int) -> Any:
        return task.batches("train", recipe.batch_size, args.seed + epoch)

    def eval_batches() -> Any:
        return task.batches("val", recipe.batch_size, args.seed)

    def unlabeled_batches(epoch: int) -> Any:
        return task.unlabeled_batches(recipe.batch_size, args.seed + epoch)

    result = finetune(model, train_batches, eval_batches, task.metric, recipe, seed=args.seed,
                      out_dir=args.out, on_progress=on_progress,
                      unlabeled_batches=unlabeled_batches if recipe.distill_unlabeled else None,
                      checkpoint_batches=args.checkpoint_batches)
    if bar is not None:
        bar.close()
    out: Path = args.out
    history = [asdict(h) for h in result.history]
    # The text outputs land together after the weights: `verify` takes a folder with run.json
    # as finished.
    texts = {out / "progress.json": json.dumps(history, indent=1)}
    torch.save(model.state_dict(), out / "model.pt")
    summary: dict[str, Any] = {
        "model": args.model, "task": args.task, "seed": args.seed, "limit": args.limit,
        "tiny": args.tiny, "recipe": recipe_to_dict(recipe), "metric_name": task.metric_name,
        "metric": result.metric, "fp_metric": result.fp_metric,
        "quantized_linears": list(result.plan.quantized_linears),
        "attention_modules": list(result.plan.attention_modules),
        "dense_layers": result.plan.dense_layers, "float_layers": list(result.plan.float_layers),
    }
    if recipe.quantized:
        int_model = export_int_model(model)
        save_int_model(int_model, out / "int_model.npz")
        report = compression_report(int_model)
        rows = report_rows(report)
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        texts[out / "compression_report.csv"] = table.getvalue()
        summary["weight_bytes"] = asdict(report.total)
    texts[out / "run.json"] = json.dumps(summary, indent=1)
    write_texts_atomic(texts)
    if result.resumed_from_step:
        print(f"resumed at step {result.resumed_from_step} of epoch "
              f"{result.resumed_from_epoch + 1}")
    elif result.resumed_from_epoch:
        print(f"resumed after epoch {result.resumed_from_epoch}")
    fp = f" (float fine-tuned: {result.fp_metric:.2f})" if result.fp_metric is not None else ""
    print(f"{recipe.name}: {task.metric_name} {result.metric:.2f}{fp}; outputs in {out}")
    if recipe.quantized:
        t = report.total
        print(f"weights: {t.fp32_bytes} B fp32 -> {t.exported_bytes} B exported "
              f"({t.fp32_bytes / t.exported_bytes:.2f}x); {t.sparsity}")
    return 0
