"""Annotate a traced (uncompressed) graph with an exported integer model's real precision.

``accelsim compress`` fine-tunes a *task* model (the zoo backbone plus a classification head,
e.g. ``BertForSequenceClassification``) and saves its :class:`~accelsim.compress.export.IntModel`;
``accelsim run`` traces the zoo *backbone*. Module paths therefore differ by a prefix (the saved
``bert.encoder.layer.0.output.dense`` is the traced ``encoder.layer.0.output.dense``), so a
GEMM matches an IntModel entry when one path is the other or ends with ``"." + other``.
Matched linear GEMMs take the layer's bit widths, its stored format (``"2:4"`` or dense) and its
measured density (non-zero codes / all codes); attention matmuls take the widths of the
quantizers of their operands (QK^T: q x k, PV: probs x v). Each quantized operand also gets the
requantize op on the vector unit that a traced compressed model has. The GEMMs of the layers
the int model keeps float32 (``float_layers``, which the integer reference runs on the host) are
marked ``on_host`` (:func:`with_host_layers`, also applied to a graph traced from a compressed
model). Shapes must agree, so an int model from another model size fails in one line instead of
simulating wrong numbers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TypeVar

from accelsim.compress.apply import ATTN_QUANT
from accelsim.compress.export import IntAttention, IntLinear, IntModel
from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, Node, VectorNode

Entry = TypeVar("Entry", IntLinear, IntAttention)
_REPEAT = re.compile(r"#\d+$")  # the tracer's suffix for a module called more than once
ACT_QUANT = "act_quant"  # QuantLinear's input quantizer attribute, as a compressed trace names it


def _module_path(node: GemmNode) -> str:
    """The module a GEMM belongs to: linear nodes are named by it, matmuls ``<path>/<op>``."""
    name = _REPEAT.sub("", node.name)
    return name.split("/", 1)[0] if node.kind == "matmul" else name


def _same_module(saved: str, traced: str) -> bool:
    return saved == traced or saved.endswith("." + traced) or traced.endswith("." + saved)


def _lookup(path: str, entries: Sequence[Entry]) -> Entry | None:
    found = [entry for entry in entries if _same_module(entry.name, path)]
    if len(found) > 1:
        raise AccelsimError(f"int model: traced module {path!r} matches several saved entries "
                            f"({', '.join(e.name for e in found)}); allowed: exactly one")
    return found[0] if found else None


def matched_linears(graph: Graph, int_model: IntModel) -> dict[str, IntLinear]:
    """Graph GEMM node name -> the IntModel linear layer it runs (weight GEMMs only)."""
    matches: dict[str, IntLinear] = {}
    for node in graph.gemms:
        if node.kind != "linear" or node.weight_is_activation:
            continue
        layer = _lookup(_module_path(node), int_model.linears)
        if layer is None:
            continue
        if (node.k, node.n) != (layer.k, layer.n):
            raise AccelsimError(
                f"int model: layer {layer.name!r} is k={layer.k} x n={layer.n} but graph "
                f"{graph.name!r} node {node.name!r} is k={node.k} x n={node.n}; the int model "
                "was exported from a different model (compress and run the same zoo model)")
        matches[node.name] = layer
    return matches


def with_host_layers(graph: Graph, float_layers: Sequence[str]) -> Graph:
    """``graph`` with its GEMMs of the modules ``float_layers`` names (a compression plan's or an
    IntModel's layers kept float32, which the integer reference runs on the host) marked
    ``on_host``; ``graph`` itself when none matches."""
    hosted = [node.name for node in graph.gemms if node.kind != "matmul" and any(
        _same_module(layer, _module_path(node)) for layer in float_layers)]
    if not hosted:
        return graph
    names = set(hosted)
    return dataclasses.replace(graph, nodes=tuple(
        dataclasses.replace(node, on_host=True) if node.name in names else node
        for node in graph.nodes))


def graph_from_int_model(graph: Graph, int_model: IntModel) -> Graph:
    """``graph`` with every GEMM that the IntModel covers set to its real bits and sparsity,
    and those of its float layers marked ``on_host``."""
    linears = matched_linears(graph, int_model)
    if not linears:
        raise AccelsimError(
            f"int model ({int_model.family}, recipe {int_model.recipe}): none of its "
            f"{len(int_model.linears)} linears (e.g. {int_model.linears[0].name!r}) matches a "
            f"GEMM of graph {graph.name!r} (e.g. {next(iter(graph.gemms)).name!r}); allowed: the "
            "zoo model the int model was compressed from")
    names = {node.name for node in graph.nodes}
    matmul_index: dict[str, int] = {}
    nodes: list[Node] = []

    def requantize(quantizer_path: str, elements: int, source: str | None) -> str:
        # Named as the tracer names a compressed model's quantizer, "#i" when called again;
        # it reads the operand's producer and the GEMM then reads it, as in a compressed trace
        # (unwired, the planner would take its output for a model output written to DRAM).
        base = name = f"{quantizer_path}/requantize"
        index = 1
        while name in names:
            name, index = f"{base}#{index}", index + 1
        names.add(name)
        nodes.append(VectorNode(name=name, vector_op="requantize", elements=elements,
                                inputs=None if source is None else (source,)))
        return name

    def operand(node: GemmNode, k: int) -> str | None:
        return None if node.inputs is None or len(node.inputs) <= k else node.inputs[k]

    def reading(node: GemmNode, quantized: dict[int, str]) -> GemmNode:
        if node.inputs is None:
            return node
        return dataclasses.replace(node, inputs=tuple(
            quantized.get(k, source) for k, source in enumerate(node.inputs)))

    for node in graph.nodes:
        if not isinstance(node, GemmNode):
            nodes.append(node)
        elif node.name in linears:
            layer = linears[node.name]
            a = requantize(f"{_module_path(node)}.{ACT_QUANT}", node.m * node.k * node.count,
                           operand(node, 0))
            nodes.append(dataclasses.replace(
                reading(node, {0: a}), weight_bits=layer.weight_bits, act_bits=layer.act.bits,
                sparsity=layer.sparsity, weight_density=layer.density))
        elif node.kind == "matmul" and node.weight_is_activation:
            found = _attention_operands(node, int_model, dict(matmul_index))
            quantized: dict[int, str] = {}
            if found is not None:
                path, _, a_op, b_op = found
                for k, (op, elements) in enumerate(((a_op, node.m * node.k),
                                                    (b_op, node.k * node.n))):
                    quantized[k] = requantize(f"{path}.{ATTN_QUANT}.{op}",
                                              elements * node.count, operand(node, k))
            nodes.append(attention_matmul_bits(reading(node, quantized), int_model,
                                               matmul_index))
        else:
            nodes.append(node)
    return with_host_layers(dataclasses.replace(graph, nodes=tuple(nodes)),
                            int_model.float_layers)


def _attention_operands(node: GemmNode, int_model: IntModel,
                        seen: dict[str, int]) -> tuple[str, IntAttention, str, str] | None:
    """(module path, its attention quantizers, A operand, B operand) of an attention matmul,
    None when the int model has no quantizers for it."""
    path = _module_path(node)
    attention = _lookup(path, int_model.attentions)
    if attention is None:
        return None
    # Eager attention runs QK^T then PV in its module; fused SDPA names them .qk / .pv.
    if node.name.endswith(".qk") or node.name.endswith(".pv"):
        is_qk = node.name.endswith(".qk")
    else:
        order = seen.get(path, 0)
        seen[path] = order + 1
        is_qk = order % 2 == 0  # a module called twice traces QK, PV, QK, PV
    # Both operands are quantized activations: A (q or probs) is [m, k], B (k or v) is [k, n].
    a_op, b_op = ("q", "k") if is_qk else ("probs", "v")
    return path, attention, a_op, b_op


def attention_matmul_bits(node: GemmNode, int_model: IntModel,
                          seen: dict[str, int]) -> GemmNode:
    """An attention matmul at its quantizers' widths (``seen`` counts the calls per module)."""
    found = _attention_operands(node, int_model, seen)
    if found is None:
        return node
    _, attention, a_op, b_op = found
    a, b = getattr(attention, a_op), getattr(attention, b_op)
    return dataclasses.replace(node, act_bits=a.bits, weight_bits=b.bits)


def stored_weight_bytes(layer: IntLinear) -> int:
    """Bytes the IntModel stores for the layer's weight codes: packed 2:4 values plus their
    2-bit indices, or the packed dense codes (scales and biases are not counted)."""
    if layer.sparsity == "2:4":
        if layer.packed_values is None or layer.packed_indices is None:
            raise AccelsimError(f"int model: 2:4 layer {layer.name!r} has no packed values/indices")
        return int(layer.packed_values.nbytes + layer.packed_indices.nbytes)
    return int(layer.packed_codes.nbytes)
