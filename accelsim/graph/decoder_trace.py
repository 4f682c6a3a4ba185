"""Decoder phases traced with ``torch.export``: a prefill and a decode step over a static KV
cache, from the zoo's causal LM built on the meta device (no weights in memory).

Both phases export ``model(input_ids, past_key_values=StaticCache, cache_position, use_cache,
logits_to_keep=1)`` (transformers' ``StaticCache`` exports cleanly; its per-layer
``index_copy_`` into the cache buffers is the KV write). The cache holds exactly the positions
the pass attends over, so QK^T is ``batch*heads x (tokens x head_dim) x (head_dim x
positions)``:

* prefill: ``input_ids`` ``(batch, prompt_len)``, cache length ``prompt_len`` (M = batch x
  prompt for every linear; causal attention over the prompt);
* decode step: ``input_ids`` ``(batch, 1)`` at position ``context``, cache length
  ``context + 1`` (GEMV-shaped linears with M = batch; attention over the cache and the new
  token).

The LM head runs on the last position only (``logits_to_keep=1``, as generation does). Each
``index_copy_`` node becomes a :class:`~accelsim.graph.phases.KVCacheTensor` (key first, then
value, per attention module, the order of transformers' ``StaticLayer.update``), linked to the
QK^T / PV node of the same module. Traces are cached in-process and on disk like
:func:`accelsim.graph.trace_cache.trace_named_model`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from accelsim import zoo
from accelsim.errors import AccelsimError
from accelsim.graph.ir import MODEL_INPUT, Graph
from accelsim.graph.ops import node_shape, op_name
from accelsim.graph.phases import KVCacheTensor, Phase, PhaseGraph
from accelsim.graph.trace import export_module, graph_from_exported
from accelsim.graph.trace_cache import cached_json, spec_fingerprint, trace_cache_key
from accelsim.zoo.decoders import build_causal_lm

if TYPE_CHECKING:
    from torch import nn

# Bump when this module changes what a phase trace holds (the disk cache keys on it, besides
# the tracer's own TRACER_VERSION).
PHASE_TRACE_VERSION = 2  # 2: KV tensors record written_from
_MEMORY_CACHE: dict[str, PhaseGraph] = {}
_KV_WRITE_OPS = ("index_copy_", "index_copy")


def _step_module(model: nn.Module, cache: Any) -> nn.Module:
    from torch import nn

    class DecoderStep(nn.Module):
        """One forward of a causal LM over a static KV cache (the exported program)."""

        def __init__(self) -> None:
            super().__init__()
            self.lm = model
            self.cache = cache

        def forward(self, input_ids: Any, cache_position: Any) -> Any:
            return self.lm(input_ids=input_ids, past_key_values=self.cache,
                           cache_position=cache_position, use_cache=True,
                           logits_to_keep=1).logits

    return DecoderStep()


def _kv_tensors(exported: Any, graph_gemms: dict[str, Any], name: str) -> tuple[KVCacheTensor,
                                                                                 ...]:
    """The cache writes of the exported program, as tensors linked to their readers."""
    writes: dict[str, list[Any]] = {}
    for node in exported.graph.nodes:
        if node.op == "call_function" and op_name(node.target) in _KV_WRITE_OPS:
            stack = node.meta.get("nn_module_stack") or {}
            path = [p for p, _ in stack.values()][-1] if stack else ""
            writes.setdefault(path, []).append(node)
    tensors = []
    for path, nodes in writes.items():
        readers = [g for g in graph_gemms.values()
                   if g.kind == "matmul" and g.name.split("/", 1)[0] == path]
        if len(nodes) != 2 or len(readers) != 2:
            raise AccelsimError(f"trace {name}: attention module {path!r} has {len(nodes)} KV "
                                f"cache writes and {len(readers)} attention matmuls; expected "
                                "2 and 2 (key and value; QK^T and PV)")
        for kind, write, reader in zip(("key", "value"), nodes, readers, strict=True):
            batch, kv_heads, positions, head_dim = node_shape(write.args[0])
            written = node_shape(write.args[3])[2]
            tensors.append(KVCacheTensor(
                name=f"{path}/{kind}_cache", kind=kind, batch=batch, kv_heads=kv_heads,
                positions=positions, head_dim=head_dim, written_positions=written,
                read_by=reader.name))
    return tuple(tensors)


def _trace(name: str, phase: Phase, shape: dict[str, int],
           model: nn.Module | None = None) -> PhaseGraph:
    """Export one phase of ``model`` (default: zoo ``name`` on the meta device; tests pass the
    real random-init model to check that both give one graph)."""
    import torch
    from transformers import StaticCache

    if model is None:
        model = build_causal_lm(name, meta=True)
    device = next(model.parameters()).device
    batch = shape["batch"]
    if phase == "prefill":
        tokens, start = shape["prompt_len"], 0
    else:
        tokens, start = 1, shape["context"]
    cache = StaticCache(config=model.config, max_cache_len=start + tokens)
    inputs = {"input_ids": torch.zeros(batch, tokens, dtype=torch.long, device=device),
              "cache_position": torch.arange(start, start + tokens, device=device)}
    module = _step_module(model, cache)
    exported = export_module(module, inputs, name=name)
    graph = graph_from_exported(exported, module, name=f"{name}.{phase}", input_shape=shape)
    kv = _kv_tensors(exported, {g.name: g for g in graph.gemms}, name)
    graph, kv = _cache_operands_from_state(graph, kv)
    return PhaseGraph(phase=phase, graph=graph, kv_cache=kv, shape=dict(shape))


def _cache_operands_from_state(graph: Graph, kv: tuple[KVCacheTensor, ...]
                               ) -> tuple[Graph, tuple[KVCacheTensor, ...]]:
    """The B operand of a cache-reading GEMM is the KV cache, model state kept between steps
    (where, the simulator's memory plan decides): its source is a model input, not the
    projection that wrote this step's positions into it (the tracer sees the cache write as
    data movement from that projection), which the tensor records as ``written_from``."""
    sources = {node.name: node.inputs[1] for node in graph.gemms
               if node.inputs and len(node.inputs) > 1}
    readers = {tensor.read_by for tensor in kv}
    nodes = tuple(
        dataclasses.replace(node, inputs=(node.inputs[0], MODEL_INPUT))
        if node.name in readers and node.inputs else node
        for node in graph.nodes)
    kv = tuple(dataclasses.replace(t, written_from=sources.get(t.read_by) or None) for t in kv)
    return dataclasses.replace(graph, nodes=nodes), kv


def trace_phase(name: str, phase: Phase, shape: dict[str, int]) -> PhaseGraph:
    """Prefill (``shape = {"batch", "prompt_len"}``) or decode step (``{"batch", "context"}``)
    of zoo decoder ``name``, already checked by :func:`accelsim.zoo.decoders.resolve_phase_shape`.
    Cached in-process and as JSON under ``<cache>/traces``, keyed like zoo traces."""
    fingerprint = "dec" + spec_fingerprint(name)
    key = trace_cache_key(f"{name}.{phase}{PHASE_TRACE_VERSION}", shape, fingerprint)
    return cached_json(zoo.cache_dir() / "traces" / f"{key}.json", PhaseGraph.from_dict,
                       lambda: _trace(name, phase, shape),
                       lambda traced: json.dumps(traced.to_dict()), memory=_MEMORY_CACHE)
