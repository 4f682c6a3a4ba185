"""Greedy decoding through the integer reference: a prefill over the prompt, then one decode
step per generated token, with the KV cache held as integer codes at its stored width.

The executor is :func:`accelsim.ref.execute.build_int_executor`'s (every quantized GEMM on the
integer kernels, on a chosen :class:`~accelsim.ref.datapath.Datapath`); the model's own causal-LM
forward runs it with a :class:`CodeCache` as its ``cache`` and the LM head on the last
position only (``logits_to_keep=1``, as generation and the traced phases do). Each attention
layer's new K and V are quantized once, when written, by that layer's K/V quantizers (the recipe's
``kv_bits``, default ``attention_bits``: :func:`accelsim.compress.apply.kv_cache_bits`), and
stored as codes; every later step reads the stored codes. QK^T and PV read exactly those codes:
the attention's own quantizer recovers them from the dequantized values it is handed
(``|code - zp| <= 255`` and the float32 round trip errs by less than half a step).

The fake-quant model decodes the same way with transformers' float cache, quantizing the whole
cache again at every step; both give one sequence of codes, so on the fake-quant datapath the
greedy tokens agree (tests). :func:`greedy_fake_quant` is that side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import DynamicCache, EncoderDecoderCache

from accelsim.compress.export import IntAttention, IntModel
from accelsim.errors import AccelsimError
from accelsim.ref import oracle
from accelsim.ref.chip import ORACLE_ROWS, ChipChecks, sqnr_db
from accelsim.ref.codes import dequantize
from accelsim.ref.datapath import FAKE_QUANT_DATAPATH, Datapath, DatapathCounts
from accelsim.ref.execute import COUNTS_ATTR, build_int_executor, quantize_act
from accelsim.zoo.asr import (
    CROSS_ATTENTION,
    SELF_ATTENTION,
    DecodingRules,
    greedy_transcribe,
)


class CodeCache(DynamicCache):
    """A KV cache of integer codes: layer ``i`` stores its K and V as the codes of the
    quantizers ``attentions[i].k`` / ``.v`` (uint8 or int8 tensors, ``kv_bits`` wide), written
    once per position, and hands the attention their dequantized values."""

    def __init__(self, attentions: Sequence[IntAttention]) -> None:
        super().__init__()
        self.attentions = tuple(attentions)

    def _quantized(self, key_states: Tensor, value_states: Tensor,
                   layer_idx: int) -> tuple[Tensor, Tensor]:
        attention = self.attentions[layer_idx]
        return (torch.from_numpy(quantize_act(key_states, attention.k)),
                torch.from_numpy(quantize_act(value_states, attention.v)))

    def _values(self, key_codes: Tensor, value_codes: Tensor,
                layer_idx: int) -> tuple[Tensor, Tensor]:
        k, v = self.attentions[layer_idx].k, self.attentions[layer_idx].v
        return (torch.from_numpy(dequantize(key_codes.numpy(), k.scale, k.zero_point)),
                torch.from_numpy(dequantize(value_codes.numpy(), v.scale, v.zero_point)))

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Tensor, Tensor]:
        new_keys, new_values = self._quantized(key_states, value_states, layer_idx)
        key_codes, value_codes = super().update(new_keys, new_values, layer_idx, *args, **kwargs)
        return self._values(key_codes, value_codes, layer_idx)

    def codes(self, layer_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored key and value codes of layer ``layer_idx``, ``[batch, kv_heads, positions,
        head_dim]``."""
        layer = self.layers[layer_idx]
        return layer.keys.numpy(), layer.values.numpy()

    def stored_bytes(self) -> int:
        """Bytes of the cache packed at each layer's stored width."""
        total = 0
        for index, attention in enumerate(self.attentions):
            keys, values = self.codes(index)
            total += (keys.size * attention.k.bits + values.size * attention.v.bits + 7) // 8
        return total


