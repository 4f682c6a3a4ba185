"""The speech recognizer's phases (Whisper encoder + decoder, ``whisper_tiny_test_asr``): the
prefill encodes the window and writes the cross-attention cache once, a decode step reads it
and writes only its self-attention positions; MACs against the analytic count, the meta trace
against the real model's, the context family, the simulator's traffic and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accelsim.cli import main
from accelsim.errors import AccelsimError
from accelsim.graph import decoder_trace
from accelsim.graph.phases import DecoderPrecision, PhaseGraph, affine_in, with_precision
from accelsim.hw import load_hw, with_overrides
from accelsim.sim import generation as gen
from accelsim.zoo import get_spec
from accelsim.zoo.asr import build_asr_model
from accelsim.zoo.decoders import phase_macs, resolve_phase_shape

NAME = "whisper_tiny_test_asr"
CONFIG = get_spec("whisper_tiny_test").config_dict
LAYERS, HIDDEN = CONFIG["decoder_layers"], CONFIG["d_model"]
HEADS, ENCODED = CONFIG["decoder_attention_heads"], CONFIG["max_source_positions"]
HEAD_DIM = HIDDEN // HEADS
HW = Path(__file__).resolve().parents[2] / "hw_configs" / "int4_sparse.yaml"
W4A4_SP24 = DecoderPrecision(weight_bits=4, act_bits=4, attention_bits=8, kv_bits=8,
                             sparsity="2:4")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELSIM_CACHE", str(tmp_path_factory.mktemp("recognizer-cache")))
        yield


def trace(phase: str, **shape: int) -> PhaseGraph:
    return decoder_trace.trace_phase(NAME, phase, resolve_phase_shape(NAME, phase, **shape))


def kinds(graph: PhaseGraph) -> list[tuple[str, str, int, int]]:
    """(attention, kind, positions, written positions) of each cache tensor, in read order."""
    return [(t.name.split(".")[-1].split("/")[0], t.kind, t.positions, t.written_positions)
            for t in graph.kv_cache]


def test_shapes_default_to_the_decoding_prompt_and_budget_and_reject_bad_input():
    # gen_len: greedy decoding's 32 tokens, less where the positions end (16 here).
    assert resolve_phase_shape(NAME, "generate") == {"batch": 1, "prompt_len": 2, "gen_len": 14}
    assert resolve_phase_shape("whisper_tiny_en_asr", "generate")["gen_len"] == 32
    assert resolve_phase_shape(NAME, "decode") == {"batch": 1, "context": 2}
    limit = CONFIG["max_target_positions"]
    with pytest.raises(AccelsimError, match=f"needs {limit + 1} positions, beyond the model's "
                                            f"{limit} \\(allowed: context at most {limit - 1}\\)"):
        resolve_phase_shape(NAME, "decode", context=limit)
    with pytest.raises(AccelsimError, match="speech recognizers: whisper_tiny_en_asr"):
        resolve_phase_shape("whisper_tiny_test", "decode")


def test_prefill_encodes_the_window_and_writes_the_cross_attention_cache_once():
    prefill = trace("prefill", batch=2, prompt_len=3)
    assert prefill.graph.macs == phase_macs(NAME, "prefill", prefill.shape)
    assert kinds(prefill) == [("self_attn", "key", 3, 3), ("self_attn", "value", 3, 3),
                              ("encoder_attn", "key", ENCODED, ENCODED),
                              ("encoder_attn", "value", ENCODED, ENCODED)] * LAYERS
    gemms = {g.name: g for g in prefill.graph.gemms}
    cross_key = prefill.kv_cache[2]
    assert cross_key.written_from.endswith("encoder_attn.k_proj")
    assert gemms[cross_key.written_from].m == 2 * ENCODED  # the encoder output, projected once
    qk = gemms[cross_key.read_by]
    assert (qk.m, qk.k, qk.n, qk.count) == (3, HEAD_DIM, ENCODED, 2 * HEADS)
    assert any(g.kind == "conv" for g in prefill.graph.gemms)  # the encoder ran
    # The float convolutional front end is the host's at any precision; the rest the chip's.
    precise = with_precision(prefill, W4A4_SP24)
    assert all(g.on_host == (g.kind == "conv") for g in precise.graph.gemms)


def test_decode_step_reads_the_cross_attention_cache_and_writes_one_position():
    step = trace("decode", batch=2, context=5)
    assert step.graph.macs == phase_macs(NAME, "decode", step.shape)
    assert kinds(step) == [("self_attn", "key", 6, 1), ("self_attn", "value", 6, 1),
                           ("encoder_attn", "key", ENCODED, 0),
                           ("encoder_attn", "value", ENCODED, 0)] * LAYERS
    assert not any(g.kind == "conv" or "encoder_attn.k_proj" in g.name
                   for g in step.graph.gemms)  # neither the encoder nor cross K/V again
    linears = [g for g in step.graph.gemms if not g.weight_is_activation]
    assert {g.m for g in linears} == {2}
    cross = [t for t in step.kv_cache if t.written_positions == 0]
    assert {t.written_from for t in cross} == {None}
    precise = with_precision(step, W4A4_SP24)
    # One requantize per GEMM input and per written cache tensor; the cross cache has none.
    requantize = [v for v in precise.graph.vectors if v.vector_op == "requantize"]
    assert len(requantize) == len(step.graph.gemms) + len(step.kv_cache) - len(cross)
    assert [t.written_by for t in precise.kv_cache if t.written_positions == 0] == [None] * 2


def test_a_stack_named_dense_site_prices_only_that_stacks_ffns_dense():
    # Decoder FFNs dense, encoder FFNs 2:4; the decode step, which runs no encoder, accepts the
    # encoder's name too.
    rules = dict(weight_bits=4, act_bits=4, attention_bits=8, kv_bits=8, sparsity="2:4")
    for dense, sparse_stack in ((("decoder.ffn_up", "decoder.ffn_down"), "encoder"),
                                (("encoder.ffn_up", "encoder.ffn_down"), "decoder")):
        for phase in ("prefill", "decode"):
            precise = with_precision(trace(phase), DecoderPrecision(**rules, dense_sites=dense))
            ffn = {g.name: g.sparsity for g in precise.graph.gemms
                   if g.name.endswith(("fc1", "fc2"))}
            assert ffn and all((s == "2:4") == (f".{sparse_stack}." in n) for n, s in ffn.items())


def test_decode_steps_are_affine_in_context_and_batch():
    at5, at6 = trace("decode", context=5), trace("decode", context=6)
    assert affine_in("context", at5, at6, 11) == trace("decode", context=11)
    one, two = trace("decode", batch=1, context=5), trace("decode", batch=2, context=5)
    assert affine_in("batch", one, two, 3) == trace("decode", batch=3, context=5)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_meta_trace_equals_the_trace_of_the_real_model(phase):
    shape = resolve_phase_shape(NAME, phase, batch=2)
    real = decoder_trace._trace(NAME, phase, shape, model=build_asr_model(NAME))
    assert real == decoder_trace.trace_phase(NAME, phase, shape)
    assert PhaseGraph.from_dict(real.to_dict()) == real


def test_a_decode_step_moves_its_weights_and_both_caches_from_dram():
    design = with_overrides(load_hw(HW), {"sram.inputs.size_kib": 1,
                                          "sram.outputs.size_kib": 1})
    cost = gen.simulate_pass(with_precision(trace("decode", context=10), W4A4_SP24), design)
    assert cost.kv_cache_placement == "dram"
    # Per layer at 8 bits: self-attention key + value over 11 positions, cross-attention's
    # over the encoder positions; the step writes one self-attention position of each.
    assert cost.kv_read_bytes == LAYERS * 2 * HEADS * HEAD_DIM * (11 + ENCODED)
    assert cost.kv_write_bytes == LAYERS * 2 * HEADS * HEAD_DIM
    assert cost.dram_bytes >= cost.weight_bytes + cost.kv_read_bytes


def test_run_phase_generate_on_the_recognizer(tmp_path, capsys):
    out = tmp_path / "gen.json"
    assert main(["run", "--hw", str(HW), "--model", NAME, "--phase", "generate",
                 "--gen-len", "4", "--json", str(out)]) == 0
    assert "decode      3 steps at contexts 2..4" in capsys.readouterr().out
    phase = json.loads(out.read_text())["phase"]
    assert phase["gen_len"] == 4 and phase["ttft_ms"] < phase["latency_ms"]


def test_the_recognizer_needs_a_phase(capsys):
    assert main(["run", "--hw", str(HW), "--model", NAME]) == 2
    assert "needs --phase (allowed: prefill, decode, generate)" in capsys.readouterr().err


def test_a_command_that_takes_yaml_models_names_the_recognizers_way(capsys):
    assert main(["trace", "--model", NAME]) == 2
    assert (f"{NAME!r} is a speech recognizer (Whisper encoder + decoder): it runs as phases, "
            f"`accelsim run --model {NAME} --phase prefill|decode|generate`"
            ) in capsys.readouterr().err
