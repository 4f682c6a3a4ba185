"""Greedy decoding on the integer reference (accelsim.ref.decode) for the tiny decoders: the
same tokens and bit-identical logits as the fake-quant model, the KV cache stored as codes at
its width, every op of the chip's datapath equal to the independent oracle, and the decode
step's executed MACs equal to the analytic count of the phase the simulator prices."""

import dataclasses

import numpy as np
import pytest
import torch

from accelsim import zoo
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.errors import AccelsimError
from accelsim.hw import load_hw
from accelsim.ref import oracle
from accelsim.ref.datapath import Datapath
from accelsim.ref.decode import greedy_fake_quant, greedy_int
from accelsim.tasks.base import Batch
from accelsim.zoo.decoders import build_causal_lm, dims, phase_macs
from accelsim.zoo.registry import get_spec

DECODERS = ("gpt2_tiny", "opt_tiny", "llama_tiny")
BATCH, PROMPT, GEN = 2, 8, 4


def _compressed(name, recipe):
    model = build_causal_lm(name, seed=0)
    apply_recipe(model, recipe)
    calibration = [Batch(inputs=zoo.example_inputs(name, batch=BATCH, seed=100 + i),
                         labels=torch.zeros(BATCH)) for i in range(recipe.calibration_batches)]
    calibrate(model, calibration, recipe)
    return model, export_int_model(model)


@pytest.fixture(scope="module", params=DECODERS)
def compressed(request):
    name = request.param
    model, int_model = _compressed(name, load_recipe("w4a4_sp24"))
    prompt = zoo.example_inputs(name, batch=BATCH, seq_len=PROMPT, seed=0)["input_ids"]
    return name, model, int_model, prompt


def test_linears_and_lm_head_are_compressed(compressed):
    name, _, int_model, _ = compressed
    layers = dims(get_spec(name))["layers"]
    per_block = 4 if name == "gpt2_tiny" else (7 if name == "llama_tiny" else 6)
    assert len(int_model.linears) == layers * per_block + 1
    assert int_model.linears[-1].name == "lm_head"
    assert all(layer.sparsity == "2:4" and layer.density == pytest.approx(0.5, abs=0.01)
               for layer in int_model.linears)
    assert len(int_model.attentions) == layers


def test_greedy_tokens_and_logits_equal_fake_quant(compressed):
    _, model, int_model, prompt = compressed
    tokens, logits = greedy_fake_quant(model, prompt, GEN)
    result = greedy_int(model, int_model, prompt, GEN)
    assert torch.equal(result.tokens, tokens)
    assert [p.phase for p in result.passes] == ["prefill"] + ["decode"] * (GEN - 1)
    for ours, theirs in zip(result.passes, logits, strict=True):
        assert torch.equal(ours.logits, theirs)


def test_kv_cache_holds_codes_at_its_width(compressed):
    name, model, int_model, prompt = compressed
    result = greedy_int(model, int_model, prompt, GEN)
    d = dims(get_spec(name))
    positions = PROMPT + GEN - 1  # the last token is not fed back
    for index, attention in enumerate(result.cache.attentions):
        for codes, quant in zip(result.cache.codes(index), (attention.k, attention.v),
                                strict=True):
            assert codes.dtype in (np.uint8, np.int8) and quant.bits == 8
            assert codes.shape == (BATCH, d["kv_heads"], positions, d["hidden"] // d["heads"])
            assert quant.qmin <= codes.min() and codes.max() <= quant.qmax
    elements = 2 * d["layers"] * BATCH * d["hidden"] * positions
    assert result.cache.stored_bytes() == elements  # 8-bit codes


def test_chip_datapath_ops_equal_oracle_and_decode_macs_equal_phase(compressed):
    name, model, int_model, prompt = compressed
    datapath = Datapath.of_hw(load_hw("hw_configs/int4_sparse.yaml"))
    result = greedy_int(model, int_model, prompt, GEN, datapath=datapath, record_ops=True)
    tokens, _ = greedy_fake_quant(model, prompt, GEN)
    assert torch.equal(result.tokens, tokens)  # the chip's fp16 vector unit agrees here
    for step, record in enumerate(result.passes):
        checks = [oracle.check_op(kind, out, inputs, max_rows=4)
                  for kind, out, inputs in record.records]
        kinds = {check.kind for check in checks}
        assert {"sparse_gemm", "bmm", "softmax"} <= kinds
        assert sum(c.mismatches for c in checks) == 0
        assert sum(c.elements for c in checks) > 0
        shape = ({"batch": BATCH, "prompt_len": PROMPT} if step == 0
                 else {"batch": BATCH, "context": PROMPT + step - 1})
        phase = "prefill" if step == 0 else "decode"
        assert sum(record.gemm_macs.values()) == phase_macs(name, phase, shape)


def test_kv_bits_sets_the_cache_width():
    recipe = dataclasses.replace(load_recipe("w4a4_sp24"), kv_bits=4)
    model, int_model = _compressed("gpt2_tiny", recipe)
    assert all(a.k.bits == 4 and a.v.bits == 4 and a.q.bits == 8 for a in int_model.attentions)
    prompt = zoo.example_inputs("gpt2_tiny", batch=BATCH, seed=0)["input_ids"]
    result = greedy_int(model, int_model, prompt, GEN)
    keys, values = result.cache.codes(0)
    assert max(keys.max(), values.max()) <= 15
    assert torch.equal(result.tokens, greedy_fake_quant(model, prompt, GEN)[0])
    precision = model.transformer.h[0].attn.accelsim_attention_precision
    assert (precision.weight_bits, precision.act_bits) == (4, 8)


def test_bad_generation_is_one_line(compressed):
    _, model, int_model, prompt = compressed
    with pytest.raises(AccelsimError, match="gen_len=0 must be >= 1"):
        greedy_int(model, int_model, prompt, 0)
    with pytest.raises(AccelsimError, match="kv_bits: 16"):
        apply_recipe(build_causal_lm("gpt2_tiny"),
                     dataclasses.replace(load_recipe("w4a4"), kv_bits=16))