class CrossCodeCache(CodeCache):
    """The cross-attention K/V of an encoder-decoder as codes, quantized once from the encoder
    output. transformers' Whisper attention writes each layer once (first step) and then reads
    ``layers[i].keys`` / ``.values`` itself, not through :meth:`update`: the layers hold the
    codes' dequantized values, from which the attention's quantizers recover the codes exactly
    (as :class:`CodeCache` hands them over), and the codes are kept beside them."""

    def __init__(self, attentions: Sequence[IntAttention]) -> None:
        super().__init__(attentions)
        self.stored_codes: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[Tensor, Tensor]:
        if layer_idx in self.stored_codes:
            raise AccelsimError(f"cross-attention cache: layer {layer_idx} written twice; its "
                                "K/V are computed once per encoder output")
        self.stored_codes[layer_idx] = self._quantized(key_states, value_states, layer_idx)
        keys, values = self._values(*self.stored_codes[layer_idx], layer_idx)
        return DynamicCache.update(self, keys, values, layer_idx, *args, **kwargs)

    def codes(self, layer_idx: int) -> tuple[np.ndarray, np.ndarray]:
        keys, values = self.stored_codes[layer_idx]
        return keys.numpy(), values.numpy()


@dataclass(frozen=True, eq=False)
class PassRecord:
    """One forward of a generation (``prefill`` or ``decode``): the positions it fed, its
    last-position logits ``[batch, vocab]``, the GEMM MACs it executed by kind, and (when
    recorded) its ops for :func:`accelsim.ref.oracle.check_op`."""

    phase: str
    tokens: int
    logits: Tensor
    gemm_macs: dict[str, int]
    records: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class DecodeResult:
    """``tokens`` ``[batch, gen_len]`` (the prefill yields the first), one :class:`PassRecord`
    per forward, the executor's cumulative counts and the final cache."""

    tokens: Tensor
    passes: tuple[PassRecord, ...]
    counts: DatapathCounts
    cache: CodeCache


def attentions_by_layer(model: nn.Module, int_model: IntModel,
                        within: str | None = None) -> list[IntAttention]:
    """The integer model's attention entries (those whose module name matches the regular
    expression ``within``, default all) in the order of the modules' ``layer_idx`` (the cache's
    layer index); one line when a decoder layer's attention is not quantized."""
    by_index: dict[int, IntAttention] = {}
    for attention in int_model.attentions:
        if within is not None and not re.fullmatch(within, attention.name):
            continue
        module = model.get_submodule(attention.name)
        by_index[int(module.layer_idx)] = attention
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        where = "" if within is None else f" matching {within!r}"
        raise AccelsimError(f"int model ({int_model.family}): quantized attention layers{where} "
                            f"{sorted(by_index)}; the KV cache needs every decoder layer's "
                            "(allowed: a recipe with attention_bits 4 or 8"
                            f"{'' if within is None else ', decoder attention quantized'})")
    return [by_index[i] for i in range(len(by_index))]


def _check_generation(input_ids: Tensor, gen_len: int) -> None:
    if input_ids.ndim != 2 or input_ids.shape[1] < 1:
        raise AccelsimError(f"decode: input_ids shape {tuple(input_ids.shape)}; allowed: "
                            "[batch, prompt_len] with prompt_len >= 1")
    if gen_len < 1:
        raise AccelsimError(f"decode: gen_len={gen_len} must be >= 1")


def _start_pass(counts: DatapathCounts, record_ops: bool) -> dict[str, int]:
    """The GEMM MACs executed so far (a pass's starting point); its ops recorded from here on
    when ``record_ops``."""
    counts.records = [] if record_ops else None
    return dict(counts.gemm_macs)


def _finished_pass(phase: str, tokens: int, logits: Tensor, counts: DatapathCounts,
                   macs_before: dict[str, int]) -> PassRecord:
    """The :class:`PassRecord` of a pass begun by :func:`_start_pass`."""
    return PassRecord(phase=phase, tokens=tokens, logits=logits,
                      gemm_macs={kind: macs - macs_before.get(kind, 0)
                                 for kind, macs in counts.gemm_macs.items()},
                      records=counts.records or [])


