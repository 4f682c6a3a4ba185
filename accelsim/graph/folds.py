"""What the chip executes of a traced graph (docs/integer_semantics.md §1 and §7).

In every vector format, a GEMM marked ``on_host`` (a layer the integer model keeps float32:
a patch or convolutional front end, a float head) runs on the host, not on the array: the
chip receives its output as an input. :func:`chip_graph` removes those GEMMs and rewires
their readers to a model input, the one mechanism by which the memory planner prices data that
arrives from outside the chip (read from DRAM at the width its reader takes it in).

The float vector formats run every other traced op as the graph has it. The integer datapath
(``accelsim.ref.int_mode``) does not, in two places, and the simulator must price what the
reference executes:

* **Attention scores.** The attention scaling and the additive mask between ``QK^T`` and its
  softmax are folded into the softmax: the scaling into the scores' integer scale, the mask into
  the set of scores the softmax keeps. No multiply or add runs; the softmax reads the ``QK^T``
  accumulators.
* **The host.** An add, multiply or other element-wise op none of whose operands is on the chip
  (a model input, a host GEMM's float output, or another such op: embedding sums, the mask
  built from the attention mask) runs in float32 on the host, and the chip receives its result as
  an input. LayerNorm, GELU and softmax always run on the chip (a float input is converted).

:func:`integer_datapath_graph` removes those nodes and the host GEMMs and rewires their readers:
a folded score op's readers read the ``QK^T`` GEMM, a host op's readers read a model input;
:func:`chip_graph` keeps its result for a vector format with the graph.
"""

from __future__ import annotations

import dataclasses

from accelsim.graph.ir import MODEL_INPUT, GemmNode, Graph, Node, VectorNode

ALWAYS_ON_CHIP: frozenset[str] = frozenset(("layernorm", "gelu", "softmax"))
"""Vector ops the integer datapath runs on the chip whatever their operands."""


def _score_ops(graph: Graph) -> set[int]:
    """Indices of the vector nodes between an attention ``QK^T`` and its softmax: chains of
    element-wise ops whose first operand leads back to a ``weight_is_activation`` GEMM."""
    nodes, operands = graph.nodes, graph.edges.operands
    folded: set[int] = set()
    for i, node in enumerate(nodes):
        if not (isinstance(node, VectorNode) and node.vector_op == "softmax"):
            continue
        chain: list[int] = []
        j = operands[i][0] if operands[i] else -1
        while j >= 0 and isinstance(nodes[j], VectorNode) and nodes[j].vector_op in ("mul", "add"):
            chain.append(j)
            j = operands[j][0] if operands[j] else -1
        producer = nodes[j] if j >= 0 else None
        if chain and isinstance(producer, GemmNode) and producer.weight_is_activation:
            folded.update(chain)
    return folded


def _host_gemms(graph: Graph) -> set[int]:
    """Indices of the GEMMs that run on the host."""
    return {i for i, node in enumerate(graph.nodes)
            if isinstance(node, GemmNode) and node.on_host}


def _host_ops(graph: Graph) -> set[int]:
    """Indices of the element-wise vector nodes with no operand on the chip."""
    nodes, operands = graph.nodes, graph.edges.operands
    on_chip = [False] * len(nodes)
    host: set[int] = set()
    for i, node in enumerate(nodes):
        fed = any(p >= 0 and on_chip[p] for p in operands[i])
        if isinstance(node, GemmNode):
            on_chip[i] = not node.on_host
        elif node.vector_op in ALWAYS_ON_CHIP or fed:
            on_chip[i] = True
        else:
            host.add(i)
    return host


def _without(graph: Graph, folded: set[int], host: set[int]) -> Graph:
    """``graph`` less the ``folded`` nodes (a reader reads what the folded node read first) and
    the ``host`` nodes (a reader reads a model input); ``graph`` itself when nothing goes.
    Node names, order and every kept node's fields are unchanged except ``inputs``."""
    removed = folded | host
    if not removed:
        return graph
    nodes, sources = graph.nodes, graph.sources()
    index = {node.name: i for i, node in enumerate(nodes)}

    def reads(source: str) -> str:
        """What a reader of ``source`` reads once the removed nodes are gone."""
        while source != MODEL_INPUT and index[source] in removed:
            i = index[source]
            source = MODEL_INPUT if i in host else sources[i][0]
        return source

    kept: list[Node] = []
    for i, node in enumerate(nodes):
        if i in removed:
            continue
        rewired = tuple(reads(s) for s in sources[i])
        kept.append(node if rewired == node.inputs else dataclasses.replace(node, inputs=rewired))
    return Graph(graph.name, tuple(kept), dict(graph.input_shape))


def integer_datapath_graph(graph: Graph) -> Graph:
    """``graph`` as the chip with an ``int`` vector unit executes it (module docstring);
    ``graph`` itself when nothing folds."""
    return _without(graph, _score_ops(graph), _host_ops(graph) | _host_gemms(graph))


def chip_graph(graph: Graph, vector_format: str) -> Graph:
    """What the chip executes of ``graph`` with a ``vector_format`` vector unit: the host GEMMs
    removed, and for ``int`` :func:`integer_datapath_graph`. Computed once per graph and
    format kind and kept in ``graph.derived``: a sweep simulates one graph at many design
    points."""
    key = (__name__, vector_format == "int")
    on_chip = graph.derived.get(key)
    if not isinstance(on_chip, Graph):
        on_chip = graph.derived[key] = (
            integer_datapath_graph(graph) if vector_format == "int"
            else _without(graph, set(), _host_gemms(graph)))
    return on_chip
