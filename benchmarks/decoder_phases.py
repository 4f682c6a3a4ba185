"""Full-size decoder phases: peak memory and time of tracing, traced vs analytic MACs, and the
simulator's time per decode step.

Run: ``python benchmarks/decoder_phases.py [--models gpt2,opt_1_3b,llama2_7b]``. Each model's
prefill (default prompt) and decode step (default context) is traced in a fresh interpreter
with an empty trace cache, so its peak resident set size (the child's own ``ru_maxrss``, imports
included) is the trace's: the causal LM is built on the meta device, so no weights are
allocated (goal: ``llama2_7b`` under 2 GB). Then, in this process, one decode step on
``hw_configs/int4_sparse.yaml`` under the w4a4_sp24 widths is simulated repeatedly.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

DEFAULT_MODELS = ("gpt2", "opt_1_3b", "llama2_7b")
GOAL_BYTES = 2 * 1024**3


def child(name: str, phase: str) -> None:
    """Trace one phase and print its figures as JSON (runs in the fresh interpreter)."""
    from accelsim.graph.decoder_trace import trace_phase
    from accelsim.zoo.decoders import phase_macs, resolve_phase_shape

    shape = resolve_phase_shape(name, phase)
    start = time.perf_counter()
    traced = trace_phase(name, phase, shape)
    seconds = time.perf_counter() - start
    peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"shape": shape, "seconds": seconds, "macs": traced.graph.macs,
                      "analytic": phase_macs(name, phase, shape), "peak_bytes": peak_bytes}))


def measure(name: str, phase: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ACCELSIM_CACHE": cache}
        out = subprocess.run([sys.executable, __file__, "--child", name, phase], env=env,
                             check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def step_seconds(name: str, repeats: int = 5) -> float:
    from accelsim.graph.decoder_trace import trace_phase
    from accelsim.graph.phases import DecoderPrecision, with_precision
    from accelsim.hw import load_hw
    from accelsim.sim.generation import simulate_pass
    from accelsim.zoo.decoders import resolve_phase_shape

    shape = resolve_phase_shape(name, "decode")
    step = with_precision(trace_phase(name, "decode", shape),
                          DecoderPrecision(4, 4, 8, 8, "2:4"))
    hw = load_hw("hw_configs/int4_sparse.yaml")
    start = time.perf_counter()
    for _ in range(repeats):
        simulate_pass(step, hw)
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    print(f"{'model':<10} {'phase':<8} {'shape':<28} {'peak RSS MB':>11} {'trace s':>8} "
          f"{'traced G':>9} {'analytic G':>10} {'sim ms/step':>11}")
    worst_rss = 0
    for name in args.models.split(","):
        for phase in ("prefill", "decode"):
            figures = measure(name, phase)
            peak = figures["peak_bytes"]
            worst_rss = max(worst_rss, peak)
            shape = ",".join(f"{k}={v}" for k, v in figures["shape"].items())
            sim = f"{1e3 * step_seconds(name):.1f}" if phase == "decode" else "-"
            print(f"{name:<10} {phase:<8} {shape:<28} {peak / 1e6:>11.0f} "
                  f"{figures['seconds']:>8.1f} {figures['macs'] / 1e9:>9.4f} "
                  f"{figures['analytic'] / 1e9:>10.4f} {sim:>11}")
            if figures["macs"] != figures["analytic"]:
                print(f"  traced MACs differ from the analytic count for {name} {phase}")
                return 1
    print(f"largest peak RSS {worst_rss / 1e6:.0f} MB (goal < 2 GiB = {GOAL_BYTES / 1e6:.0f} MB)")
    return 0 if worst_rss < GOAL_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