def greedy_int(model: nn.Module, int_model: IntModel, input_ids: Tensor, gen_len: int,
               datapath: Datapath = FAKE_QUANT_DATAPATH, record_ops: bool = False) -> DecodeResult:
    """Greedy-decode ``gen_len`` tokens after ``input_ids`` on the integer reference.

    ``model`` is the compressed causal LM ``int_model`` was exported from (left untouched).
    ``record_ops`` keeps every op of every pass for the oracle."""
    _check_generation(input_ids, gen_len)
    executor = build_int_executor(model, int_model, datapath=datapath)
    counts: DatapathCounts = getattr(executor, COUNTS_ATTR)
    cache = CodeCache(attentions_by_layer(executor, int_model))
    passes: list[PassRecord] = []
    tokens: list[Tensor] = []
    feed = input_ids
    with torch.no_grad():
        for step in range(gen_len):
            macs_before = _start_pass(counts, record_ops)
            output = executor(input_ids=feed, cache=cache, use_cache=True, logits_to_keep=1)
            logits = output.logits[:, -1, :].float()
            passes.append(_finished_pass("prefill" if step == 0 else "decode",
                                         int(feed.shape[1]), logits, counts, macs_before))
            feed = logits.argmax(dim=-1, keepdim=True)
            tokens.append(feed)
    counts.records = None
    return DecodeResult(tokens=torch.cat(tokens, dim=1), passes=tuple(passes), counts=counts,
                        cache=cache)


def greedy_fake_quant(model: nn.Module, input_ids: Tensor, gen_len: int) -> tuple[Tensor,
                                                                                   list[Tensor]]:
    """The fake-quant model's greedy tokens ``[batch, gen_len]`` and last-position logits per
    pass, with transformers' float KV cache."""
    _check_generation(input_ids, gen_len)
    model.eval()
    cache = DynamicCache()
    tokens: list[Tensor] = []
    logits: list[Tensor] = []
    feed = input_ids
    with torch.no_grad():
        for _ in range(gen_len):
            output = model(input_ids=feed, cache=cache, use_cache=True,
                           logits_to_keep=1)
            logits.append(output.logits[:, -1, :].float())
            feed = logits[-1].argmax(dim=-1, keepdim=True)
            tokens.append(feed)
    return torch.cat(tokens, dim=1), logits


def encoder_decoder_cache(model: nn.Module, int_model: IntModel) -> EncoderDecoderCache:
    """An empty cache of codes for a Whisper recognizer: its decoder self-attention's
    :class:`CodeCache` and cross-attention's :class:`CrossCodeCache`."""
    return EncoderDecoderCache(
        CodeCache(attentions_by_layer(model, int_model, SELF_ATTENTION)),
        CrossCodeCache(attentions_by_layer(model, int_model, CROSS_ATTENTION)))


@dataclass(frozen=True, eq=False)
class TranscriptionResult:
    """Greedy token ids per clip (prompt and end token left out), the executor's counts and
    the final cache."""

    tokens: list[list[int]]
    counts: DatapathCounts
    cache: EncoderDecoderCache


def transcribe_int(executor: nn.Module, int_model: IntModel, input_features: Tensor,
                   rules: DecodingRules) -> TranscriptionResult:
    """Greedy transcription of ``(B, mels, T)`` features on the integer reference.

    ``executor`` is :func:`accelsim.ref.execute.build_int_executor`'s for ``int_model`` and the
    compressed ``WhisperAsr`` it was exported from, decoder attention quantized
    (:func:`accelsim.accuracy.asr.compress_asr`); one executor serves many calls (its counts
    accumulate). The decoding is :func:`accelsim.zoo.asr.greedy_transcribe`'s (prompt,
    suppressed tokens, end), with the executor as the model and a fresh
    :func:`encoder_decoder_cache` as the cache."""
    cache = encoder_decoder_cache(executor, int_model)
    tokens = greedy_transcribe(executor, input_features, rules, cache)
    return TranscriptionResult(tokens=tokens, counts=getattr(executor, COUNTS_ATTR), cache=cache)


