"""Decoder zoo entries and their phase graphs: shapes, KV cache tensors, MACs, and the affine
families (context, batch) that a generation and the crossover search rely on."""

from __future__ import annotations

import pytest

from accelsim import zoo
from accelsim.compress.recipe import recipe_from_dict
from accelsim.errors import AccelsimError
from accelsim.graph import decoder_trace
from accelsim.graph.phases import DecoderPrecision, PhaseGraph, affine_in, with_precision
from accelsim.zoo.decoders import dims, phase_macs, resolve_phase_shape

TINY_DECODERS = ("gpt2_tiny", "opt_tiny", "llama_tiny")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELSIM_CACHE", str(tmp_path_factory.mktemp("decoder-cache")))
        yield


def trace(name: str, phase: str, **shape: int) -> PhaseGraph:
    return decoder_trace.trace_phase(name, phase, resolve_phase_shape(name, phase, **shape))


def test_full_size_decoders_have_their_published_shapes():
    llama = dims(zoo.get_spec("llama2_7b"))
    assert llama == {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 32, "ffn": 11008,
                     "vocab": 32000}
    assert dims(zoo.get_spec("opt_1_3b"))["hidden"] == 2048
    assert zoo.get_spec("gpt2").family == "gpt2"
    assert zoo.get_spec("gpt2").default_input_shape == {"seq_len": 128, "gen_len": 128}
    # GPT-2 small: 124.44 M parameters with the tied embedding counted once.
    assert round(zoo.param_count("gpt2") / 1e6, 2) == 124.44


