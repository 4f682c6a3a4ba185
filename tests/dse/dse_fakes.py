"""Test doubles for sweeps: a tiny hand-built graph and a closed-form evaluate function.

Importable by spawned pool workers and Dask workers (they inherit the parent's ``sys.path``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelsim.dse.space import ModelSpec, Recipe
from accelsim.graph.ir import GemmNode, Graph, VectorNode

REPO = Path(__file__).resolve().parents[2]
INT8_HW = REPO / "hw_configs" / "int8_dense.yaml"


def tiny_graph(model: ModelSpec, recipe: Recipe) -> Graph:
    """Stand-in for compressing and tracing: fc layers take the recipe's summary precision."""
    tokens = model.seq_len or 8
    sparsity = recipe.sparsity if recipe.compressed else "dense"
    linear = {"weight_bits": recipe.weight_bits, "act_bits": recipe.act_bits,
              "sparsity": sparsity, "weight_density": 0.5 if sparsity == "2:4" else 1.0}
    return Graph(
        name=model.name,
        nodes=(
            GemmNode("fc1", m=tokens, k=16, n=32, **linear),
            VectorNode("gelu", vector_op="gelu", elements=tokens * 32),
            GemmNode("fc2", m=tokens, k=32, n=16, **linear),
            GemmNode("qk", m=tokens, k=6, n=tokens, count=2, kind="matmul",
                     weight_is_activation=True),
        ),
        input_shape={"batch": model.batch, "seq_len": tokens},
    )


def fake_evaluate(graph: Graph, base_hw: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Closed-form stand-in for the simulator: depends on the graph, the recipe and the point."""
    values = dict(overrides)
    rows = values.get("array.rows", base_hw.array.rows)
    cols = values.get("array.cols", base_hw.array.cols)
    bandwidth = values.get("dram.bandwidth_gbps", base_hw.dram.bandwidth_gbps)
    bits = sum((g.weight_bits or 8) * (0.5 if g.sparsity == "2:4" else 1.0) for g in graph.gemms)
    cycles = sum(-(-g.m // rows) * -(-g.n // cols) * g.k * g.count for g in graph.gemms)
    return {
        "feasible": rows * cols <= 4096,
        "reason": "" if rows * cols <= 4096 else "array too large",
        "cycles": float(cycles),
        "latency_ms": cycles / 1e6 + 1.0 / bandwidth,
        "energy_uj": bits * rows * cols / 1000.0,
        "area_mm2": rows * cols / 1000.0,
        # Workers must stay light: they get graphs, never import torch.
        "torch_loaded": float("torch" in sys.modules),
    }
