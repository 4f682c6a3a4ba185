"""Operator graph: the workload contract between tracing and its consumers (sim, ref, report).

A GEMM computes ``out[M, N] = A[M, K] @ B[K, N]``, ``count`` times (heads x batch for attention).
For a linear layer ``A`` is the activation (tokens x in_features) and ``B`` the weight
(in_features x out_features); for attention's matmuls both operands are activations
(``weight_is_activation=True``) and are always dense. Bit widths of ``None`` mean "the hardware
config's default precision", resolved by the consumer (the graph never imports ``hw``).

Edges: a node's ``inputs`` names the nodes whose outputs it reads, in operand order (a GEMM's A,
then its B when both are activations), ``""`` for a model input; ``None`` means unknown (a
topology CSV, a hand-built graph), read as "the previous node's output" (the first node reads the
model input). Constant operands (weights, biases, position embeddings) are not edges.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Literal, NamedTuple

from accelsim.errors import AccelsimError

Sparsity = Literal["dense", "2:4"]
SPARSITY_KINDS: tuple[str, ...] = ("dense", "2:4")
GemmKind = Literal["linear", "matmul", "conv"]
GEMM_KINDS: tuple[str, ...] = ("linear", "matmul", "conv")
VectorOp = Literal[
    "softmax", "layernorm", "gelu", "add", "mul", "requantize", "relu", "tanh", "other"
]
MODEL_INPUT = ""
"""The producer name of an operand that comes from outside the graph (a model input or state)."""
VECTOR_OPS: tuple[str, ...] = (
    "softmax", "layernorm", "gelu", "add", "mul", "requantize", "relu", "tanh", "other"
)


@dataclass(frozen=True)
class GemmNode:
    """One GEMM (or a repeated batch of identical GEMMs).

    Attributes
    ----------
    name: unique node name (module path or torch node name).
    m, k, n: output rows, reduction length, output columns.
    count: how many identical GEMMs (attention heads x batch); total MACs = m*k*n*count.
    weight_bits, act_bits: operand widths in bits, ``None`` = hardware default.
    sparsity: ``"2:4"`` when the B (weight) operand is 2:4 structured sparse along K.
    weight_density: measured fraction of non-zero weights (1.0 dense, ~0.5 for 2:4, lower if
        quantization zeroed more); energy models may gate zero operands with it.
    kind: ``linear`` (weights), ``matmul`` (activation x activation), ``conv`` (lowered conv).
    weight_is_activation: both operands are activations (attention QK^T and PV).
    inputs: producers of A (and of B when ``weight_is_activation``), see the module docstring.
    on_host: the GEMM runs on the host in float32, not on the chip: a layer the integer model
        keeps float (``IntModel.float_layers``: a patch or convolutional front end, a float
        head), set where a graph is matched to a compressed model. The simulator prices it at
        zero chip cycles and energy and its output reaches the chip as a model input does;
        ``False`` (every GEMM of an analytic or uncompressed graph) runs it on the array.
    """

    name: str
    m: int
    k: int
    n: int
    count: int = 1
    weight_bits: int | None = None
    act_bits: int | None = None
    sparsity: Sparsity = "dense"
    weight_density: float = 1.0
    kind: GemmKind = "linear"
    weight_is_activation: bool = False
    inputs: tuple[str, ...] | None = None
    on_host: bool = False
    op: Literal["gemm"] = field(default="gemm", init=False)

    def __post_init__(self) -> None:
        for dim in ("m", "k", "n", "count"):
            value = getattr(self, dim)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AccelsimError(f"gemm {self.name!r}: {dim}={value!r} must be an integer >= 1")
        for bits_field in ("weight_bits", "act_bits"):
            bits = getattr(self, bits_field)
            if bits is not None and (not isinstance(bits, int) or not 1 <= bits <= 32):
                raise AccelsimError(
                    f"gemm {self.name!r}: {bits_field}={bits!r} must be an integer in 1..32 or null"
                )
        if self.sparsity not in SPARSITY_KINDS:
            raise AccelsimError(
                f"gemm {self.name!r}: sparsity={self.sparsity!r} is not one of "
                f"{', '.join(SPARSITY_KINDS)}"
            )
        if self.kind not in GEMM_KINDS:
            raise AccelsimError(
                f"gemm {self.name!r}: kind={self.kind!r} is not one of {', '.join(GEMM_KINDS)}"
            )
        if self.sparsity == "2:4" and (self.weight_is_activation or self.k % 4):
            raise AccelsimError(
                f"gemm {self.name!r}: 2:4 sparsity needs a weight operand with k divisible by 4 "
                f"(k={self.k}, weight_is_activation={self.weight_is_activation})"
            )
        if not 0.0 <= self.weight_density <= 1.0:
            raise AccelsimError(
                f"gemm {self.name!r}: weight_density={self.weight_density!r} must be in [0, 1]"
            )
        if not isinstance(self.on_host, bool):
            raise AccelsimError(
                f"gemm {self.name!r}: on_host={self.on_host!r} must be true or false"
            )

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the dense computation (zeros included)."""
        return self.m * self.k * self.n * self.count


