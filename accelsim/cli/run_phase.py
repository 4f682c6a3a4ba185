"""``accelsim run --phase prefill|decode|generate``: a decoder's phases on one design point.

Steps: check the phase's shape options against the model (``zoo.decoders``) -> choose the
recipe as ``run`` does (by default the hardware's native format) -> trace the phase graphs
(``graph.decoder_trace``, meta device) -> give them the recipe's widths (``graph.phases``:
nominal, 2:4 layers at the nominal density 0.5), or with ``--int-model F`` a compressed
decoder's real ones (:func:`phase_graph_from_int_model`: each layer's stored format and measured
density, the KV cache at its quantizers' width) -> simulate (``sim.generation``) -> print and
write JSON / CSV.

* ``prefill``: one pass over ``--prompt-len`` tokens; its latency is the time to first token.
* ``decode``: one step over a KV cache of ``--context`` positions, plus the batch where decoding
  turns compute-bound (found on the step's graph at other batches, affine in the batch from
  two traces).
* ``generate``: the prefill plus ``--gen-len - 1`` decode steps, each simulated at its own
  context (step graphs affine in the context from two traces).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim.errors import AccelsimError
from accelsim.files import write_texts_atomic
from accelsim.hw import HwConfig

if TYPE_CHECKING:
    from accelsim.compress.export import IntModel
    from accelsim.graph.phases import DecoderPrecision, PhaseGraph
    from accelsim.sim import SimResult

PHASE_CHOICES = ("prefill", "decode", "generate")
CROSSOVER_MAX_BATCH = 4096
_ENCODER_SHAPE_OPTIONS = ("seq_len", "image_size", "audio_seconds")
_PHASE_SHAPE_OPTIONS = ("prompt_len", "context", "gen_len")


def add_phase_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phase", choices=PHASE_CHOICES, default=None,
                        help="decoder models: simulate the prefill, one decode step over a KV "
                             "cache, or a whole generation (prefill + decode steps)")
    parser.add_argument("--prompt-len", type=int, default=None,
                        help="prompt tokens (prefill, generate; default the model's seq_len)")
    parser.add_argument("--context", type=int, default=None,
                        help="tokens in the KV cache before the decode step (default seq_len)")
    parser.add_argument("--gen-len", type=int, default=None,
                        help="generated tokens (generate; default the model's gen_len)")


def wants_phase(args: argparse.Namespace) -> bool:
    """``--phase`` given, or a phase option, or a zoo decoder or speech recognizer (which needs
    a phase)."""
    if args.phase is not None or any(getattr(args, key) is not None
                                     for key in _PHASE_SHAPE_OPTIONS):
        return True
    from accelsim.cli.run import is_topology_csv
    from accelsim.zoo.decoders import needs_phase

    return not is_topology_csv(args.model) and needs_phase(args.model)


def _check_options(args: argparse.Namespace) -> str:
    """The phase, once the options that do not combine with a phase are ruled out."""
    if args.phase is None:
        given = [key for key in _PHASE_SHAPE_OPTIONS if getattr(args, key) is not None]
        what = (f"--{given[0].replace('_', '-')} needs --phase" if given
                else f"decoder model {args.model} needs --phase")
        raise AccelsimError(f"{what} (allowed: {', '.join(PHASE_CHOICES)})")
    for key in _ENCODER_SHAPE_OPTIONS:
        if getattr(args, key) is not None:
            flag = "--" + key.replace("_", "-")
            raise AccelsimError(f"{flag} {getattr(args, key)} does not apply to --phase "
                                f"{args.phase} (its shape options: --batch, --prompt-len, "
                                "--context, --gen-len)")
    if args.accuracy:
        raise AccelsimError(f"--accuracy does not apply to --phase {args.phase} (no decoder "
                            "accuracy task; `accelsim verify --phase` checks the integer "
                            "reference's generation)")
    if args.int_model is not None and args.recipe is not None:
        raise AccelsimError(f"--recipe {args.recipe} and --int-model {args.int_model}: give "
                            "one; the int model already fixes the compression")
    if args.scalesim_compat:
        # The phase passes are simulated with accelsim's own cycle model; half of the option
        # (ideal memory only) would be a number SCALE-Sim never computes.
        raise AccelsimError(f"--scalesim-compat does not apply to --phase {args.phase} "
                            "(SCALE-Sim has no decoder phases)")
    if args.phase == "generate":
        for flag, given in (("--csv", args.csv), ("--layers", args.layers)):
            if given:
                raise AccelsimError(f"{flag} does not apply to --phase generate (a per-layer "
                                    "table is one pass: use --phase prefill or decode)")
    return args.phase


def decoder_precision(recipe_name: str | None) -> DecoderPrecision | None:
    """The widths a recipe gives a decoder, or ``None`` (uncompressed: the hardware's)."""
    from accelsim.graph.phases import DecoderPrecision
    from accelsim.graph.workload import load_workload_recipe

    if recipe_name is None:
        return None
    recipe = load_workload_recipe(recipe_name)
    if not recipe.quantized:
        return None
    return DecoderPrecision.from_rules(recipe, attention_bits=recipe.attention_bits,
                                       kv_bits=recipe.kv_bits or recipe.attention_bits)


def phase_graph_from_int_model(phase_graph: PhaseGraph, int_model: IntModel) -> PhaseGraph:
    """The phase graph at a compressed decoder's real precision.

    The structure is the one its recipe gives the traced decoder (``with_precision``: one
    requantize per quantized operand, wired between its producer and the GEMM, and one per KV
    write right after the projection that computes the new positions). Then every linear (the
    LM head included) takes its layer's widths, stored format and measured density, each
    attention matmul its quantizers' widths, and each cache tensor the width of the GEMM operand
    that reads it; the GEMMs of its float layers (a recognizer's convolutional front end) run
    on the host.
    """
    from accelsim.graph.intmodel import attention_matmul_bits, matched_linears, with_host_layers
    from accelsim.graph.ir import GemmNode
    from accelsim.graph.phases import with_precision

    precision = decoder_precision(int_model.recipe)
    nominal = phase_graph if precision is None else with_precision(phase_graph, precision)
    nominal = dataclasses.replace(nominal, graph=with_host_layers(nominal.graph,
                                                                  int_model.float_layers))
    weight_gemms = [node.name for node in nominal.graph.gemms
                    if not (node.weight_is_activation or node.on_host)]
    matched = matched_linears(nominal.graph, int_model)
    missing = [name for name in weight_gemms if name not in matched]
    if missing:
        raise AccelsimError(
            f"int model ({int_model.family}, recipe {int_model.recipe}): {len(missing)} of the "
            f"{len(weight_gemms)} linears of {phase_graph.graph.name} (e.g. {missing[0]!r}) have "
            "no layer in it; allowed: an int model of this decoder, every linear compressed")
    seen: dict[str, int] = {}
    nodes = []
    for node in nominal.graph.nodes:
        if isinstance(node, GemmNode) and node.name in matched:
            layer = matched[node.name]
            node = dataclasses.replace(node, weight_bits=layer.weight_bits,
                                       act_bits=layer.act.bits, sparsity=layer.sparsity,
                                       weight_density=layer.density)
        elif isinstance(node, GemmNode) and node.weight_is_activation:
            node = attention_matmul_bits(node, int_model, seen)
        nodes.append(node)
    graph = dataclasses.replace(nominal.graph, nodes=tuple(nodes))
    readers = {node.name: node for node in nodes if isinstance(node, GemmNode)}
    kv = tuple(dataclasses.replace(t, bits=readers[t.read_by].weight_bits)
               for t in nominal.kv_cache)
    return dataclasses.replace(nominal, graph=graph, kv_cache=kv)


def _load_int_model(given: str) -> tuple[Path, IntModel]:
    from accelsim.cli.run import int_model_path
    from accelsim.compress.export import load_int_model

    path = int_model_path(given)
    try:
        return path, load_int_model(path)
    except OSError as exc:
        raise AccelsimError(f"--int-model {path}: cannot read ({exc.strerror})") from None
    except (ValueError, KeyError):
        raise AccelsimError(f"--int-model {path}: not an integer model (the .npz that "
                            "`accelsim verify --phase ... --int-model-out F` writes)") from None


def run_phase(args: argparse.Namespace, hw: HwConfig, overrides: dict[str, object]) -> int:
    from accelsim.cli.run import RecipeChoice, choose_recipe, header_lines
    from accelsim.graph.decoder_trace import trace_phase
    from accelsim.graph.phases import affine_in, with_precision
    from accelsim.report import phases as report
    from accelsim.report import tables
    from accelsim.sim import generation as gen
    from accelsim.zoo.decoders import resolve_phase_shape

    phase = _check_options(args)
    shape = resolve_phase_shape(args.model, phase, batch=args.batch, prompt_len=args.prompt_len,
                                context=args.context, gen_len=args.gen_len)
    int_model = None
    if args.int_model is not None:
        int_path, int_model = _load_int_model(args.int_model)
        choice = RecipeChoice(int_model.recipe, f"--int-model {int_path}")
        precision = None
    else:
        choice = choose_recipe(args.recipe, hw)
        precision = decoder_precision(choice.recipe)

    def annotated(graph: PhaseGraph) -> PhaseGraph:
        if int_model is not None:
            return phase_graph_from_int_model(graph, int_model)
        return graph if precision is None else with_precision(graph, precision)

    def family(traced_phase: str, key: str, base: dict[str, int]) -> Callable[[int], PhaseGraph]:
        first = trace_phase(args.model, traced_phase, base)
        second: list[PhaseGraph] = []

        def at(value: int) -> PhaseGraph:
            if value == base[key]:
                return annotated(first)
            if not second:
                second.append(trace_phase(args.model, traced_phase, {**base, key: base[key] + 1}))
            return annotated(affine_in(key, first, second[0], value))

        return at

    widths = (f"{int_model.recipe} from --int-model: each layer's stored format and measured "
              "density, KV cache at its quantizers' width" if int_model is not None else
              "the hardware's native widths" if precision is None else
              f"w{precision.weight_bits}a{precision.act_bits}"
              f"{' 2:4 (nominal density 0.5)' if precision.sparsity == '2:4' else ''}, "
              f"attention {precision.attention_bits} bits, KV cache {precision.kv_bits} bits")
    hw_json = tables.hw_record(hw, overrides)
    data: dict = {"model": args.model, "hw": hw_json, "recipe": choice.recipe or "none"}
    try:
        if phase == "generate":
            prefill_shape = {"batch": shape["batch"], "prompt_len": shape["prompt_len"]}
            decode_at = family("decode", "context", {"batch": shape["batch"],
                                                     "context": shape["prompt_len"]})
            prefill = annotated(trace_phase(args.model, "prefill", prefill_shape))
            result = gen.simulate_generation(prefill, decode_at, shape["gen_len"], hw)
            graph_for_header = dataclasses.replace(prefill.graph, name=f"{args.model}.generate",
                                                   input_shape=shape)
            cost = result.prefill
            lines = [*report.generation_lines(result), *report.metrics_lines(result.metrics)]
            data.update(feasible=True, phase=report.generation_json(result),
                        totals={"latency_ms": result.metrics.latency_ms,
                                "energy_uj": result.metrics.energy_uj,
                                "dram_bytes": result.metrics.dram_bytes})
        else:
            at_batch = family(phase, "batch", shape)
            phase_graph = at_batch(shape["batch"])
            graph_for_header = phase_graph.graph
            cost = gen.simulate_pass(phase_graph, hw)
            metrics = (gen.prefill_metrics(cost) if phase == "prefill"
                       else gen.decode_metrics(cost))
            lines = [*report.metrics_lines(metrics),
                     *report.traffic_lines(cost, hw.dram.bandwidth_gbps)]
            phase_data = {**metrics.to_dict(), **cost.to_dict()}
            if phase == "decode":
                crossover = gen.crossover_batch(at_batch, hw, CROSSOVER_MAX_BATCH)
                lines.append(report.crossover_line(crossover, CROSSOVER_MAX_BATCH))
                phase_data["crossover_batch"] = crossover
            data.update(tables.result_json(cost.result, hw_json), phase=phase_data)
    except gen.InfeasiblePass as infeasible:
        # A result, as for encoders: the reason printed and, with --json, written (no phase).
        print(tables.format_totals(infeasible.result, overrides), file=sys.stderr)
        data.update(tables.result_json(infeasible.result, hw_json), phase=None)
        _write_outputs(args, data, infeasible.result)
        return 1
    print("\n".join(header_lines(args.model, graph_for_header, choice, args.recipe is not None)))
    print(f"phase   {phase} ({', '.join(f'{k} {v}' for k, v in shape.items())}); {widths}")
    print()
    if phase != "generate":
        if args.layers:
            print(tables.format_layer_table(cost.result))
            print()
        print(tables.format_totals(cost.result, overrides))
        print()
        print(tables.format_highlights(cost.result, hw))
    else:
        print(f"{args.model} generate on {hw.name}")
    print("\n".join(lines))
    data["phase_widths"] = widths
    _write_outputs(args, data, cost.result)
    return 0


def _write_outputs(args: argparse.Namespace, data: dict, result: SimResult) -> None:
    """``--json`` and ``--csv`` (one pass's layers) together or none, as ``run`` writes them
    (their paths were checked before any work)."""
    from accelsim.report import tables

    texts: dict[Path, str] = {}
    if args.json:
        texts[Path(args.json)] = tables.json_text(data)
    if args.csv:
        texts[Path(args.csv)] = tables.csv_text(result)
    write_texts_atomic(texts)