class TranscriptionPasses:
    """A speech recognizer (or its integer executor) called as greedy transcription calls it,
    its calls grouped into passes: the encoder and the first decoder step form the prefill,
    each further decoder step a decode pass. Each :class:`PassRecord` holds the pass's
    last-position logits as the model returned them (before decoding suppresses tokens) and,
    given the executor's ``counts``, the GEMM MACs it executed and (``record_ops``) its ops."""

    def __init__(self, model: nn.Module, counts: DatapathCounts | None = None,
                 record_ops: bool = False) -> None:
        self.model, self.config = model, model.config
        self.counts, self.record_ops = counts, record_ops
        self.passes: list[PassRecord] = []
        self._macs_before: dict[str, int] | None = None

    def __call__(self, **inputs: Any) -> Tensor:
        if self._macs_before is None:  # a pass begins
            self._macs_before = (_start_pass(self.counts, self.record_ops)
                                 if self.counts is not None else {})
        output = self.model(**inputs)
        if "decoder_input_ids" in inputs:  # a pass ends with its decoder step
            phase = "decode" if self.passes else "prefill"
            tokens = int(inputs["decoder_input_ids"].shape[1])
            logits = output[:, -1].float().clone()
            self.passes.append(
                _finished_pass(phase, tokens, logits, self.counts, self._macs_before)
                if self.counts is not None else PassRecord(phase, tokens, logits, {}))
            self._macs_before = None
        return output


# ---------------------------------------------------------------------------------------------
# Checks (accelsim verify --phase)
# ---------------------------------------------------------------------------------------------

# Which passes of a generation a phase check covers: the prefill, the decode steps, or both.
PHASE_PASSES: dict[str, tuple[str, ...]] = {
    "prefill": ("prefill",), "decode": ("decode",), "generate": ("prefill", "decode")}


@dataclass(frozen=True)
class GenerationCheck:
    """The integer reference on the fake-quant datapath against the fake-quant model, over
    every generation: greedy ``tokens`` compared and how many ``tokens_equal``; ``passes`` and
    how many gave ``identical_logits`` (bit for bit)."""

    tokens: int
    tokens_equal: int
    passes: int
    identical_logits: int

    @property
    def passed(self) -> bool:
        return self.tokens_equal == self.tokens and self.identical_logits == self.passes


def check_generation(model: nn.Module, int_model: IntModel, prompts: Sequence[Tensor],
                     gen_len: int) -> GenerationCheck:
    """Greedy-decode every prompt batch both ways (see :class:`GenerationCheck`)."""
    tokens = equal = passes = identical = 0
    for prompt in prompts:
        theirs, logits = greedy_fake_quant(model, prompt, gen_len)
        ours = greedy_int(model, int_model, prompt, gen_len)
        tokens += theirs.numel()
        equal += int((ours.tokens == theirs).sum())
        passes += len(logits)
        identical += sum(torch.equal(p.logits, fq) for p, fq in zip(ours.passes, logits,
                                                                     strict=True))
    return GenerationCheck(tokens, equal, passes, identical)


@dataclass(frozen=True, kw_only=True)
class DecodeChipReport(ChipChecks):
    """A generation on a chip's datapath (:class:`ChipChecks`), for the passes of ``phase``:
    greedy tokens that agree with the fake-quant model's, and the GEMM MACs executed against
    those of the phase graphs the simulator prices (``macs_linear``, ``macs_matmul``, summed over
    the passes)."""

    phase: str
    passes_checked: int
    tokens: int
    tokens_agree: int