@dataclass(frozen=True)
class VectorNode:
    """An element-wise or row-wise op for the vector unit.

    ``elements`` is the number of elements processed once; ``count`` repeats it. For row-wise ops
    (softmax, layernorm) ``row_length`` is the normalized dimension.
    """

    name: str
    vector_op: VectorOp
    elements: int
    count: int = 1
    row_length: int = 1
    inputs: tuple[str, ...] | None = None
    op: Literal["vector"] = field(default="vector", init=False)

    def __post_init__(self) -> None:
        if self.vector_op not in VECTOR_OPS:
            raise AccelsimError(
                f"vector node {self.name!r}: vector_op={self.vector_op!r} is not one of "
                f"{', '.join(VECTOR_OPS)}"
            )
        for dim in ("elements", "count", "row_length"):
            value = getattr(self, dim)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AccelsimError(
                    f"vector node {self.name!r}: {dim}={value!r} must be an integer >= 1"
                )

    @property
    def total_elements(self) -> int:
        return self.elements * self.count


Node = GemmNode | VectorNode


class GraphEdges(NamedTuple):
    """``Graph.edges``, per node in execution order: its activation operands' producer indices
    (-1: a model input), whether each operand is a model input, and the nodes that read its
    output (ascending, each once)."""

    operands: tuple[tuple[int, ...], ...]
    from_model_input: tuple[tuple[bool, ...], ...]
    readers: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Graph:
    """A workload: nodes in execution order plus where it came from.

    ``input_shape`` records the traced input (for example ``{"batch": 1, "seq_len": 128}``) so
    caches and sweep stores can key on it.
    """

    name: str
    nodes: tuple[Node, ...]
    input_shape: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise AccelsimError(f"graph {self.name!r}: duplicate node name {duplicate!r}")
        seen: set[str] = {""}
        for node in self.nodes:
            for source in node.inputs or ():
                if source not in seen:
                    raise AccelsimError(
                        f"graph {self.name!r}: node {node.name!r}: input {source!r} is not an "
                        "earlier node (inputs name earlier nodes, or '' for a model input)")
            seen.add(node.name)

    def sources(self) -> tuple[tuple[str, ...], ...]:
        """Each node's activation operands by producer: its ``inputs``, or, when they are unknown,
        the previous node's output (a model input for the first node). An attention GEMM
        without edges reads its A from the previous node and its B from the model input."""
        out: list[tuple[str, ...]] = []
        previous = MODEL_INPUT
        for node in self.nodes:
            if node.inputs is not None:
                out.append(node.inputs)
            elif isinstance(node, GemmNode) and node.weight_is_activation:
                out.append((previous, MODEL_INPUT))
            else:
                out.append((previous,))
            previous = node.name
        return tuple(out)

    @cached_property
    def edges(self) -> GraphEdges:
        """The producer-consumer structure of ``sources``, by node index. Computed on first use
        and kept with the graph (it is immutable): a sweep simulates one graph at many design
        points, and every simulation plans over these edges."""
        index = {node.name: i for i, node in enumerate(self.nodes)}
        operands = tuple(tuple(index[s] if s != MODEL_INPUT else -1 for s in node_sources)
                         for node_sources in self.sources())
        readers: list[list[int]] = [[] for _ in self.nodes]
        for i, node_operands in enumerate(operands):
            for producer in node_operands:
                if producer >= 0 and (not readers[producer] or readers[producer][-1] != i):
                    readers[producer].append(i)
        return GraphEdges(operands,
                          tuple(tuple(p < 0 for p in node_operands) for node_operands in operands),
                          tuple(tuple(r) for r in readers))

    @cached_property
    def derived(self) -> dict[Hashable, object]:
        """Values a consumer computes from this graph alone, or from it and a few settings, kept
        with the (immutable) graph under a key of the consumer's choosing (include the settings in
        it): a sweep simulates one graph at many design points, and the simulator keeps its
        per-node layout and the planner's tensors and chains here instead of rebuilding them at
        every point. Not part of the graph's value (``==``, ``to_dict``)."""
        return {}

    @property
    def gemms(self) -> tuple[GemmNode, ...]:
        return tuple(node for node in self.nodes if isinstance(node, GemmNode))

    @property
    def vectors(self) -> tuple[VectorNode, ...]:
        return tuple(node for node in self.nodes if isinstance(node, VectorNode))

    @property
    def macs(self) -> int:
        return sum(g.macs for g in self.gemms)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_shape": dict(self.input_shape),
            "nodes": [asdict(node) for node in self.nodes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> Graph:
        nodes: list[Node] = []
        for raw in data["nodes"]:
            fields = {key: value for key, value in raw.items() if key != "op"}
            if fields.get("inputs") is not None:
                fields["inputs"] = tuple(fields["inputs"])
            if raw.get("op") == "gemm":
                nodes.append(GemmNode(**fields))
            elif raw.get("op") == "vector":
                nodes.append(VectorNode(**fields))
            else:
                raise AccelsimError(
                    f"graph node {raw.get('name')!r}: op={raw.get('op')!r} "
                    "is not one of gemm, vector"
                )
        return cls(name=data["name"], nodes=tuple(nodes), input_shape=dict(data["input_shape"]))
