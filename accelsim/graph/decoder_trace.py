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

A speech recognizer of the zoo (``whisper_tiny_en_asr``, :mod:`accelsim.zoo.asr`) exports the
same two passes over transformers' ``EncoderDecoderCache`` of two static caches:

* prefill: ``input_features`` of Whisper's 30 s window through the encoder, then the decoder
  over the prompt; each decoder layer's cross-attention projects the encoder output to keys and
  values once and writes them to the cross-attention cache (``encoder positions`` long);
* decode step: the decoder over one token; the cross-attention keys and values are the cache
  the prefill wrote (state, read by QK^T and PV, written by no node of the step: their
  :class:`~accelsim.graph.phases.KVCacheTensor` has ``written_positions`` 0).

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
from accelsim.zoo.asr import asr_spec, build_asr_model
from accelsim.zoo.decoders import build_causal_lm, encoder_window_frames, is_speech_recognizer

if TYPE_CHECKING:
    from torch import nn

# Bump when this module changes what a phase trace holds (the disk cache keys on it, besides
# the tracer's own TRACER_VERSION).
PHASE_TRACE_VERSION = 3  # 2: KV tensors record written_from; 3: speech recognizers
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


def _recognizer_step_module(asr: nn.Module, cache: Any) -> nn.Module:
    import torch
    from torch import nn

    class RecognizerStep(nn.Module):
        """One pass of a speech recognizer over an encoder-decoder cache (the exported
        program): with ``input_features`` the prefill (encoder, then the decoder over the
        prompt); with ``cross_keys`` and ``cross_values`` (``layers x batch x heads x encoder
        positions x head_dim``, the cross-attention cache the prefill wrote) a decode step."""

        def __init__(self) -> None:
            super().__init__()
            self.asr = asr
            self.cache = cache

        def forward(self, decoder_input_ids: Any, cache_position: Any,
                    input_features: Any = None, cross_keys: Any = None,
                    cross_values: Any = None) -> Any:
            if input_features is not None:
                memory = self.asr(input_features=input_features)
            else:
                cross = self.cache.cross_attention_cache.layers
                for layer, keys, values in zip(cross, cross_keys, cross_values, strict=True):
                    layer.keys, layer.values = keys, values
                # The decoder runs cross-attention only when given encoder states; with the
                # cache marked as updated it reads keys and values from the cache, not these.
                memory = torch.zeros(decoder_input_ids.shape[0], 1, self.asr.config.d_model,
                                     device=decoder_input_ids.device)
            hidden = self.asr.whisper.model.decoder(
                input_ids=decoder_input_ids, encoder_hidden_states=memory, cache=self.cache,
                use_cache=True, cache_position=cache_position).last_hidden_state
            return self.asr.whisper.proj_out(hidden[:, -1:])

    return RecognizerStep()


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

    if is_speech_recognizer(name):
        return _trace_recognizer(name, phase, shape, model)
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


def _trace_recognizer(name: str, phase: Phase, shape: dict[str, int],
                      model: nn.Module | None) -> PhaseGraph:
    """:func:`_trace` of speech recognizer ``name``; its KV cache lists each decoder layer's
    self-attention key and value, then its cross-attention key and value."""
    import torch
    from transformers import EncoderDecoderCache, StaticCache

    if model is None:
        model = build_asr_model(name, meta=True)
    config = model.config
    device = next(model.parameters()).device
    batch, encoded = shape["batch"], config.max_source_positions
    heads = config.decoder_attention_heads
    head_dim = config.d_model // heads
    tokens, start = ((shape["prompt_len"], 0) if phase == "prefill" else (1, shape["context"]))
    cache = EncoderDecoderCache(StaticCache(config=config, max_cache_len=start + tokens),
                                StaticCache(config=config, max_cache_len=encoded))
    inputs: dict[str, Any] = {
        "decoder_input_ids": torch.zeros(batch, tokens, dtype=torch.long, device=device),
        "cache_position": torch.arange(start, start + tokens, device=device)}
    if phase == "prefill":
        inputs["input_features"] = torch.zeros(batch, config.num_mel_bins,
                                               encoder_window_frames(name), device=device)
    else:
        stored = torch.zeros(config.decoder_layers, batch, heads, encoded, head_dim,
                             device=device)
        for layer in range(config.decoder_layers):
            cache.cross_attention_cache.update(stored[layer], stored[layer], layer)
            cache.is_updated[layer] = True
        inputs.update(cross_keys=stored, cross_values=stored.clone())
    module = _recognizer_step_module(model, cache)
    exported = export_module(module, inputs, name=name)
    graph = graph_from_exported(exported, module, name=f"{name}.{phase}", input_shape=shape)
    gemms = {g.name: g for g in graph.gemms}
    kv = list(_kv_tensors(exported, gemms, name))
    if phase == "decode":
        kv += _read_only_cross_cache(gemms, batch, heads, encoded, head_dim)
    position = {node.name: i for i, node in enumerate(graph.nodes)}
    kv.sort(key=lambda tensor: position[tensor.read_by])  # the order the pass reads them
    graph, traced = _cache_operands_from_state(graph, tuple(kv))
    return PhaseGraph(phase=phase, graph=graph, kv_cache=traced, shape=dict(shape))


def _read_only_cross_cache(gemms: dict[str, Any], batch: int, heads: int, encoded: int,
                           head_dim: int) -> list[KVCacheTensor]:
    """A decode step's cross-attention keys and values: read by each ``encoder_attn``'s QK^T
    and PV, written by no node of the step."""
    readers: dict[str, list[str]] = {}
    for node in gemms.values():
        path = node.name.split("/", 1)[0]
        if node.kind == "matmul" and path.endswith(".encoder_attn"):
            readers.setdefault(path, []).append(node.name)
    return [KVCacheTensor(name=f"{path}/{kind}_cache", kind=kind, batch=batch, kv_heads=heads,
                          positions=encoded, head_dim=head_dim, written_positions=0,
                          read_by=reader)
            for path, (qk, pv) in readers.items()
            for kind, reader in (("key", qk), ("value", pv))]


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
    fingerprint = ("asr" + spec_fingerprint(asr_spec(name).whisper)
                   if is_speech_recognizer(name) else "dec" + spec_fingerprint(name))
    key = trace_cache_key(f"{name}.{phase}{PHASE_TRACE_VERSION}", shape, fingerprint)
    return cached_json(zoo.cache_dir() / "traces" / f"{key}.json", PhaseGraph.from_dict,
                       lambda: _trace(name, phase, shape),
                       lambda traced: json.dumps(traced.to_dict()), memory=_MEMORY_CACHE)