def _phase_graph_macs(name: str, record: PassRecord, batch: int, prompt_len: int,
                      step: int) -> dict[str, int]:
    """GEMM MACs by kind (``macs_linear``, ``macs_matmul``) of the traced phase graph of pass
    ``step`` (0: the prefill; step ``k`` decodes at context ``prompt_len + k - 1``). A
    recognizer's convolutions, a float front end that the integer reference leaves to the host,
    are not counted."""
    from accelsim.graph.decoder_trace import trace_phase

    if record.phase == "prefill":
        traced = trace_phase(name, "prefill", {"batch": batch, "prompt_len": prompt_len})
    else:
        traced = trace_phase(name, "decode", {"batch": batch, "context": prompt_len + step - 1})
    macs: dict[str, int] = {}
    for node in traced.graph.gemms:
        if node.kind != "conv":
            macs[f"macs_{node.kind}"] = macs.get(f"macs_{node.kind}", 0) + node.macs
    return macs


def _add(totals: dict[str, int], more: dict[str, int], prefix: str = "") -> None:
    for key, value in more.items():
        totals[prefix + key] = totals.get(prefix + key, 0) + value


@dataclass
class _ChipTally:
    """What :class:`DecodeChipReport` sums over the generations of a phase check."""

    name: str
    phase: str
    checked: int = 0
    ops: int = 0
    elements: int = 0
    mismatches: int = 0
    tokens: int = 0
    agree: int = 0
    accumulators: int = 0
    saturations: int = 0
    executed: dict[str, int] = field(default_factory=dict)
    graph: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)
    ours: list[Tensor] = field(default_factory=list)
    theirs: list[Tensor] = field(default_factory=list)

    def add_generation(self, passes: Iterable[tuple[PassRecord, Tensor]],
                       counts: DatapathCounts, tokens: tuple[int, int], batch: int,
                       prompt_len: int) -> None:
        """One generation's passes, each with the fake-quant model's logits of that pass (the
        phase's checked by the oracle and against the traced graphs), its executor's counts and
        its ``(tokens, tokens that agree)``."""
        self.tokens += tokens[0]
        self.agree += tokens[1]
        self.accumulators += counts.accumulators
        self.saturations += counts.saturations
        _add(self.fallbacks, counts.float_fallbacks)
        for step, (record, fq) in enumerate(passes):
            if record.phase not in PHASE_PASSES[self.phase]:
                continue
            self.checked += 1
            self.ours.append(record.logits)
            self.theirs.append(fq)
            for kind, output, inputs in record.records:
                check = oracle.check_op(kind, output, inputs, max_rows=ORACLE_ROWS)
                self.ops += 1
                self.elements += check.elements
                self.mismatches += check.mismatches
            _add(self.executed, record.gemm_macs, "macs_")
            _add(self.graph, _phase_graph_macs(self.name, record, batch, prompt_len, step))

    def report(self, datapath: Datapath, gen_len: int) -> DecodeChipReport:
        if not self.checked:
            raise AccelsimError(f"phase {self.phase}: a generation of {gen_len} token(s) has no "
                                f"{self.phase} pass; allowed: gen_len >= 2 for decode")
        return DecodeChipReport(
            datapath=datapath, phase=self.phase, passes_checked=self.checked,
            accumulators=self.accumulators, accumulator_saturations=self.saturations,
            tokens=self.tokens, tokens_agree=self.agree,
            logit_sqnr_db=sqnr_db(torch.cat(self.theirs), torch.cat(self.ours)),
            oracle_ops_checked=self.ops, oracle_elements_checked=self.elements,
            oracle_mismatches=self.mismatches, executed=dict(sorted(self.executed.items())),
            graph=dict(sorted(self.graph.items())), float_fallbacks=dict(sorted(
                self.fallbacks.items())))


def _check_phase(phase: str) -> None:
    if phase not in PHASE_PASSES:
        raise AccelsimError(f"phase: {phase!r} is not one of {', '.join(PHASE_PASSES)}")


