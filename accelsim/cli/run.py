"""``accelsim run``: simulate one model on one hardware design point.

The command is a list of typed steps: load the hardware (plus ``--set`` overrides) -> build the
workload graph (a SCALE-Sim topology CSV or a traced zoo model) -> simulate -> print the table and
totals -> write the requested files. Exit status 1 when the design point is infeasible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from accelsim.errors import AccelsimError
from accelsim.graph.ir import Graph
from accelsim.hw import HwConfig, load_hw, parse_override, with_overrides

HELP = "simulate a model (zoo name or SCALE-Sim topology CSV) on a hardware config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hw", required=True, metavar="PATH", help="hardware config YAML")
    parser.add_argument("--model", required=True, metavar="NAME|PATH",
                        help="zoo model name (e.g. vit_b16) or a SCALE-Sim GEMM topology .csv")
    parser.add_argument("--batch", type=int, default=1, help="batch size (zoo models)")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (text)")
    parser.add_argument("--image-size", type=int, default=None, help="image side (vision)")
    parser.add_argument("--audio-seconds", type=float, default=None, help="clip length (audio)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field by dotted path, e.g. array.rows=32 "
                             "(repeatable)")
    parser.add_argument("--scalesim-compat", action="store_true",
                        help="SCALE-Sim 3.0.0 compute-cycle formulas with ideal memory")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the per-layer table as CSV")


def load_hardware(path: str, overrides: list[str], scalesim_compat: bool) -> HwConfig:
    hw = load_hw(path)
    changes = dict(parse_override(text) for text in overrides)
    if scalesim_compat:
        changes["ideal_memory"] = True
    return with_overrides(hw, changes)


def load_workload(model: str, *, batch: int, seq_len: int | None, image_size: int | None,
                  audio_seconds: float | None) -> Graph:
    if model.lower().endswith(".csv"):
        from accelsim.graph.scalesim_io import read_topology_csv

        return read_topology_csv(Path(model))
    try:
        from accelsim.graph.trace import trace_named_model
    except ImportError as exc:
        raise AccelsimError(f"--model {model}: zoo models need accelsim.graph.trace, which "
                            f"failed to import ({exc}); pass a SCALE-Sim topology .csv") from None
    return trace_named_model(model, batch=batch, seq_len=seq_len, image_size=image_size,
                             audio_seconds=audio_seconds)


def run(args: argparse.Namespace) -> int:
    from accelsim.report import tables
    from accelsim.sim import simulate

    hw = load_hardware(args.hw, args.overrides, args.scalesim_compat)
    graph = load_workload(args.model, batch=args.batch, seq_len=args.seq_len,
                          image_size=args.image_size, audio_seconds=args.audio_seconds)
    result = simulate(graph, hw, scalesim_compat=args.scalesim_compat)
    if result.feasible:
        print(tables.format_layer_table(result))
        print()
    print(tables.format_totals(result))
    if args.json:
        tables.write_json(result, args.json)
    if args.csv:
        tables.write_csv(result, args.csv)
    return 0 if result.feasible else 1
