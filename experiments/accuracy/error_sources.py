"""Where a recipe's accuracy goes before any QAT: quantizers switched on one group at a time.

    python experiments/accuracy/error_sources.py [--task wordnet_supersenses] [--seed 0]

Starts from the task's FP32 run of ``--seed`` (trained with the pipeline's budget, or reused
from the cache), applies a recipe, calibrates the activation clips by the recipe's percentiles
over 10 training batches as QAT's first step does (here batches of the recipe's own size, 32, in
seed-0 order, not the task budget's), then measures validation accuracy (fake-quant PyTorch, which
computes the integer reference's arithmetic) with only some quantizers active: weights alone,
2:4 masks alone, 4-bit activations alone and at each input site of an encoder block, and the
remedies beyond the paper (activation-weighted or SparseGPT 2:4 masks, 8-bit activations at the
LayerNorm outputs, or those outputs smoothed per channel at 4 bits). No training: this is the
damage QAT has to repair, split by cause. Writes ``error_sources.csv`` (rows of other tasks and
seeds kept) and ``error_sources.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from accelsim.accuracy import evaluate_float
from accelsim.accuracy.budgets import BASELINE, BUDGETS, budgeted
from accelsim.accuracy.pipeline import train
from accelsim.accuracy.table import RESULTS_DIR, read_rows, write_csv
from accelsim.compress.apply import act_quantizers, apply_recipe, calibrate, quant_linears
from accelsim.compress.recipe import Recipe, load_recipe
from accelsim.compress.sites import BLOCK_SITES, SITE_INPUTS, site_of
from accelsim.files import write_text_atomic
from accelsim.tasks import Task, get_task

CSV_PATH = RESULTS_DIR / "error_sources.csv"
MD_PATH = RESULTS_DIR / "error_sources.md"
COLUMNS = ("task", "seed", "split", "setting", "accuracy_pct", "fp32_accuracy_pct")
SPLIT = "val"  # selection-free diagnostics: the test split stays for the results table


@dataclass(frozen=True)
class Setting:
    """A recipe plus which of its activation quantizers stay on (the rest pass floats)."""

    label: str
    recipe: Recipe
    linear_inputs: Callable[[str], bool]  # quantized linear name -> input quantizer on?
    attention: bool  # attention matmul operand quantizers on?


def settings() -> list[Setting]:
    w4a4, sparse = load_recipe("w4a4"), load_recipe("w4a4_sp24")
    w8 = dataclasses.replace(w4a4, name="w8a4", weight_bits=8)
    on, off = (lambda name: True), (lambda name: False)
    out = [
        Setting("W4A4 + 2:4 (all quantizers, masks)", sparse, on, True),
        Setting("W4A4 dense (all quantizers)", w4a4, on, True),
        Setting("4-bit weights only", w4a4, off, False),
        Setting("4-bit weights + 2:4 masks only", sparse, off, False),
        Setting("8-bit attention operands only", w8, off, True),
        Setting("4-bit activations only (all linear inputs)", w8, on, False),
    ]
    for site in BLOCK_SITES:
        out.append(Setting(f"4-bit activations only at {SITE_INPUTS[site]}", w8,
                           lambda name, site=site: site_of(name) == site, False))
    # The two remedies beyond the paper, measured the same way.
    wanda, ln_a8 = load_recipe("w4a4_sp24_wanda"), load_recipe("w4a4_sp24_ln_a8")
    out += [
        Setting("4-bit weights + activation-weighted 2:4 masks only", wanda, off, False),
        Setting("W4A4 + 2:4, activation-weighted masks (all quantizers)", wanda, on, True),
        Setting("W4A4 + 2:4, 8-bit activations at LayerNorm outputs (all quantizers)", ln_a8,
                on, True),
        Setting("W4A4 + 2:4, both of the above (all quantizers)",
                load_recipe("w4a4_sp24_wanda_ln_a8"), on, True),
    ]
    sparsegpt = load_recipe("w4a4_sp24_sparsegpt")
    out += [
        Setting("4-bit weights + SparseGPT 2:4 masks only", sparsegpt, off, False),
        Setting("W4A4 + 2:4, SparseGPT masks (all quantizers)", sparsegpt, on, True),
        Setting("W4A4 + 2:4, SparseGPT masks, 8-bit activations at LayerNorm outputs "
                "(all quantizers)", load_recipe("w4a4_sp24_sparsegpt_ln_a8"), on, True),
    ]
    # Smoothing the LayerNorm outputs (SmoothQuant) instead of widening them, all 4-bit.
    smooth = load_recipe("w4a4_sp24_smooth")

    def at_layernorm_outputs(name: str) -> bool:
        return site_of(name) in smooth.smoothing_sites

    out += [
        Setting("4-bit activations only at both LayerNorm outputs", w8, at_layernorm_outputs,
                False),
        Setting(f"4-bit activations only at both LayerNorm outputs, smoothed (alpha "
                f"{smooth.smoothing_alpha:g})",
                dataclasses.replace(w8, smoothing_sites=smooth.smoothing_sites,
                                    smoothing_alpha=smooth.smoothing_alpha),
                at_layernorm_outputs, False),
    ]
    for label, recipe in (("", sparse), ("activation-weighted masks, ", wanda),
                          ("SparseGPT masks, ", sparsegpt)):
        for alpha in (0.5, 0.7, 0.85):
            smoothed = dataclasses.replace(recipe, smoothing_sites=smooth.smoothing_sites,
                                           smoothing_alpha=alpha)
            out.append(Setting(f"W4A4 + 2:4, {label}LayerNorm outputs smoothed (alpha "
                               f"{alpha:g}, all quantizers)", smoothed, on, True))
    return out


def prepared(task: Task, fp_model: torch.nn.Module, setting: Setting) -> torch.nn.Module:
    """A copy of ``fp_model`` compressed and calibrated, with only ``setting``'s quantizers on."""
    model = copy.deepcopy(fp_model)
    apply_recipe(model, setting.recipe)
    calibrate(model, task.batches("train", setting.recipe.batch_size, seed=0), setting.recipe)
    linear_inputs = set()
    for name, linear in quant_linears(model):
        linear_inputs.add(id(linear.act_quant))
        if not setting.linear_inputs(name):
            linear.act_quant.bypass()
    if not setting.attention:
        for quantizer in act_quantizers(model):
            if id(quantizer) not in linear_inputs:
                quantizer.bypass()
    return model


