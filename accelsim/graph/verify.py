"""Invariants every traced graph must hold, checked in one place.

The IR's own constructors check single fields (positive sizes, known kinds); this module checks
what only makes sense across fields and against the traced input shape. The tracer's tests run
it on every graph; consumers may run it on graphs read from JSON.
"""

from __future__ import annotations

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, VectorNode

# A 2:4 weight keeps at most 2 of every 4 values; quantization may zero more, never fewer.
_MAX_24_DENSITY = 0.5


def _fail(graph: Graph, node_name: str, message: str) -> AccelsimError:
    return AccelsimError(f"graph {graph.name!r}: node {node_name!r}: {message}")


def _check_gemm(graph: Graph, gemm: GemmNode, batch: int | None) -> None:
    if (gemm.kind == "matmul") != gemm.weight_is_activation:
        raise _fail(
            graph,
            gemm.name,
            f"kind={gemm.kind!r} with weight_is_activation={gemm.weight_is_activation} "
            "(matmul nodes, and only they, multiply two activations)",
        )
    if gemm.weight_is_activation and gemm.weight_density != 1.0:
        raise _fail(
            graph,
            gemm.name,
            f"weight_density={gemm.weight_density} on an activation x activation GEMM (must be 1)",
        )
    if (gemm.weight_bits is None) != (gemm.act_bits is None):
        raise _fail(
            graph,
            gemm.name,
            f"weight_bits={gemm.weight_bits} act_bits={gemm.act_bits}: set both or neither",
        )
    if gemm.sparsity == "2:4" and gemm.weight_density > _MAX_24_DENSITY:
        raise _fail(
            graph,
            gemm.name,
            f"sparsity='2:4' with weight_density={gemm.weight_density} > {_MAX_24_DENSITY}",
        )
    # Attention repeats per head and per sample, convs per group and per sample.
    if batch is not None and gemm.kind in ("matmul", "conv") and gemm.count % batch:
        raise _fail(
            graph, gemm.name, f"count={gemm.count} is not a multiple of the batch ({batch})"
        )


def _check_vector(graph: Graph, vector: VectorNode) -> None:
    if vector.elements % vector.row_length:
        raise _fail(
            graph,
            vector.name,
            f"row_length={vector.row_length} does not divide elements={vector.elements}",
        )


def verify_graph(graph: Graph) -> None:
    """Raise :class:`AccelsimError` (one line) at the first broken invariant."""
    if not graph.gemms:
        raise AccelsimError(f"graph {graph.name!r}: no GEMM nodes (nothing for the array to run)")
    batch = graph.input_shape.get("batch")
    for node in graph.nodes:
        if isinstance(node, GemmNode):
            _check_gemm(graph, node, batch)
        else:
            _check_vector(graph, node)
