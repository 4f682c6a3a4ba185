"""Sweep throughput: ViT-B/16 design points per minute, each recipe's graph built once.

Runs a 10,000-point random sweep (array shape, dataflow, three SRAM sizes, DRAM bandwidth, three
precision/sparsity variants) into a fresh store with the real simulator, on N local worker
processes (default 2), and prints the rate, the goal (>= 10,000 points/minute on 2 cores) and where
the time went. Usage: ``python benchmarks/bench_sweep.py [--points N] [--workers N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_POINTS_PER_MIN = 10_000
SWEEP = """\
version: 1
name: bench_vit_b16
hw: {hw}
models: [vit_b16]
variants:
  int8_dense: {{recipe: w8a8, set: {{precision.weight_bits: 8, precision.act_bits: 8,
                                    precision.accumulator_bits: 32, sparsity.support: none}}}}
  int4_dense: {{recipe: w4a4, set: {{sparsity.support: none}}}}
  int4_sp24: {{recipe: w4a4_sp24, set: {{sparsity.support: "2:4"}}}}
random:
  samples: {samples}
  seed: 0
  fields:
    array.rows: {{choice: [8, 16, 32, 64, 128, 256]}}
    array.cols: {{choice: [8, 16, 32, 64, 128, 256]}}
    array.dataflow: {{choice: [os, ws, is]}}
    sram.weights.size_kib: {{loguniform: [32, 8192], multiple_of: 32}}
    sram.inputs.size_kib: {{loguniform: [32, 8192], multiple_of: 32}}
    sram.outputs.size_kib: {{loguniform: [32, 4096], multiple_of: 32}}
    dram.bandwidth_gbps: {{loguniform: [8, 512]}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from accelsim.dse.runner import run_sweep, workload_model_graph
    from accelsim.dse.space import ModelSpec, named_recipe
    from accelsim.dse.store import load_results
    from accelsim.dse.sweepfile import load_sweep

    # The compressed graphs (disk-cached after the first run), timed apart from the sweep.
    start = time.perf_counter()
    graphs = {name: workload_model_graph(ModelSpec("vit_b16"), named_recipe(name))
              for name in ("w8a8", "w4a4", "w4a4_sp24")}
    trace_s = time.perf_counter() - start
    graph = graphs["w4a4_sp24"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        samples = -(-args.points // 3)
        path.write_text(SWEEP.format(hw=REPO / "hw_configs" / "int4_sparse.yaml",
                                     samples=samples))
        spec = load_sweep(path)
        marks: list[float] = []
        start = time.perf_counter()
        summary = run_sweep(
            spec, Path(tmp) / "bench.sqlite", workers=args.workers,
            graph_fn=lambda _model, recipe: graphs[recipe.name],
            progress=lambda done, total: marks.append(time.perf_counter()),
        )
        total_s = time.perf_counter() - start
        frame = load_results(Path(tmp) / "bench.sqlite")
    setup_s = marks[0] - start
    rate = summary.evaluated / total_s * 60
    print(f"ViT-B/16 ({graph.macs / 1e9:.2f} GMACs, {len(graph.nodes)} nodes), 3 recipes "
          f"compressed + traced in {trace_s:.1f} s (disk cache makes reruns fast)")
    print(f"{summary.evaluated} design points on {args.workers} worker processes in "
          f"{total_s:.1f} s (setup: points, keys, store {setup_s:.1f} s; evaluate + store "
          f"{total_s - setup_s:.1f} s); {int(frame['feasible'].sum())} feasible")
    print(f"rate: {rate:,.0f} points/minute; goal >= {GOAL_POINTS_PER_MIN:,} "
          f"-> {rate / GOAL_POINTS_PER_MIN:.2f}x the goal (1-minute load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