def render(rows: list[dict[str, str]]) -> str:
    out = [
        "# Where accuracy goes before QAT",
        "",
        "Generated by `experiments/accuracy/error_sources.py` from `error_sources.csv`. Validation",
        "accuracy (%) of the FP32 run with a recipe applied and its clips calibrated, no training,",
        "with only the named quantizers on (others pass floats; `8-bit weights` stand in for",
        "float weights where a recipe needs quantized ones). `vs FP32` is the damage QAT has to",
        "repair. Validation split: the test split is kept for results.md.",
        "",
    ]
    for (task, seed), group in _groups(rows).items():
        fp = float(group[0]["fp32_accuracy_pct"])
        out += [f"## {task} (seed {seed}, FP32 {fp:.2f} %)", "",
                "| quantizers on | accuracy % | vs FP32 |", "|---|---:|---:|"]
        for r in group:
            acc = float(r["accuracy_pct"])
            out.append(f"| {r['setting']} | {acc:.2f} | {acc - fp:+.2f} |")
        out.append("")
    return "\n".join(out)


def _groups(rows: list[dict[str, str]]) -> dict[tuple[str, str], list[dict[str, str]]]:
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["seed"]), []).append(r)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="wordnet_supersenses", choices=list(BUDGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    fp = train(task, budgeted(load_recipe(BASELINE), BUDGETS[args.task]), None, args.seed)
    fp_model = fp.model.eval()
    fp_accuracy = evaluate_float(task, fp_model, SPLIT)
    new = []
    for setting in settings():
        accuracy = evaluate_float(task, prepared(task, fp_model, setting), SPLIT)
        print(f"[{args.task}/seed{args.seed}] {setting.label}: {accuracy:.2f} %", flush=True)
        new.append({"task": args.task, "seed": str(args.seed), "split": SPLIT,
                    "setting": setting.label, "accuracy_pct": f"{accuracy:.2f}",
                    "fp32_accuracy_pct": f"{fp_accuracy:.2f}"})
    kept = [r for r in read_rows(CSV_PATH) if (r["task"], r["seed"]) != (args.task, str(args.seed))]
    rows = sorted(kept + new, key=lambda r: (r["task"], int(r["seed"])))  # stable: setting order
    write_csv(CSV_PATH, COLUMNS, rows)
    write_text_atomic(MD_PATH, render(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
