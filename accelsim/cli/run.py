"""``accelsim run``: simulate one model on one hardware design point.

The command is a list of typed steps: load the hardware (plus ``--set`` overrides) -> choose the
compression recipe (``--recipe``, by default the one matching the hardware's native format) ->
build the workload graph (a SCALE-Sim topology CSV, or a zoo model compressed by the recipe and
traced, so its GEMMs carry the real masks and bit widths; with ``--int-model`` the zoo model is
traced uncompressed and its GEMMs take the bits, 2:4 format and densities of an exported integer
model) -> simulate -> print the header, totals and summary (plus accuracy or fidelity with
``--accuracy``) -> write the requested files, all or none. The output paths are checked first,
before any work.
Exit status 1 when the design point is infeasible.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError
from accelsim.files import check_distinct, check_output_path, write_texts_atomic
from accelsim.graph.ir import Graph
from accelsim.hw import HwConfig, load_hw, parse_override, with_overrides

if TYPE_CHECKING:
    from accelsim.compress.export import IntLinear, IntModel
    from accelsim.sim import SimResult

HELP = "simulate a model (zoo name or SCALE-Sim topology CSV) on a hardware config"
AUTO, NONE = "auto", "none"
INT4_SPARSE_RECIPE, INT4_RECIPE = "w4a4_sp24", "w4a4"
INT8_SPARSE_RECIPE, INT8_RECIPE = "w8a8_sp24", "w8a8"
FLOAT_RECIPE = "fp32"  # the recipe whose trained run is the uncompressed model's accuracy
MEASURED_BY = {"integer_reference": "the integer reference", "pytorch_fp32": "PyTorch in FP32"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hw", required=True, metavar="PATH", help="hardware config YAML")
    parser.add_argument("--model", required=True, metavar="NAME|PATH",
                        help="zoo model name (e.g. vit_b16) or a SCALE-Sim topology .csv "
                             "(GEMM or conv format)")
    parser.add_argument("--recipe", default=None, metavar="NAME|PATH|auto|none",
                        help="compression recipe applied to a zoo model before tracing "
                             "(experiments/recipes/<NAME>.yaml or a .yaml path); 'auto' "
                             "(default) picks the hardware's native format: 4-bit with 2:4 "
                             "-> w4a4_sp24, 4-bit -> w4a4, 8-bit -> w8a8, float/16-bit -> none")
    parser.add_argument("--int-model", default=None, metavar="PATH",
                        help="take bit widths, 2:4 sparsity and densities from an exported "
                             "integer model (int_model.npz, or the `accelsim compress --out` "
                             "folder holding it) instead of compressing --model by a recipe")
    parser.add_argument("--accuracy", action="store_true",
                        help="also report the task metric measured by the integer reference "
                             "(models with a trained task run), else the fidelity of the "
                             "compressed vs the FP model on generated inputs")
    parser.add_argument("--batch", type=int, default=1, help="batch size (zoo models)")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (text)")
    parser.add_argument("--image-size", type=int, default=None, help="image side (vision)")
    parser.add_argument("--audio-seconds", type=float, default=None, help="clip length (audio)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field by dotted path, e.g. array.rows=32 "
                             "(repeatable)")
    parser.add_argument("--scalesim-compat", action="store_true",
                        help="SCALE-Sim 3.0.0 compute-cycle formulas with ideal memory "
                             "(and array.pipelined_folds=false: SCALE-Sim's folds do not "
                             "overlap)")
    parser.add_argument("--layers", action="store_true",
                        help="print every layer (one line each) instead of the summary of the "
                             "costliest layer groups; --json and --csv always hold every layer")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the per-layer table as CSV")
    # --- decoder phases: accelsim.cli.run_phase ---
    from accelsim.cli.run_phase import add_phase_arguments

    add_phase_arguments(parser)


def load_hardware(path: str, overrides: list[str],
                  scalesim_compat: bool) -> tuple[HwConfig, dict[str, object]]:
    """The design point and the overrides applied to its YAML (``--scalesim-compat`` is
    ``ideal_memory=True`` and, unless given, ``array.pipelined_folds=False``), which the outputs
    record."""
    changes = dict(parse_override(text) for text in overrides)
    if scalesim_compat:
        changes["ideal_memory"] = True
        # SCALE-Sim's array has no shadow registers; an explicit true is refused by simulate.
        changes.setdefault("array.pipelined_folds", False)
    return with_overrides(load_hw(path), changes), changes


# ---------------------------------------------------------------------------------------------
# Recipe choice
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeChoice:
    """``recipe``: a recipe name or path, or ``None`` for the uncompressed model."""

    recipe: str | None
    reason: str


def native_recipe(hw: HwConfig) -> RecipeChoice:
    """The shipped recipe whose format the hardware executes natively.

    Integer MACs of <= 4 bits (weights and activations) -> ``w4a4``, <= 8 bits -> ``w8a8``
    (``_sp24`` variants when the array has the 2:4 skipping datapath); float or wider MACs -> no
    compression, since every recipe quantizes to integers and a float array gains nothing.
    """
    p = hw.precision
    native = f"{p.kind}{p.weight_bits} weights x {p.kind}{p.act_bits} activations"
    widest = max(p.weight_bits, p.act_bits)
    if p.kind != "int" or widest > 8:
        return RecipeChoice(None, f"auto: {native} -> none: the recipes quantize to 4- or 8-bit "
                                  "integers, which a float or wide datapath does not exploit")
    if widest <= 4:
        if hw.sparsity.support == "2:4":
            return RecipeChoice(INT4_SPARSE_RECIPE,
                                f"auto: {native} with 2:4 skipping -> {INT4_SPARSE_RECIPE}")
        return RecipeChoice(INT4_RECIPE, f"auto: {native}, no 2:4 support -> {INT4_RECIPE}")
    if hw.sparsity.support == "2:4":
        return RecipeChoice(INT8_SPARSE_RECIPE,
                            f"auto: {native} with 2:4 skipping -> {INT8_SPARSE_RECIPE}")
    return RecipeChoice(INT8_RECIPE, f"auto: {native}, no 2:4 support -> {INT8_RECIPE}")


def choose_recipe(requested: str | None, hw: HwConfig) -> RecipeChoice:
    """``--recipe`` as given (``None`` = not given = ``auto``) resolved against the hardware."""
    if requested is None or requested == AUTO:
        return native_recipe(hw)
    if requested == NONE:
        return RecipeChoice(None, "--recipe none: uncompressed, GEMMs at the hardware's precision")
    return RecipeChoice(requested, "--recipe")


def is_topology_csv(model: str) -> bool:
    return model.lower().endswith(".csv")


def load_workload(model: str, *, recipe: str | None, batch: int, seq_len: int | None,
                  image_size: int | None, audio_seconds: float | None) -> Graph:
    if is_topology_csv(model):
        from accelsim.graph.scalesim_io import read_topology_csv

        return read_topology_csv(Path(model))
    try:
        import accelsim.graph.trace_cache  # noqa: F401  (workload_graph imports it lazily)
        from accelsim.graph.workload import workload_graph
    except ImportError as exc:
        raise AccelsimError(f"--model {model}: zoo models need accelsim.graph.trace_cache, which "
                            f"failed to import ({exc}); pass a SCALE-Sim topology .csv") from None
    return workload_graph(model, recipe=recipe, batch=batch, seq_len=seq_len,
                          image_size=image_size, audio_seconds=audio_seconds)


@dataclass(frozen=True)
class IntModelWorkload:
    """The graph annotated from an exported integer model, and which IntModel layer each
    matched GEMM node runs (for the stored-vs-simulated weight bytes report)."""

    path: Path
    graph: Graph
    int_model: IntModel
    linears: dict[str, IntLinear]


def int_model_path(given: str) -> Path:
    path = Path(given)
    return path / "int_model.npz" if path.is_dir() else path


def load_int_model_workload(given: str, model: str, *, batch: int, seq_len: int | None,
                            image_size: int | None,
                            audio_seconds: float | None) -> IntModelWorkload:
    """Trace zoo ``model`` uncompressed and set its GEMMs from the int model at ``given``."""
    from accelsim.compress.export import load_int_model
    from accelsim.graph.intmodel import graph_from_int_model, matched_linears

    if is_topology_csv(model):
        raise AccelsimError(f"--int-model {given}: needs a zoo --model to trace, not the "
                            f"topology CSV {model!r}")
    path = int_model_path(given)
    try:
        int_model = load_int_model(path)
    except OSError as exc:
        raise AccelsimError(f"--int-model {path}: cannot read ({exc.strerror})") from None
    except (ValueError, KeyError):
        raise AccelsimError(f"--int-model {path}: not an integer model (the int_model.npz that "
                            "`accelsim compress --out DIR` writes)") from None
    traced = load_workload(model, recipe=None, batch=batch, seq_len=seq_len,
                           image_size=image_size, audio_seconds=audio_seconds)
    graph = graph_from_int_model(traced, int_model)
    return IntModelWorkload(path, graph, int_model, matched_linears(graph, int_model))


def weight_bytes_report(result: SimResult, workload: IntModelWorkload) -> list[dict[str, Any]]:
    """Per matched layer: the weight bytes the simulator charges for one copy of the weight
    (``memory.Operands.b_bytes``: k x n x stored bits per dense position) vs the packed bytes
    the IntModel stores (values + indices for 2:4, packed codes for dense)."""
    from accelsim.graph.intmodel import stored_weight_bytes
    from accelsim.sim import sparse

    rows = []
    for layer in result.layers:
        saved = workload.linears.get(layer.name)
        if saved is None or layer.weight_bits is None:
            continue
        bits = sparse.weight_bits_per_element(layer.weight_bits, layer.skipping)
        rows.append({
            "name": layer.name, "int_model_layer": saved.name, "sparsity": saved.sparsity,
            "weight_bits": saved.weight_bits, "density": saved.density,
            "skipping": layer.skipping, "simulated_weight_bytes": layer.k * layer.n * bits / 8,
            "stored_weight_bytes": stored_weight_bytes(saved),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Accuracy / fidelity
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyReport:
    """What ``--accuracy`` adds: printed lines and fields merged into the JSON ``totals``."""

    lines: tuple[str, ...]
    fields: dict[str, Any]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _not_available(why: str) -> AccuracyReport:
    return AccuracyReport((f"  accuracy    not available: {why}",),
                          {"accuracy": None, "accuracy_metric": None, "accuracy_note": why})


def match_accuracy_shape(model: str, shape: dict[str, Any]) -> str | None:
    """With ``--accuracy``, simulate at the input shape the accuracy is measured at: fill
    ``shape`` with the model's task shape unless the user gave one; the line saying which."""
    if is_topology_csv(model):
        return None
    from accelsim.tasks import get_task, task_for_model

    task_name = task_for_model(model)
    if task_name is None:
        return None
    measured = get_task(task_name).input_shape
    at = ", ".join(f"{key} {value:g}" for key, value in measured.items())
    given = {key: shape[key] for key in SHAPE_KEYS if shape[key] is not None}
    if given:
        mine = ", ".join(f"{key} {value:g}" for key, value in given.items())
        return (f"shape   {mine} (given; the {task_name} accuracy below is measured at {at}, "
                "so latency and energy are for another input than the accuracy)")
    shape.update(measured)
    return (f"shape   {at} (the input the {task_name} accuracy is measured at; --seq-len, "
            "--image-size or --audio-seconds simulates another)")


