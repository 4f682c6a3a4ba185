"""A zoo encoder's trace: a full ``torch.export`` against the stacked trace, side by side.

For each model, on its meta-device structure (shapes only), one torch thread: the CPU seconds of
``export_module`` + ``graph_from_exported`` of the whole module, and of
:func:`accelsim.graph.stack.trace_stacked` (the module cut to 1 and 2 layers, the graph extended
to the full depth), and whether the two graphs' JSON is byte-identical (it must be). Each is run
``--repeats`` times, alternating; the median is printed. Usage::

    python benchmarks/bench_trace.py [--models vit_b16,bert_base,...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from accelsim import zoo  # noqa: E402
from accelsim.graph.ir import Graph  # noqa: E402
from accelsim.graph.stack import layer_stack, trace_stacked  # noqa: E402
from accelsim.graph.trace import (  # noqa: E402
    export_module,
    graph_from_exported,
    module_precisions,
)

MODELS = ("vit_b16,bert_base,wav2vec2_base,whisper_tiny_en,dinov2_s,vit_l16,bert_large,"
          "wav2vec2_large")


def timed(build: Callable[[], Graph | None]) -> tuple[float, Graph | None]:
    start = time.process_time()
    graph = build()
    return time.process_time() - start, graph


def compare(name: str, repeats: int) -> str:
    """One model's line: stack depth, median CPU seconds of each trace, ratio, verdict."""
    shape = zoo.resolve_input_shape(name)
    module = zoo.build_structure(name, image_size=shape.get("image_size"))
    inputs = {key: value.to("meta")
              for key, value in zoo.inputs_for_shape(zoo.get_spec(name), shape).items()}
    precisions = module_precisions(module)

    def full() -> Graph:
        exported = export_module(module, inputs, name=name)
        return graph_from_exported(exported, module, name=name, input_shape=shape,
                                   precisions=precisions)

    def stacked() -> Graph | None:
        return trace_stacked(module, inputs, name=name, input_shape=shape, precisions=precisions)

    times: dict[str, list[float]] = {"full": [], "stacked": []}
    graphs: dict[str, Graph | None] = {}
    for _ in range(repeats):
        for label, build in (("full", full), ("stacked", stacked)):
            seconds, graphs[label] = timed(build)
            times[label].append(seconds)
    reference, candidate = graphs["full"], graphs["stacked"]
    assert reference is not None
    verdict = ("no stack: full export" if candidate is None
               else "identical" if candidate.to_json() == reference.to_json() else "DIFFERENT")
    found = layer_stack(module, precisions)
    full_s, stacked_s = (statistics.median(times[k]) for k in ("full", "stacked"))
    return (f"{name:<16} {found[1] if found else '-':>6} {full_s:>10.2f} {stacked_s:>13.2f} "
            f"{full_s / stacked_s:>5.1f}x  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS, help="comma-separated zoo models")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<16} {'layers':>6} {'full_cpu_s':>10} {'stacked_cpu_s':>13} {'ratio':>6}  "
          "graphs")
    for name in args.models.split(","):
        row = compare(name, args.repeats)
        print(row, flush=True)
        if row.endswith("DIFFERENT"):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