def test_phase_shapes_fill_defaults_and_reject_bad_input():
    assert resolve_phase_shape("gpt2_tiny", "decode") == {"batch": 1, "context": 8}
    assert resolve_phase_shape("gpt2_tiny", "generate", batch=2) == {
        "batch": 2, "prompt_len": 8, "gen_len": 4}
    cases = [
        (("bert_tiny", "decode"), {}, "needs a decoder model; bert_tiny is an encoder-only bert"),
        (("gpt2_tiny", "decode"), {"context": 64}, "needs 65 positions, beyond the model's 64"),
        (("gpt2_tiny", "generate"), {"prompt_len": 60, "gen_len": 6},
         "needs 65 positions, beyond the model's 64"),
        (("gpt2_tiny", "decode"), {"batch": 0}, "batch=0 must be an integer >= 1"),
        (("gpt2_tiny", "prefill"), {"context": 4}, "context=4 does not apply to phase 'prefill'"),
        (("gpt2_tiny", "sample"), {}, "phase: 'sample' is not one of prefill, decode, generate"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(AccelsimError, match=message):
            resolve_phase_shape(*args, **kwargs)


@pytest.mark.parametrize("name", TINY_DECODERS)
def test_decode_step_is_gemv_shaped_with_attention_over_the_cache(name):
    d = dims(zoo.get_spec(name))
    head_dim = d["hidden"] // d["heads"]
    step = trace(name, "decode", batch=2, context=10)
    assert step.graph.macs == phase_macs(name, "decode", step.shape)
    linears = [g for g in step.graph.gemms if not g.weight_is_activation]
    assert {g.m for g in linears} == {2}  # M = batch
    attention = [g for g in step.graph.gemms if g.weight_is_activation]
    assert len(attention) == 2 * d["layers"]
    qk, pv = attention[0], attention[1]
    assert (qk.m, qk.k, qk.n, qk.count) == (1, head_dim, 11, 2 * d["heads"])
    assert (pv.m, pv.k, pv.n, pv.count) == (1, 11, head_dim, 2 * d["heads"])
    # The KV cache: a key and a value tensor per layer, read by QK^T and PV of that layer.
    assert len(step.kv_cache) == 2 * d["layers"]
    key, value = step.kv_cache[0], step.kv_cache[1]
    assert (key.kind, key.read_by, value.kind, value.read_by) == ("key", qk.name, "value", pv.name)
    assert (key.batch, key.kv_heads, key.positions, key.head_dim) == (2, d["kv_heads"], 11,
                                                                      head_dim)
    assert key.written_positions == 1 and key.bits is None


@pytest.mark.parametrize("name", TINY_DECODERS)
def test_prefill_covers_the_prompt_and_writes_it_to_the_cache(name):
    prefill = trace(name, "prefill", batch=1, prompt_len=6)
    assert prefill.graph.macs == phase_macs(name, "prefill", prefill.shape)
    head = prefill.graph.gemms[-1]
    assert head.m == 1 and head.n == dims(zoo.get_spec(name))["vocab"]  # last position only
    assert {t.written_positions for t in prefill.kv_cache} == {6}
    assert {t.positions for t in prefill.kv_cache} == {6}


def test_phase_graphs_round_trip_through_json_and_the_disk_cache():
    step = trace("gpt2_tiny", "decode", context=5)
    assert PhaseGraph.from_dict(step.to_dict()) == step
    decoder_trace._MEMORY_CACHE.clear()
    assert trace("gpt2_tiny", "decode", context=5) == step  # read back from disk


@pytest.mark.parametrize("name", ["gpt2_tiny", "llama_tiny"])
def test_decode_graphs_are_affine_in_context_and_batch(name):
    """A generation's steps and the crossover search use graphs derived from two traces:
    checked here against a third trace."""
    at5, at6 = trace(name, "decode", context=5), trace(name, "decode", context=6)
    assert affine_in("context", at5, at6, 17) == trace(name, "decode", context=17)
    one, two = trace(name, "decode", batch=1, context=5), trace(name, "decode", batch=2, context=5)
    assert affine_in("batch", one, two, 3) == trace(name, "decode", batch=3, context=5)
    with pytest.raises(AccelsimError, match="must be one decode graph differing only in batch"):
        affine_in("batch", one, at6, 4)


def test_precision_sets_widths_2_4_and_the_kv_cache_width():
    step = trace("gpt2_tiny", "decode", context=5)
    precise = with_precision(step, DecoderPrecision(4, 4, 8, 4, "2:4"))
    readers = {t.read_by for t in precise.kv_cache}
    for node in precise.graph.gemms:
        if node.weight_is_activation:
            expected = (4, 8) if node.name in readers else (8, 8)
            assert (node.weight_bits, node.act_bits) == expected
        else:
            assert (node.weight_bits, node.sparsity, node.weight_density) == (4, "2:4", 0.5)
    assert {t.bits for t in precise.kv_cache} == {4}
    requantize = [v for v in precise.graph.vectors if v.vector_op == "requantize"]
    assert len(requantize) == len(step.graph.gemms) + len(step.kv_cache)


def test_dense_sites_leave_those_decoder_gemms_dense():
    step = trace("gpt2_tiny", "decode", context=5)
    precise = with_precision(step, DecoderPrecision(4, 4, 8, 4, "2:4", dense_sites=("qkv",)))
    sparsity = {n.name: n.sparsity for n in precise.graph.gemms if not n.weight_is_activation}
    qkv = {name for name in sparsity if name.endswith("c_attn")}
    assert qkv and all(sparsity[name] == "dense" for name in qkv)
    assert {sparsity[name] for name in sparsity if name not in qkv} == {"2:4"}


def test_a_stack_qualified_dense_site_is_refused_on_a_single_stack_decoder():
    step = trace("gpt2_tiny", "decode", context=5)
    with pytest.raises(AccelsimError, match=r"^dense_sites: 'decoder.ffn_up' names the decoder "
                                            r"stack, but no linear of model 'gpt2_tiny"):
        with_precision(step, DecoderPrecision(4, 4, 8, 4, "2:4", dense_sites=("decoder.ffn_up",)))


def test_the_lm_head_site_gives_the_lm_head_its_own_widths_and_keeps_it_dense():
    step = trace("gpt2_tiny", "decode", context=5)
    precise = with_precision(step, DecoderPrecision(
        4, 4, 8, 4, "2:4", weight_bits_by_site={"lm_head": 8}, dense_sites=("lm_head",)))
    weights = {n.name: (n.weight_bits, n.act_bits, n.sparsity)
               for n in precise.graph.gemms if not n.weight_is_activation}
    heads = {name for name in weights if name.endswith("lm_head")}
    assert len(heads) == 1
    assert weights[heads.pop()] == (8, 4, "dense")
    assert {w for name, w in weights.items() if not name.endswith("lm_head")} == {(4, 4, "2:4")}


def test_recipe_kv_bits_is_validated():
    assert recipe_from_dict({"name": "kv4", "kv_bits": 4}).kv_bits == 4
    with pytest.raises(AccelsimError, match="kv_bits: 3 is not a supported KV-cache width"):
        recipe_from_dict({"name": "kv3", "kv_bits": 3})


def test_meta_build_allocates_no_weights_and_traces_like_the_real_model():
    from accelsim.zoo.decoders import build_causal_lm

    meta = build_causal_lm("llama_tiny", meta=True)
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    real = build_causal_lm("llama_tiny", seed=0)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in real.named_parameters()]


@pytest.mark.parametrize("name", TINY_DECODERS)
def test_cache_free_backbone_trace_matches_the_analytic_count(name):
    from accelsim.graph.trace_cache import trace_named_model

    graph = trace_named_model(name, seq_len=12, batch=2)
    assert graph.macs == zoo.analytic_macs(name, {"batch": 2, "seq_len": 12})
    with pytest.raises(AccelsimError, match="has no classification head"):
        zoo.build_model(name, num_labels=3)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_meta_trace_equals_the_trace_of_the_real_model(phase):
    from accelsim.zoo.decoders import build_causal_lm

    shape = resolve_phase_shape("llama_tiny", phase, batch=2)
    real = decoder_trace._trace("llama_tiny", phase, shape, model=build_causal_lm("llama_tiny"))
    assert real == decoder_trace.trace_phase("llama_tiny", phase, shape)
