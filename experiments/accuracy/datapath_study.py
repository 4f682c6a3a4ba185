"""Accuracy against the chip's datapath, beside what the datapath costs.

    python experiments/accuracy/datapath_study.py --task fashion_mnist --recipes w4a4_sp24 \
        [--seed 0] [--threads 2] [--variants formats kernels gelu_tables residual]

For each trained run (``python experiments/accuracy/<task>.py --recipes R --seeds S`` makes it),
the integer reference measures the test accuracy on variants of the table's chip
(``hw_configs/int4_sparse.yaml``): the vector unit in fp32, fp16, bf16 and int (I-BERT kernels)
at its 20-bit accumulators, and accumulators of 12, 16, 24 and 32 bits with its fp16 vector unit.
Beside each, the simulator's latency, energy and area of the task's backbone at the input shape the
accuracy is measured at (``accelsim run --recipe R --set ...``), and how many accumulators
saturated (``--variants formats``). ``--variants kernels`` asks where the ``int`` vector unit loses
accuracy: the int datapath with each of its approximate kernels (I-BERT's GELU and exp polynomials,
the integer-square-root LayerNorm, the saturated residual add) computed exactly in turn, then all
four, beside the chip's own vector unit, on the validation split, since the answer chooses what a
designer fixes (``Datapath.exact_kernels``; a study's knob, so no hardware cost). ``--variants
gelu_tables`` prices that fix: the int datapath with GELU from a table of 4, 16 and 64 linear
segments (``vector_unit.gelu_table_segments``) in place of I-BERT's polynomial, on the validation
split, each beside its energy and area. ``--variants int`` measures the ``int`` vector unit
alone, on the validation and the test split: what a recipe scores on the integer-only chip, for
two evaluations instead of the formats' eight; with ``--gelu-table-segments N`` that chip
computes GELU from the N-segment table (the size ``gelu_tables`` chose on validation).
``--variants residual`` tries the fix the kernel study points at when the exact add recovers
accuracy: the int datapath with the ``fitted`` residual scale (``vector_unit.residual_scale``: the
finest output scale that cannot saturate, instead of the coarser operand's) and with the
``calibrated`` one (each add's own scale, from its largest sum on the first training batches:
``accelsim.accuracy.evaluate.RESIDUAL_CALIBRATION_BATCHES``), on the validation and the test
split. Rows go to ``datapath_study.csv`` (replacing those of the same task, recipe, seed, split,
datapath and exact kernels) and ``datapath_study.md`` is re-rendered from it.

    python experiments/accuracy/datapath_study.py --reprice

re-prices every row of the CSV with the simulator as it stands (latency, energy and area; no
training or evaluation, the accuracies keep their ``code_commit``) and records the commit in
``priced_commit``: what a change of the cost model or of what the chip executes needs.

    python experiments/accuracy/datapath_study.py --render

re-renders ``datapath_study.md`` alone: its first section, the ``int`` vector unit against FP32
and the table's chip paired by training run, reads ``results.csv`` (:func:`int_chip_summary`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from accelsim.accuracy.budgets import BUDGETS
from accelsim.accuracy.evaluate import TABLE_HW_CONFIG, chip_datapath, evaluate_on_chip
from accelsim.accuracy.provenance import code_commit, tensors_sha256
from accelsim.accuracy.runs import trained_model
from accelsim.accuracy.table import (
    RESULTS_CSV,
    RESULTS_DIR,
    mean_and_std,
    paired_difference,
    read_rows,
    write_csv,
)
from accelsim.cli import main as accelsim_main
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.formats import INT_VECTOR_KERNELS
from accelsim.hw import load_hw, with_overrides
from accelsim.tasks import get_task

STUDY_CSV = RESULTS_DIR / "datapath_study.csv"
STUDY_MD = RESULTS_DIR / "datapath_study.md"
FORMATS = ("fp32", "fp16", "bf16", "int")
ACCUMULATOR_BITS = (12, 16, 24, 32)
COLUMNS = (
    "task", "model", "recipe", "seed", "split", "vector_format", "accumulator_bits",
    "exact_kernels", "gelu_table_segments", "residual_scale", "datapath", "accuracy_pct",
    "saturated_pct", "latency_ms", "energy_uj", "area_mm2", "vector_area_mm2", "code_commit",
    "checkpoint_sha256", "priced_commit",
)  # fmt: skip
# Rows written before the kernel study: the test split, no exact kernels, I-BERT's GELU, the
# residual add on the coarser scale.
COLUMN_DEFAULTS = {"split": "test", "exact_kernels": "", "gelu_table_segments": "0",
                   "residual_scale": "coarser"}
VARIANT_SETS = ("formats", "int", "kernels", "gelu_tables", "residual")
GELU_TABLE_SIZES = (4, 16, 64)


@dataclass(frozen=True)
class Variant:
    """One datapath: ``--set`` overrides of the table's chip, the kernels a study makes exact,
    and the split it is measured on."""

    vector_format: str
    accumulator_bits: int
    exact_kernels: tuple[str, ...] = ()
    split: str = "test"
    gelu_table_segments: int = 0
    residual_scale: str = "coarser"

    @property
    def overrides(self) -> dict[str, object]:
        return {"vector_unit.format": self.vector_format,
                "precision.accumulator_bits": self.accumulator_bits,
                "vector_unit.gelu_table_segments": self.gelu_table_segments,
                "vector_unit.residual_scale": self.residual_scale}


def variants(sets: tuple[str, ...] = VARIANT_SETS, gelu_table_segments: int = 0) -> list[Variant]:
    """The datapaths of ``sets``; ``gelu_table_segments`` is the ``int`` set's GELU (0: I-BERT's
    polynomial, N: an N-segment table)."""
    base = load_hw(TABLE_HW_CONFIG)
    bits, fmt = base.precision.accumulator_bits, base.vector_unit.format
    chosen: list[Variant] = []
    if "formats" in sets:
        chosen += [*(Variant(f, bits) for f in FORMATS),
                   *(Variant(fmt, b) for b in ACCUMULATOR_BITS if b != bits)]
    if "int" in sets:
        chosen += [Variant("int", bits, (), split, gelu_table_segments)
                   for split in ("val", "test")]
    if "kernels" in sets:
        exact = [(), *((kernel,) for kernel in INT_VECTOR_KERNELS), INT_VECTOR_KERNELS]
        chosen += [Variant(fmt, bits, (), "val"),  # the chip's own vector unit, for scale
                   *(Variant("int", bits, kernels, "val") for kernels in exact)]
    if "gelu_tables" in sets:
        chosen += [Variant("int", bits, (), "val", n) for n in GELU_TABLE_SIZES]
    if "residual" in sets:
        chosen += [Variant("int", bits, (), split, residual_scale=rule)
                   for rule in ("fitted", "calibrated") for split in ("val", "test")]
    return list(dict.fromkeys(chosen))  # sets overlap (the int unit on validation): measure once


def simulated(backbone: str, recipe: str, shape: dict[str, float],
              overrides: dict[str, object]) -> dict[str, float]:
    """Totals of ``accelsim run`` (the CLI, as a user would call it) for one datapath."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        argv = ["run", "--hw", str(TABLE_HW_CONFIG), "--model", backbone, "--recipe", recipe,
                "--json", str(out)]
        argv += [a for k, v in shape.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        argv += [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
        with contextlib.redirect_stdout(io.StringIO()):
            if accelsim_main(argv) != 0:
                raise AccelsimError(f"accelsim {' '.join(argv)}: the design point is infeasible")
        data = json.loads(out.read_text())
    totals = data["totals"]
    return {"latency_ms": totals["latency_ms"], "energy_uj": totals["energy_uj"],
            "area_mm2": totals["area_mm2"], "vector_area_mm2": data["area_breakdown_mm2"]["vector"]}


def priced(costs: dict[tuple, dict[str, str]], task_name: str, recipe: str,
           variant: Variant) -> dict[str, str]:
    """A row's cost columns (latency, energy, area, vector area; formatted) for ``recipe`` on
    ``variant``'s chip, simulated once per task, recipe and chip and kept in ``costs``: exact
    kernels are a study's knob, priced as their chip."""
    key = (task_name, recipe, tuple(sorted(variant.overrides.items())))
    if key not in costs:
        task = get_task(task_name)
        cost = simulated(task.backbone, recipe, task.input_shape, variant.overrides)
        costs[key] = {"latency_ms": f"{cost['latency_ms']:.4f}",
                      "energy_uj": f"{cost['energy_uj']:.3f}",
                      "area_mm2": f"{cost['area_mm2']:.4f}",
                      "vector_area_mm2": f"{cost['vector_area_mm2']:.4f}"}
    return costs[key]


def repriced(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` with their cost columns simulated anew (:func:`priced`) and ``priced_commit``
    the current commit."""
    costs: dict[tuple, dict[str, str]] = {}
    commit = code_commit()
    return [{**row, **priced(costs, row["task"], row["recipe"],
                             Variant(row["vector_format"], int(row["accumulator_bits"]),
                                     gelu_table_segments=int(row["gelu_table_segments"]),
                                     residual_scale=row["residual_scale"])),
             "priced_commit": commit}
            for row in rows]


def study_rows(task_name: str, recipe: str, seed: int, sets: tuple[str, ...] = VARIANT_SETS,
               gelu_table_segments: int = 0) -> list[dict[str, str]]:
    task = get_task(task_name)
    if not load_recipe(recipe).quantized:
        raise AccelsimError(f"--recipes {recipe}: not compressed, the integer reference does not "
                            "run it; allowed: a quantized recipe of the table")
    model = trained_model(task, recipe, seed)
    int_model = export_int_model(model)
    checkpoint = tensors_sha256(model.state_dict())
    base = load_hw(TABLE_HW_CONFIG)
    commit = code_commit()
    rows = []
    costs: dict[tuple, dict[str, str]] = {}
    for variant in variants(sets, gelu_table_segments):
        chip = chip_datapath(with_overrides(base, variant.overrides),
                             {"exact_kernels": variant.exact_kernels})
        result = evaluate_on_chip(task, model, int_model, variant.split, datapath=chip.datapath)
        cost = priced(costs, task_name, recipe, variant)
        rows.append({
            "task": task_name, "model": task.backbone, "recipe": recipe, "seed": str(seed),
            "split": variant.split, "vector_format": variant.vector_format,
            "accumulator_bits": str(variant.accumulator_bits),
            "exact_kernels": " ".join(variant.exact_kernels),
            "gelu_table_segments": str(variant.gelu_table_segments),
            "residual_scale": variant.residual_scale, "datapath": chip.label,
            "accuracy_pct": f"{result.metric:.2f}",
            "saturated_pct": f"{100 * result.saturations / max(result.accumulators, 1):.4f}",
            **cost, "code_commit": commit, "checkpoint_sha256": checkpoint,
            "priced_commit": commit,
        })  # fmt: skip
        exact = f", exact {' '.join(variant.exact_kernels)}" if variant.exact_kernels else ""
        print(f"[{task_name}/{recipe}/seed{seed}] {chip.label}{exact} ({variant.split}): "
              f"{result.metric:.2f} %, "
              f"{float(cost['energy_uj']):.1f} uJ, {cost['area_mm2']} mm2", flush=True)
    return rows


def _gelu_kernel(row: dict[str, str]) -> str:
    if row["vector_format"] != "int" or "gelu" in row["exact_kernels"].split():
        return "exact erf"
    segments = int(row["gelu_table_segments"])
    return f"table, {segments} segments" if segments else "I-BERT polynomial"


def _residual(row: dict[str, str]) -> str:
    if row["vector_format"] != "int":
        return "float"
    return "exact" if "add" in row["exact_kernels"].split() else row["residual_scale"]


def _provenance(rows: list[dict[str, str]]) -> str:
    """The commits that measured ``rows`` (one study can span several: a datapath added later
    measures the same checkpoint at another commit of the same training code), the checkpoint,
    and where the costs were re-priced."""
    commits = list(dict.fromkeys(r["code_commit"] for r in rows))
    repriced = list(dict.fromkeys(r["priced_commit"] for r in rows
                                  if r["priced_commit"] != r["code_commit"]))
    priced = "".join(f"; costs re-priced at `{c[:7]}`" for c in repriced)
    return (f"Commit{'s' if len(commits) > 1 else ''} "
            + ", ".join(f"`{c}`" for c in commits)
            + f", checkpoint `{rows[0]['checkpoint_sha256'][:16]}`{priced}.")


def _is_int_chip(row: dict[str, str], accumulator_bits: int) -> bool:
    """A test-split row of the table's chip with an ``int`` vector unit a designer can build (no
    exact kernels, the coarser residual scale, the chip's accumulators; GELU from I-BERT's
    polynomial or a table)."""
    return (row["split"] == "test" and row["vector_format"] == "int"
            and not row["exact_kernels"] and row["residual_scale"] == "coarser"
            and row["accumulator_bits"] == str(accumulator_bits))


def _paired(runs: list[tuple[float, ...]], first: int, second: int) -> str:
    return paired_difference([run[first] - run[second] for run in runs])


def int_chip_summary(rows: list[dict[str, str]], results: list[dict[str, str]]) -> list[str]:
    """Per task and recipe, the int vector unit's test accuracy against FP32 and against the
    table's fp16 chip, paired by training run: a study row's checkpoint is found in
    ``results`` (the table row of the same weights, measured on the fp16 chip), whose
    ``parent_sha256`` names its FP32 row. Runs whose table row is gone, or was measured on a
    datapath of the recipe's own (``w4a4_sp24_int_datapath``), are left out."""
    by_checkpoint = {r["checkpoint_sha256"]: r for r in results if r["checkpoint_sha256"]}
    chip = load_hw(TABLE_HW_CONFIG)
    bits = chip.precision.accumulator_bits
    table_chip_label = chip_datapath(chip).label
    groups: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        table_row = by_checkpoint.get(row["checkpoint_sha256"])
        parent = by_checkpoint.get(table_row["parent_sha256"]) if table_row else None
        if (not _is_int_chip(row, bits) or parent is None
                or table_row["datapath"] != table_chip_label):  # a recipe with its own datapath
            continue
        groups.setdefault((row["task"], row["recipe"], _gelu_kernel(row)), []).append(
            (float(row["accuracy_pct"]), float(table_row["accuracy_pct"]),
             float(parent["accuracy_pct"])))
    if not groups:
        return []
    table_unit = chip.vector_unit.format
    lines = [
        "## The integer-only chip against FP32",
        "",
        "Test accuracy on the table's chip with the `int` vector unit (I-BERT kernels, GELU",
        "from I-BERT's polynomial or a table of linear segments, the coarser residual scale,",
        f"{bits}-bit accumulators), beside "
        f"the same weights on the chip's own {table_unit}",
        "vector unit (their `results.csv` row) and the FP32 run they were trained from (that",
        "row's `parent_sha256`), paired by training run (mean ± sample std).",
        "",
        f"| task | recipe | int GELU | runs | FP32 % | {table_unit} chip % | int chip % | "
        f"int vs FP32 | {table_unit} vs FP32 | int vs {table_unit} |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    int_chip, table_chip, fp32 = 0, 1, 2  # positions in a run's accuracies
    for (task, recipe, gelu), runs in sorted(groups.items()):
        means = [mean_and_std([run[i] for run in runs])[0] for i in (fp32, table_chip, int_chip)]
        lines.append(
            f"| {task} | {recipe} | {gelu} | {len(runs)} | " + " | ".join(f"{m:.2f}" for m in means)
            + f" | {_paired(runs, int_chip, fp32)} | {_paired(runs, table_chip, fp32)} | "
            f"{_paired(runs, int_chip, table_chip)} |")
    return [*lines, ""]


def render(rows: list[dict[str, str]], results: list[dict[str, str]] | None = None) -> str:
    lines = [
        "# Accuracy against the chip's datapath",
        "",
        "Generated by `experiments/accuracy/datapath_study.py` from `datapath_study.csv` (do not",
        "edit by hand). Test accuracy of a trained compressed run, measured by the integer",
        "reference on variants of `hw_configs/int4_sparse.yaml` (vector-unit format at its",
        "accumulator width, then accumulator widths with its vector format); latency, energy and",
        "area simulated for the task's backbone at the shape the accuracy is measured at.",
        "`saturated %`: share of GEMM accumulators whose exact sum fell outside the accumulator's",
        "range (clamped). The training ran on the fake-quant model (float32 between GEMMs).",
        "",
    ]
    lines += int_chip_summary(rows, results or [])
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["recipe"], r["seed"]), []).append(r)
    for (task, recipe, seed), mine in groups.items():
        lines += [f"## {task}, {recipe}, seed {seed} (`{mine[0]['model']}`)", ""]
        formats = [r for r in mine if r["split"] == "test" and not r["exact_kernels"]]
        kernels = [r for r in mine if r["split"] == "val"]
        if formats:
            lines += [
                "| vector format | GELU | residual scale | accumulator bits | accuracy % | "
                "saturated % | latency ms | energy uJ | area mm2 | vector area mm2 |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {r['vector_format']} | {_gelu_kernel(r)} | {_residual(r)} | "
                f"{r['accumulator_bits']} | "
                f"{r['accuracy_pct']} | "
                f"{r['saturated_pct']} | {r['latency_ms']} | {r['energy_uj']} | "
                f"{r['area_mm2']} | {r['vector_area_mm2']} |"
                for r in formats
            ]
            lines += ["", _provenance(formats), ""]
        if kernels:
            base = next((r for r in kernels if r["vector_format"] == "int"
                         and not r["exact_kernels"] and r["gelu_table_segments"] == "0"
                         and r["residual_scale"] == "coarser"), None)
            lines += [
                "Where the `int` vector unit loses accuracy (validation split): its kernels "
                "computed exactly, one at a time, then all four; GELU from a table of "
                "linear segments instead of I-BERT's polynomial (priced); the residual add on "
                "the fitted or the calibrated scale.",
                "",
                "| vector unit | GELU | residual scale | exact kernels | accuracy % (val) | "
                "vs int (points) | energy uJ | vector area mm2 |",
                "|---|---|---|---|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {r['vector_format']} | {_gelu_kernel(r)} | {_residual(r)} | "
                f"{r['exact_kernels'] or '-'} | "
                f"{r['accuracy_pct']} | "
                + (f"{float(r['accuracy_pct']) - float(base['accuracy_pct']):+.2f}"
                   if base else "-")
                + f" | {r['energy_uj']} | {r['vector_area_mm2']} |"
                for r in kernels
            ]
            lines += ["", _provenance(kernels), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(BUDGETS))
    parser.add_argument("--recipes", nargs="+")
    parser.add_argument("--reprice", action="store_true",
                        help="re-price every row of the CSV at the current code (module doc)")
    parser.add_argument("--render", action="store_true",
                        help="only re-render datapath_study.md from the CSV and results.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--variants", nargs="+", choices=VARIANT_SETS, default=VARIANT_SETS,
                        help="formats: vector formats and accumulator widths (test split); "
                             "int: the int vector unit alone (validation and test, what a "
                             "recipe scores on the integer-only chip); "
                             "kernels: the int kernels made exact (validation split); "
                             "gelu_tables: table GELUs (validation); residual: the fitted and "
                             "the calibrated residual scales (validation and test)")
    parser.add_argument("--gelu-table-segments", type=int, default=0, metavar="N",
                        help="with --variants int: GELU from an N-segment table (a "
                             "vector_unit.gelu_table_segments value) instead of I-BERT's "
                             "polynomial (default 0: the polynomial)")
    args = parser.parse_args(argv)
    if args.reprice + args.render + bool(args.task or args.recipes) != 1:
        parser.error("give --task and --recipes, or --reprice alone, or --render alone")
    sets = tuple(args.variants)
    if args.gelu_table_segments:
        if "int" not in sets:
            parser.error("--gelu-table-segments sets the GELU of --variants int; add int")
        try:  # the overrides the int set will apply, checked before any model loads
            with_overrides(load_hw(TABLE_HW_CONFIG),
                           variants(("int",), args.gelu_table_segments)[0].overrides)
        except AccelsimError as exc:
            parser.error(f"--gelu-table-segments: {exc}")
    torch.set_num_threads(args.threads)
    old = [{**COLUMN_DEFAULTS, "priced_commit": r["code_commit"], **r}
           for r in read_rows(STUDY_CSV)]
    try:
        if args.reprice:
            old, new = [], repriced(old)
        elif args.render:
            new = []
        else:
            new = [row for recipe in args.recipes
                   for row in study_rows(args.task, recipe, args.seed, sets,
                                         args.gelu_table_segments)]
    except AccelsimError as exc:
        print(f"datapath_study: {exc}", file=sys.stderr)
        return 2
    key = ("task", "recipe", "seed", "split", "datapath", "exact_kernels")
    fresh = {tuple(r[k] for k in key) for r in new}
    kept = [r for r in old if tuple(r[k] for k in key) not in fresh]
    rows = sorted([*kept, *new], key=lambda r: (r["task"], r["recipe"], int(r["seed"])))
    write_csv(STUDY_CSV, COLUMNS, rows)
    write_text_atomic(STUDY_MD, render(rows, read_rows(RESULTS_CSV)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