SHAPE_KEYS = ("seq_len", "image_size", "audio_seconds")
# The trained run `run --accuracy` measures; experiments/accuracy/results.md also averages
# the other seeds where they were trained.
ACCURACY_SEED = 0


def accuracy_report(model: str, choice: RecipeChoice, hw: HwConfig) -> AccuracyReport:
    """Measure (never look up) the task metric or, for a model without a task, the fidelity,
    with the integer reference executing ``hw``'s datapath."""
    if is_topology_csv(model):
        return _not_available("a topology CSV has shapes but no weights to evaluate")
    from accelsim.accuracy import accuracy_for
    from accelsim.tasks import get_task, task_for_model

    recipe = choice.recipe if choice.recipe is not None else FLOAT_RECIPE
    task_name = task_for_model(model)
    if task_name is None and choice.recipe is None:
        why = (f"model {model!r} has no task with real data and weights, and the uncompressed "
               "model is its own FP reference, so there is no fidelity to measure either")
        return _not_available(why)
    try:
        result = accuracy_for(model, recipe, seed=ACCURACY_SEED, hw=hw)
    except AccelsimError as exc:
        return _not_available(str(exc).removeprefix("accuracy: "))
    if result.accuracy_pct is not None:
        metric = get_task(task_name).metric_name if task_name else "accuracy_pct"
        how = MEASURED_BY.get(result.measured_by, result.measured_by)
        line = (f"  accuracy    {result.accuracy_pct:.2f} % ({metric} on the {result.task} test "
                f"split, recipe {result.recipe}, training seed {ACCURACY_SEED}, measured by "
                f"{how}" + (f" on the datapath {result.datapath}" if result.datapath else "")
                + ")")
        return AccuracyReport((line,), {"accuracy": result.accuracy_pct, "accuracy_metric": metric,
                                        "accuracy_task": result.task,
                                        "accuracy_seed": ACCURACY_SEED,
                                        "accuracy_measured_by": result.measured_by,
                                        "accuracy_datapath": result.datapath or None})
    fid = result.fidelity
    if fid is None:
        return _not_available(result.note or "the accuracy pipeline returned no measurement")
    lines = (
        f"  accuracy    not available: {result.note}",
        f"  fidelity    top-1 agreement {fid.top1_agreement_pct:.1f} %, output SQNR "
        f"{fid.sqnr_db:.1f} dB ({recipe} vs FP32, {fid.num_examples} generated inputs of the "
        "zoo's default shape"
        + (f", integer reference on the datapath {result.datapath}" if result.datapath else "")
        + ")",
    )
    return AccuracyReport(lines, {
        "accuracy": None, "accuracy_metric": None, "accuracy_note": result.note,
        "fidelity": {"top1_agreement_pct": fid.top1_agreement_pct,
                     "sqnr_db": _finite(fid.sqnr_db), "num_examples": fid.num_examples},
        "accuracy_datapath": result.datapath or None,
    })


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def header_lines(model: str, graph: Graph, choice: RecipeChoice,
                 explicit_recipe: bool) -> list[str]:
    shape = ", ".join(f"{key} {value}" for key, value in graph.input_shape.items())
    lines = [f"model   {graph.name}" + (f" ({shape})" if shape else "")]
    if is_topology_csv(model):
        if explicit_recipe:
            lines.append("recipe  --recipe does not apply to a topology CSV (its sparsity column "
                         "marks 2:4 layers; bit widths are the hardware's)")
    else:
        lines.append(f"recipe  {choice.recipe or NONE} ({choice.reason})")
    return lines


