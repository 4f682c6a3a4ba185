"""Decoder phase workloads: an operator graph plus the KV cache it reads and writes.

A :class:`PhaseGraph` is one prefill or one decode step of a decoder (traced by
:mod:`accelsim.graph.decoder_trace`). Besides its :class:`~accelsim.graph.ir.Graph` it carries
the KV cache as tensors (:class:`KVCacheTensor`: shape, positions written by this pass, storage
bits) linked to the attention GEMM that reads each one: the key cache is the B operand of QK^T
(``head_dim x positions`` per head), the value cache the B operand of PV (``positions x
head_dim``), so a simulator charges a cache read exactly where the graph reads it, at the
GEMM's B-operand width (``weight_bits`` of a ``matmul`` node).

Pure Python (no torch): the simulator imports it. :func:`affine_in` derives a phase graph at
another context or batch from two traced points (every size in these graphs is affine in each,
tests check a third point against its trace), so a generation of hundreds of decode steps, or
a batch search, needs two exports instead of hundreds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from accelsim.compress.sites import SiteRules, check_stacks, site_if_any, stack_of
from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, Node, VectorNode

Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class KVCacheTensor:
    """One layer's key or value cache: ``batch x kv_heads x positions x head_dim`` elements.

    ``positions`` is the cache length this pass attends over (prompt for prefill, context + 1
    for a decode step; the encoder positions for cross-attention); ``written_positions`` the
    positions this pass stores (the prompt, or the one new token; 0 for a cache the pass only
    reads: cross-attention keys and values during decoding). ``bits`` is the stored width
    (``None``: the attention operands' width, the hardware's default); ``read_by`` names the
    attention GEMM whose B operand it is; ``written_from`` the node that computes this pass's
    new positions (the key or value projection, as traced); ``written_by`` the node whose output
    is stored into the cache as those positions (``None``: the graph has no such node).
    """

    name: str
    kind: Literal["key", "value"]
    batch: int
    kv_heads: int
    positions: int
    head_dim: int
    written_positions: int
    read_by: str
    bits: int | None = None
    written_from: str | None = None
    written_by: str | None = None

    def __post_init__(self) -> None:
        for dim, least in (("batch", 1), ("kv_heads", 1), ("positions", 1), ("head_dim", 1),
                           ("written_positions", 0)):
            value = getattr(self, dim)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise AccelsimError(f"kv cache {self.name!r}: {dim}={value!r} must be an "
                                    f"integer >= {least}")
        if self.written_positions > self.positions:
            raise AccelsimError(f"kv cache {self.name!r}: written_positions="
                                f"{self.written_positions} exceeds positions={self.positions}")
        if self.kind not in ("key", "value"):
            raise AccelsimError(f"kv cache {self.name!r}: kind={self.kind!r} is not one of "
                                "key, value")
        if self.bits is not None and not 1 <= self.bits <= 32:
            raise AccelsimError(f"kv cache {self.name!r}: bits={self.bits!r} must be in 1..32 "
                                "or null")

    @property
    def elements(self) -> int:
        return self.batch * self.kv_heads * self.positions * self.head_dim

    @property
    def written_elements(self) -> int:
        return self.batch * self.kv_heads * self.written_positions * self.head_dim


@dataclass(frozen=True)
class PhaseGraph:
    """One prefill or decode step: the graph, its KV cache, and the phase's shape
    (``{"batch", "prompt_len"}`` or ``{"batch", "context"}``)."""

    phase: Phase
    graph: Graph
    kv_cache: tuple[KVCacheTensor, ...]
    shape: dict[str, int]

    def __post_init__(self) -> None:
        gemms = {node.name: node for node in self.graph.gemms}
        names = {node.name for node in self.graph.nodes}
        for tensor in self.kv_cache:
            node = gemms.get(tensor.read_by)
            if node is None or node.kind != "matmul":
                raise AccelsimError(f"kv cache {tensor.name!r}: read_by={tensor.read_by!r} is "
                                    f"not an attention matmul of graph {self.graph.name!r}")
            for field_name in ("written_from", "written_by"):
                node_name = getattr(tensor, field_name)
                if node_name is not None and node_name not in names:
                    raise AccelsimError(f"kv cache {tensor.name!r}: {field_name}={node_name!r} "
                                        f"is not a node of graph {self.graph.name!r}")

    def to_dict(self) -> dict:
        return {"phase": self.phase, "shape": dict(self.shape), "graph": self.graph.to_dict(),
                "kv_cache": [dataclasses.asdict(t) for t in self.kv_cache]}

    @classmethod
    def from_dict(cls, data: dict) -> PhaseGraph:
        return cls(phase=data["phase"], graph=Graph.from_dict(data["graph"]),
                   kv_cache=tuple(KVCacheTensor(**t) for t in data["kv_cache"]),
                   shape=dict(data["shape"]))


def with_kv_bits(phase_graph: PhaseGraph, bits: int | None) -> PhaseGraph:
    """The KV cache stored at ``bits`` (``None``: leave the traced widths): each tensor's width
    and the B-operand width of the attention GEMM that reads it."""
    if bits is None:
        return phase_graph
    readers = {tensor.read_by for tensor in phase_graph.kv_cache}
    nodes = tuple(dataclasses.replace(node, weight_bits=bits)
                  if isinstance(node, GemmNode) and node.name in readers else node
                  for node in phase_graph.graph.nodes)
    return dataclasses.replace(
        phase_graph, graph=dataclasses.replace(phase_graph.graph, nodes=nodes),
        kv_cache=tuple(dataclasses.replace(t, bits=bits) for t in phase_graph.kv_cache))


_GEMM_SIZES = ("m", "k", "n", "count")
_VECTOR_SIZES = ("elements", "count", "row_length")
_KV_SIZES = ("batch", "positions", "written_positions")


def _affine(first: int, second: int, x0: int, x1: int, x: int, where: str,
            least: int = 1) -> int:
    value = first + Fraction(second - first, x1 - x0) * (x - x0)
    if value.denominator != 1 or value < least:
        raise AccelsimError(f"{where}: sizes {first} at {x0} and {second} at {x1} give "
                            f"{value} at {x}, not a positive integer (not affine)")
    return int(value)


def _node_at(a: Node, b: Node, x0: int, x1: int, x: int) -> Node:
    if type(a) is not type(b) or a.name != b.name:
        raise AccelsimError(f"affine_in: node {a.name!r} and {b.name!r} differ in kind or name; "
                            "the two traces are not one graph family")
    sizes = _GEMM_SIZES if isinstance(a, GemmNode) else _VECTOR_SIZES
    changes = {f: _affine(getattr(a, f), getattr(b, f), x0, x1, x, f"node {a.name!r}.{f}")
               for f in sizes}
    return dataclasses.replace(a, **changes)


def affine_in(key: str, first: PhaseGraph, second: PhaseGraph, value: int) -> PhaseGraph:
    """The phase graph at ``shape[key] = value``, from two traces that differ only in ``key``
    (``context`` or ``batch``): every node size and KV size taken as affine in ``key``.

    Raises one line when the two traces are not one family (different nodes, other shape keys
    differing) or a size would not come out a positive integer.
    """
    x0, x1 = first.shape[key], second.shape[key]
    others = {k: v for k, v in first.shape.items() if k != key}
    if (x0 == x1 or first.phase != second.phase
            or others != {k: v for k, v in second.shape.items() if k != key}
            or len(first.graph.nodes) != len(second.graph.nodes)
            or len(first.kv_cache) != len(second.kv_cache)):
        raise AccelsimError(f"affine_in: the traces {first.shape} and {second.shape} must be "
                            f"one {first.phase} graph differing only in {key}")
    if value == x0:
        return first
    nodes = tuple(_node_at(a, b, x0, x1, value)
                  for a, b in zip(first.graph.nodes, second.graph.nodes, strict=True))
    kv = tuple(dataclasses.replace(a, **{f: _affine(getattr(a, f), getattr(b, f), x0, x1, value,
                                                    f"kv cache {a.name!r}.{f}",
                                                    least=0 if f == "written_positions" else 1)
                                         for f in _KV_SIZES})
               for a, b in zip(first.kv_cache, second.kv_cache, strict=True))
    shape = {**first.shape, key: value}
    graph = Graph(name=first.graph.name, nodes=nodes,
                  input_shape={**first.graph.input_shape, key: value})
    return PhaseGraph(first.phase, graph, kv, shape)


@dataclass(frozen=True)
class DecoderPrecision(SiteRules):
    """Operand widths a recipe gives a decoder: every weight GEMM (the LM head included: a
    decode step streams it every token) at ``weight_bits`` x ``act_bits`` with ``sparsity``
    at its nominal density, attention matmuls at ``attention_bits``, the KV cache at
    ``kv_bits``. A linear whose name matches one input site (``compress.sites.site_if_any``:
    Q/K/V, attention output, FFN up, FFN down, the LM head) takes that site's width from
    ``weight_bits_by_site`` / ``act_bits_by_site`` where the recipe names it, and stays dense
    where ``dense_sites`` names it (or names it in the linear's stack, ``decoder.ffn_up``), as
    compression does; else it keeps the recipe's widths."""

    weight_bits: int
    act_bits: int
    attention_bits: int
    kv_bits: int
    sparsity: Literal["dense", "2:4"]
    weight_bits_by_site: dict[str, int] = dataclasses.field(default_factory=dict, hash=False)
    act_bits_by_site: dict[str, int] = dataclasses.field(default_factory=dict, hash=False)
    dense_sites: tuple[str, ...] = ()

    @classmethod
    def from_rules(cls, rules: SiteRules, *, attention_bits: int, kv_bits: int
                   ) -> DecoderPrecision:
        """A recipe's site rules (every :class:`SiteRules` field, as the recipe has it) with the
        attention and KV cache widths."""
        fields = {name: getattr(rules, name) for name in SiteRules.__annotations__}
        return cls(**{name: dict(value) if isinstance(value, Mapping) else value
                      for name, value in fields.items()},
                   attention_bits=attention_bits, kv_bits=kv_bits)

    def widths(self, linear: str) -> tuple[int, int]:
        """``(weight_bits, act_bits)`` of the linear at module path ``linear``."""
        return self.widths_at(site_if_any(linear))

    def sparse(self, linear: str, k: int) -> bool:
        """Whether the linear at module path ``linear`` (``k`` inputs) runs 2:4: where the
        recipe's rules prune its site, unless ``k`` is no multiple of 4."""
        return self.sparse_at(site_if_any(linear), stack_of(linear)) and k % 4 == 0


NOMINAL_DENSITY = {"dense": 1.0, "2:4": 0.5}


def with_precision(phase_graph: PhaseGraph, precision: DecoderPrecision) -> PhaseGraph:
    """The phase graph run at ``precision``: GEMM widths and sparsity set (convolutions, a float
    front end, excepted: marked ``on_host``), and one requantize on the vector unit per
    quantized operand, as a compressed trace has: each linear's input and each attention
    matmul's A operand (the GEMM then reads the requantized tensor), and each KV write (right
    after the node that computes the new positions; its output is what the cache stores,
    ``written_by``)."""
    p = precision
    # A phase may run one stack of two (Whisper's decode step runs no encoder), so only a
    # graph with no stacked linear at all, a single-stack model's, refuses a stack-named site.
    linears = [n.name for n in phase_graph.graph.gemms if not n.weight_is_activation]
    if not any(stack_of(name) for name in linears):
        check_stacks(p.dense_sites, linears, f"model {phase_graph.graph.name!r}")
    writes: dict[str | None, list[KVCacheTensor]] = {}
    for tensor in phase_graph.kv_cache:
        if tensor.written_positions:
            writes.setdefault(tensor.written_from, []).append(tensor)

    def kv_writes(source: str | None) -> list[Node]:
        return [VectorNode(name=f"{t.name}/requantize", vector_op="requantize",
                           elements=t.written_elements,
                           inputs=None if source is None else (source,))
                for t in writes.get(source, ())]

    nodes: list[Node] = []
    for node in phase_graph.graph.nodes:
        # A convolution is a speech recognizer's front end, which compression leaves float32
        # (docs/compression.md §3: a recipe quantizes linears only) and the integer reference
        # runs on the host: it is marked so, as the encoder's compressed trace marks it.
        if isinstance(node, GemmNode) and node.kind == "conv":
            node = dataclasses.replace(node, on_host=True)
        elif isinstance(node, GemmNode):
            quantized = f"{node.name}/requantize"
            nodes.append(VectorNode(name=quantized, vector_op="requantize",
                                    elements=node.m * node.k * node.count,
                                    inputs=None if node.inputs is None else node.inputs[:1]))
            if node.inputs is not None:
                node = dataclasses.replace(node, inputs=(quantized, *node.inputs[1:]))
            if node.weight_is_activation:
                node = dataclasses.replace(node, weight_bits=p.attention_bits,
                                           act_bits=p.attention_bits)
            else:
                sparse = p.sparse(node.name, node.k)
                weight_bits, act_bits = p.widths(node.name)
                node = dataclasses.replace(
                    node, weight_bits=weight_bits, act_bits=act_bits,
                    sparsity="2:4" if sparse else "dense",
                    weight_density=NOMINAL_DENSITY["2:4" if sparse else "dense"])
        nodes.append(node)
        nodes += kv_writes(node.name)
    nodes += kv_writes(None)  # a cache whose writer the graph does not name: after the rest
    graph = dataclasses.replace(phase_graph.graph, nodes=tuple(nodes))
    kv = tuple(dataclasses.replace(t, written_by=f"{t.name}/requantize")
               if t.written_positions else t for t in phase_graph.kv_cache)
    return with_kv_bits(dataclasses.replace(phase_graph, graph=graph, kv_cache=kv), p.kv_bits)
