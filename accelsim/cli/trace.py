"""``accelsim trace --model M``: trace a zoo model into GEMMs and vector ops."""

from __future__ import annotations

import argparse
from pathlib import Path

from accelsim.files import check_distinct, check_output_path, outputs_together, write_text_atomic

HELP = "trace a zoo model with torch.export into its GEMM/vector-op graph (CSV/JSON export)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo model name (see `accelsim models`)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--seq-len", type=int, help="tokens, BERT family (default from the zoo)")
    parser.add_argument(
        "--image-size", type=int, help="pixels per side, ViT/DINOv2 (default from the zoo)"
    )
    parser.add_argument("--audio-seconds", type=float, help="16 kHz audio length, wav2vec2/Whisper")
    parser.add_argument("--csv", type=Path, help="write the GEMMs as a SCALE-Sim topology CSV")
    parser.add_argument("--json", type=Path, help="write the whole graph as JSON")


def _bits(value: int | None) -> str:
    return "hw" if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    from accelsim.graph.trace_cache import trace_named_model
    from accelsim.graph.verify import verify_graph

    outputs = {option: check_output_path(path, f"--{option}")
               for option, path in (("csv", args.csv), ("json", args.json)) if path is not None}
    check_distinct(outputs)
    graph = trace_named_model(
        args.model,
        batch=args.batch,
        seq_len=args.seq_len,
        image_size=args.image_size,
        audio_seconds=args.audio_seconds,
    )
    verify_graph(graph)
    shape = ", ".join(f"{k}={v}" for k, v in graph.input_shape.items())
    print(f"{graph.name} ({shape}): {len(graph.gemms)} GEMMs, {len(graph.vectors)} vector ops")
    header = ("gemm", "kind", "M", "K", "N", "count", "MMACs", "w/a bits", "sparsity")
    rows = [header]
    for gemm in graph.gemms:
        rows.append(
            (
                gemm.name,
                gemm.kind,
                str(gemm.m),
                str(gemm.k),
                str(gemm.n),
                str(gemm.count),
                f"{gemm.macs / 1e6:.3f}",
                f"{_bits(gemm.weight_bits)}/{_bits(gemm.act_bits)}",
                gemm.sparsity,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    vector_elements = sum(v.total_elements for v in graph.vectors)
    print(f"total: {graph.macs / 1e9:.4f} G MACs, {vector_elements / 1e6:.3f} M vector elements")
    from accelsim.graph.scalesim_io import write_topology_csv

    with outputs_together(list(outputs.values())) as temps:
        for option, tmp in zip(outputs, temps, strict=True):
            if option == "json":
                write_text_atomic(tmp, graph.to_json())
            else:
                write_topology_csv(graph, tmp)
    for path in outputs.values():
        print(f"wrote {path}")
    return 0
