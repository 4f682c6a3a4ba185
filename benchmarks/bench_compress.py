"""Cold-cache cost of a compressed workload graph, stage by stage.

``accelsim run --model vit_b16`` on 4-bit hardware builds the zoo model (seeded random init),
applies the recipe (``apply_recipe``: QuantLinear swap, 2:4 masks, SAWB steps; built for tracing
only, each layer's weights freed once its precision is read, where no calibration forward
follows), calibrates the activation clips on one generated batch (``calibrate``; where
calibration would set nothing but clips, the quantizers are only activated, as
``workload_graph`` does) and traces the compressed
model (``trace_named_model(..., model=compressed)``: torch.export + the graph walk). This script
times those four stages (process CPU seconds and wall seconds) for each model, with the trace
caches pointed at a fresh temporary folder so nothing is reused, and prints the GEMM/vector node
counts of the graph as a sanity check. The plain (uncompressed, meta-device) trace is timed too: the
compressed trace's ratio to it is the overhead the quantizers add to torch.export.

Usage (repository root)::

    python benchmarks/bench_compress.py [--models vit_b16,bert_base] [--recipe w4a4_sp24]
        [--profile STAGE]

``--profile build|apply|calibrate|trace`` prints the top cProfile entries of that stage.
Goal: build + apply + calibrate + trace of vit_b16 under ~15 s CPU on one thread.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STAGES = ("build", "apply", "calibrate", "trace")


@dataclass(frozen=True)
class StageTime:
    cpu_s: float
    wall_s: float


def _timed(fn: Callable[[], Any], profile: bool) -> tuple[Any, StageTime]:
    profiler = cProfile.Profile() if profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = fn()
    if profiler is not None:
        profiler.disable()
    elapsed = StageTime(time.process_time() - cpu0, time.perf_counter() - wall0)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return result, elapsed


def bench_model(name: str, recipe_name: str, profile: str | None) -> dict[str, StageTime]:
    import torch

    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate, clips_only_calibration
    from accelsim.graph import trace_cache
    from accelsim.graph.workload import _CalibrationBatch, load_workload_recipe

    recipe = load_workload_recipe(recipe_name)
    times: dict[str, StageTime] = {}
    net, times["build"] = _timed(lambda: zoo.build_model(name, seed=0), profile == "build")
    # As workload_graph: without a calibration forward the model is built for tracing only.
    clips_only = clips_only_calibration(recipe)
    _, times["apply"] = _timed(lambda: apply_recipe(net, recipe, for_trace=clips_only),
                               profile == "apply")
    if clips_only:  # as workload_graph: no forward, the same graph
        _, times["calibrate"] = _timed(lambda: calibrate(net, [], recipe),
                                       profile == "calibrate")
    else:
        batch = _CalibrationBatch(zoo.example_inputs(name, seed=0), torch.zeros(0))
        _, times["calibrate"] = _timed(lambda: calibrate(net, [batch], recipe),
                                       profile == "calibrate")
    trace_cache.clear_memory_cache()
    graph, times["trace"] = _timed(lambda: trace_cache.trace_named_model(name, model=net.eval()),
                                   profile == "trace")
    trace_cache.clear_memory_cache()
    _, times["plain trace"] = _timed(lambda: trace_cache.trace_named_model(name), False)
    gemms = sum(1 for n in graph.nodes if n.__class__.__name__ == "GemmNode")
    print(f"{name}: {gemms} GEMM nodes, {len(graph.nodes) - gemms} vector nodes")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_b16,bert_base")
    parser.add_argument("--recipe", default="w4a4_sp24")
    parser.add_argument("--profile", choices=STAGES, default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ACCELSIM_CACHE"] = cache  # cold traces: nothing reused from earlier runs
        for name in args.models.split(","):
            times = bench_model(name, args.recipe, args.profile)
            total = sum(times[s].cpu_s for s in STAGES)
            print(f"{'stage':<12} {'cpu_s':>7} {'wall_s':>7}")
            for stage, t in times.items():
                print(f"{stage:<12} {t.cpu_s:7.2f} {t.wall_s:7.2f}")
            ratio = times["trace"].cpu_s / max(times["plain trace"].cpu_s, 1e-9)
            print(f"{'total':<12} {total:7.2f}   (build+apply+calibrate+trace CPU)")
            print(f"compressed/plain trace CPU ratio: {ratio:.2f}x\n")


if __name__ == "__main__":
    main()
