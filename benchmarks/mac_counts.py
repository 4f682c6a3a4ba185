"""Full-size MAC check: traced graph vs the analytic count from each config's hyperparameters.

Run: ``python benchmarks/mac_counts.py [--all]``. Prints, per model, the traced and analytic
G MACs, their % difference (the tracer must be within 0.5%), GEMM counts, build and trace time.
Default set: BERT-base at 128 tokens, ViT-B/16 at 224x224, wav2vec2-base on 1 s of 16 kHz
audio; ``--all`` adds every non-test encoder in the zoo at its default shape (decoders are traced
by phase on the meta device: ``benchmarks/decoder_phases.py``).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from accelsim import zoo
from accelsim.graph.trace import trace_module
from accelsim.graph.verify import verify_graph
from accelsim.zoo.registry import DECODER_FAMILIES as DECODERS

DEFAULT_MODELS = ("bert_base", "vit_b16", "wav2vec2_base")
TOLERANCE = 0.005


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every full-size zoo model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = DEFAULT_MODELS
    if args.all:
        names = tuple(s.name for s in zoo.list_models()
                      if not s.name.endswith(("_tiny", "_test")) and s.family not in DECODERS)
    print(
        f"{'model':<16} {'input':<30} {'traced G':>10} {'analytic G':>11} {'diff %':>8} "
        f"{'GEMMs':>6} {'build s':>8} {'trace s':>8}"
    )
    worst = 0.0
    for name in names:
        shape = zoo.resolve_input_shape(name)
        start = time.perf_counter()
        model = zoo.build_model(name)
        built = time.perf_counter()
        # trace_module, not trace_named_model: no cache, so the time is a real export + walk.
        graph = trace_module(model, zoo.inputs_for_shape(zoo.get_spec(name), shape), name=name)
        seconds = time.perf_counter() - built
        verify_graph(graph)
        analytic = zoo.analytic_macs(name, shape)
        diff = graph.macs / analytic - 1
        worst = max(worst, abs(diff))
        text = ",".join(f"{k}={v}" for k, v in shape.items())
        print(
            f"{name:<16} {text:<30} {graph.macs / 1e9:>10.4f} {analytic / 1e9:>11.4f} "
            f"{100 * diff:>8.4f} {len(graph.gemms):>6} {built - start:>8.1f} {seconds:>8.1f}"
        )
    print(f"worst |diff| = {100 * worst:.4f} % (limit {100 * TOLERANCE:.1f} %)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