def skipping_speedup_line(result: SimResult, graph: Graph, hw: HwConfig,
                          scalesim_compat: bool) -> str | None:
    """Cycles of the same graph with skipping switched off over the cycles with it (measured by
    a second simulation), when any layer skipped."""
    from accelsim.sim import simulate

    if not result.feasible or not any(layer.skipping for layer in result.layers):
        return None
    dense_hw = with_overrides(hw, {"sparsity.support": "none"})
    dense = simulate(graph, dense_hw, scalesim_compat=scalesim_compat)
    if not dense.feasible:
        return None
    ratio = dense.totals.cycles / result.totals.cycles
    return (f"  2:4 speedup {ratio:.2f}x ({dense.totals.cycles:,} cycles for the same weights "
            "without skipping)")


def run(args: argparse.Namespace) -> int:
    outputs = {option: check_output_path(path, f"--{option}")
               for option, path in (("json", args.json), ("csv", args.csv)) if path}
    check_distinct(outputs)
    from accelsim.report import tables
    from accelsim.sim import simulate

    hw, overrides = load_hardware(args.hw, args.overrides, args.scalesim_compat)
    # --- decoder phases: accelsim.cli.run_phase ---
    from accelsim.cli.run_phase import run_phase, wants_phase

    if wants_phase(args):
        return run_phase(args, hw, overrides)
    shape = {"batch": args.batch, "seq_len": args.seq_len, "image_size": args.image_size,
             "audio_seconds": args.audio_seconds}
    shape_line = None
    if args.accuracy:
        shape_line = match_accuracy_shape(args.model, shape)
    workload = None
    if args.int_model is not None:
        if args.recipe is not None:
            raise AccelsimError(f"--recipe {args.recipe} and --int-model {args.int_model}: "
                                "give one; the int model already fixes the compression")
        workload = load_int_model_workload(args.int_model, args.model, **shape)
        graph = workload.graph
        choice = RecipeChoice(workload.int_model.recipe, f"--int-model {workload.path}")
    else:
        choice = choose_recipe(args.recipe, hw)
        graph = load_workload(args.model, recipe=choice.recipe, **shape)
    result = simulate(graph, hw, scalesim_compat=args.scalesim_compat)
    print("\n".join(header_lines(args.model, graph, choice, args.recipe is not None)))
    if shape_line:
        print(shape_line)
    print()
    if not result.feasible:
        # The reason is the outcome here: stderr, where a script's failure output goes.
        print(tables.format_totals(result, overrides), file=sys.stderr)
    else:
        if args.layers:
            print(tables.format_layer_table(result))
            print()
        print(tables.format_totals(result, overrides))
        speedup = skipping_speedup_line(result, graph, hw, args.scalesim_compat)
        if speedup:
            print(speedup)
    report = accuracy_report(args.model, choice, hw) if args.accuracy else None
    if report is not None:
        print("\n".join(report.lines))
    if result.feasible and not args.layers:
        print()
        print(tables.format_highlights(result, hw))
        print()
        print(f"{len(result.layers)} layers in all: every one with --layers, --json or --csv")
    texts: dict[Path, str] = {}
    if "json" in outputs:
        data = tables.result_json(result, tables.hw_record(hw, overrides))
        if not is_topology_csv(args.model):
            data["recipe"] = choice.recipe or NONE
        if report is not None:
            data["totals"].update(report.fields)
        if workload is not None:
            data["int_model"] = {"path": str(workload.path), "recipe": workload.int_model.recipe,
                                 "layers": weight_bytes_report(result, workload)}
        texts[outputs["json"]] = tables.json_text(data)
    if "csv" in outputs:
        texts[outputs["csv"]] = tables.csv_text(result)
    write_texts_atomic(texts)
    return 0 if result.feasible else 1