def check_decoder_chip(name: str, model: nn.Module, int_model: IntModel,
                       prompts: Sequence[Tensor], gen_len: int, phase: str,
                       datapath: Datapath) -> DecodeChipReport:
    """Generate from every prompt batch on ``datapath`` with every op recorded and check the
    passes of ``phase`` (see :class:`DecodeChipReport`); ``name`` is the zoo decoder whose
    phases are traced."""
    _check_phase(phase)
    tally = _ChipTally(name, phase)
    for prompt in prompts:
        result = greedy_int(model, int_model, prompt, gen_len, datapath=datapath,
                            record_ops=True)
        fq_tokens, fq_logits = greedy_fake_quant(model, prompt, gen_len)
        tokens = (fq_tokens.numel(), int((result.tokens == fq_tokens).sum()))
        tally.add_generation(zip(result.passes, fq_logits, strict=True), result.counts, tokens,
                             int(prompt.shape[0]), int(prompt.shape[1]))
    return tally.report(datapath, gen_len)


def _token_agreement(ours: Sequence[Sequence[int]],
                     theirs: Sequence[Sequence[int]]) -> tuple[int, int]:
    """``(tokens, tokens equal)`` of two batches of transcripts, position by position; a
    transcript longer than its counterpart counts its extra tokens as unequal."""
    tokens = sum(max(len(a), len(b)) for a, b in zip(ours, theirs, strict=True))
    equal = sum(x == y for a, b in zip(ours, theirs, strict=True)
                for x, y in zip(a, b, strict=False))
    return tokens, equal


def _transcribe_both(model: nn.Module, int_model: IntModel, executor: nn.Module,
                     features: Tensor, rules: DecodingRules, record_ops: bool = False
                     ) -> tuple[TranscriptionPasses, TranscriptionPasses, tuple[int, int]]:
    """One feature batch transcribed by the fake-quant model and by ``executor``: their passes
    and the ``(tokens, tokens equal)`` of the transcripts."""
    theirs = TranscriptionPasses(model)
    expected = greedy_transcribe(theirs, features, rules)
    ours = TranscriptionPasses(executor, getattr(executor, COUNTS_ATTR), record_ops)
    got = greedy_transcribe(ours, features, rules, encoder_decoder_cache(executor, int_model))
    return theirs, ours, _token_agreement(got, expected)


def check_transcriptions(model: nn.Module, int_model: IntModel, features: Sequence[Tensor],
                         rules: DecodingRules) -> GenerationCheck:
    """:func:`check_generation` for a speech recognizer: every ``(B, mels, T)`` feature batch
    transcribed greedily by the fake-quant model and on the integer reference (fake-quant
    datapath); tokens compared position by position, each pass's logits bit for bit."""
    executor = build_int_executor(model, int_model)
    tokens = equal = passes = identical = 0
    for batch in features:
        theirs, ours, (count, same) = _transcribe_both(model, int_model, executor, batch, rules)
        tokens += count
        equal += same
        passes += len(theirs.passes)
        identical += sum(torch.equal(a.logits, b.logits)
                         for a, b in zip(ours.passes, theirs.passes, strict=False))
    return GenerationCheck(tokens, equal, passes, identical)


def check_recognizer_chip(name: str, model: nn.Module, int_model: IntModel,
                          features: Sequence[Tensor], rules: DecodingRules, phase: str,
                          datapath: Datapath) -> DecodeChipReport:
    """:func:`check_decoder_chip` for speech recognizer ``name``: every feature batch (the
    whole encoder window, as the traced prefill encodes) transcribed on ``datapath`` with every
    op recorded, the passes of ``phase`` checked."""
    _check_phase(phase)
    tally = _ChipTally(name, phase)
    for batch in features:
        executor = build_int_executor(model, int_model, datapath=datapath)
        theirs, ours, tokens = _transcribe_both(model, int_model, executor, batch, rules,
                                                record_ops=True)
        # Transcripts may end at different steps: the passes both sides made are compared.
        pairs = ((mine, other.logits)
                 for mine, other in zip(ours.passes, theirs.passes, strict=False))
        tally.add_generation(pairs, getattr(executor, COUNTS_ATTR), tokens,
                             int(batch.shape[0]), len(rules.prompt))
    return tally.report(datapath, rules.max_new_tokens)
