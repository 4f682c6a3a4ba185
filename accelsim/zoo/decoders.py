"""Decoder-only language models (GPT-2, OPT, Llama): Hugging Face causal LMs built from the
YAML's config with seeded random init (latency and energy need shapes, not trained weights),
their phase shapes (prefill, one decode step, a whole generation) checked against the model,
and analytic MAC counts per phase (an independent check on the phase tracer).

The encoder-decoder speech recognizers of :mod:`accelsim.zoo.asr` (``whisper_tiny_en_asr``)
have the same phases: the prefill runs the encoder over Whisper's 30 s window (its
``max_source_positions``, the window openai-whisper and transformers pad every clip to) and the
decoder over the prompt, writing the cross-attention keys and values once; a decode step runs
the decoder alone, reading them from the cache.

A phase's shape options: ``prefill`` (``batch``, ``prompt_len``), ``decode`` (``batch``,
``context``: tokens already in the KV cache; the step feeds one more) and ``generate``
(``batch``, ``prompt_len``, ``gen_len``: a prefill that yields the first output token, then
``gen_len - 1`` decode steps at contexts ``prompt_len .. prompt_len + gen_len - 2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError
from accelsim.zoo.asr import ASR_MODELS, MAX_NEW_TOKENS, PROMPT, asr_spec
from accelsim.zoo.registry import DECODER_FAMILIES, ModelSpec, get_spec

if TYPE_CHECKING:
    from torch import nn

PHASES: tuple[str, ...] = ("prefill", "decode", "generate")
# Which shape options each phase takes (besides batch).
PHASE_OPTIONS: dict[str, tuple[str, ...]] = {
    "prefill": ("prompt_len",),
    "decode": ("context",),
    "generate": ("prompt_len", "gen_len"),
}
# family -> (HF backbone class, HF causal-LM class): the backbone has no LM head.
_CLASSES: dict[str, tuple[str, str]] = {
    "gpt2": ("GPT2Model", "GPT2LMHeadModel"),
    "opt": ("OPTModel", "OPTForCausalLM"),
    "llama": ("LlamaModel", "LlamaForCausalLM"),
}


def is_decoder(spec: ModelSpec) -> bool:
    return spec.family in DECODER_FAMILIES


def is_speech_recognizer(name: str) -> bool:
    """An encoder-decoder ASR entry of :mod:`accelsim.zoo.asr` (not a ``models/`` YAML)."""
    return name in ASR_MODELS


def needs_phase(name: str) -> bool:
    """Model ``name`` runs as phases (a decoder-only model or a speech recognizer)."""
    return is_speech_recognizer(name) or is_decoder(get_spec(name))


@dataclass(frozen=True)
class PhaseLimits:
    """What a model's phase options are checked against: its decoder's positions and the
    defaults of ``prompt_len``, ``context`` and ``gen_len``."""

    positions: int
    defaults: dict[str, int]


def phase_limits(name: str, phase: str | None = None) -> PhaseLimits:
    """A decoder's from its YAML (``prompt_len`` and ``context`` default to ``input.seq_len``,
    ``gen_len`` to ``input.gen_len``); a speech recognizer's from its Whisper config and its
    greedy decoding (the 2-token prompt, context the prompt, ``gen_len`` its token budget, as
    far as the positions allow).
    One line for a model without a decoder (naming ``phase`` when given)."""
    if is_speech_recognizer(name):
        positions = int(get_spec(asr_spec(name).whisper).config_dict["max_target_positions"])
        return PhaseLimits(positions, {"prompt_len": len(PROMPT), "context": len(PROMPT),
                                       "gen_len": min(MAX_NEW_TOKENS, positions - len(PROMPT))})
    spec = get_spec(name)
    if not is_decoder(spec):
        raise AccelsimError(
            f"{name}: {f'--phase {phase} needs' if phase else 'phases need'} a decoder model; "
            f"{name} is an encoder-only {spec.family} model "
            f"(decoder families: {', '.join(DECODER_FAMILIES)}; speech recognizers: "
            f"{', '.join(ASR_MODELS)})")
    defaults = spec.default_input_shape
    return PhaseLimits(max_positions(spec),
                       {"prompt_len": int(defaults["seq_len"]), "context": int(defaults["seq_len"]),
                        "gen_len": int(defaults["gen_len"])})


def max_positions(spec: ModelSpec) -> int:
    """Positions the model has: GPT-2's ``n_positions``, else ``max_position_embeddings``."""
    cfg = spec.config_dict
    return int(cfg["n_positions"] if spec.family == "gpt2" else cfg["max_position_embeddings"])


def dims(spec: ModelSpec) -> dict[str, int]:
    """Hidden size, layers, heads, key/value heads, FFN width and vocabulary of a decoder."""
    cfg = spec.config_dict
    if spec.family == "gpt2":
        hidden = cfg["n_embd"]
        return {"hidden": hidden, "layers": cfg["n_layer"], "heads": cfg["n_head"],
                "kv_heads": cfg["n_head"], "ffn": cfg.get("n_inner") or 4 * hidden,
                "vocab": cfg["vocab_size"]}
    heads = cfg["num_attention_heads"]
    return {"hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"], "heads": heads,
            "kv_heads": cfg.get("num_key_value_heads") or heads,
            "ffn": cfg["ffn_dim"] if spec.family == "opt" else cfg["intermediate_size"],
            "vocab": cfg["vocab_size"]}


def positive_int(name: str, key: str, value: Any) -> int:
    """``value`` if it is an integer >= 1 (not a bool), else one line naming model and option."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AccelsimError(f"{name}: {key}={value!r} must be an integer >= 1")
    return value


def resolve_phase_shape(
    name: str,
    phase: str,
    *,
    batch: int = 1,
    prompt_len: int | None = None,
    context: int | None = None,
    gen_len: int | None = None,
) -> dict[str, int]:
    """Check a phase's shape options against model ``name`` (:func:`phase_limits`) and fill
    their defaults. One line for an encoder-only model, an option the phase does not take, a
    size below 1 or beyond the decoder's positions."""
    if phase not in PHASES:
        raise AccelsimError(f"phase: {phase!r} is not one of {', '.join(PHASES)}")
    limits = phase_limits(name, phase)
    given = {"prompt_len": prompt_len, "context": context, "gen_len": gen_len}
    options = PHASE_OPTIONS[phase]
    for key, value in given.items():
        if value is not None and key not in options:
            raise AccelsimError(f"{name}: {key}={value!r} does not apply to phase {phase!r} "
                                f"(its shape options: {', '.join(options)})")
    shape = {"batch": positive_int(name, "batch", batch)}
    for key in options:
        shape[key] = positive_int(name, key, given[key] if given[key] is not None
                                   else limits.defaults[key])
    # Positions a phase occupies: the prompt; the cache plus the fed token; the prompt plus
    # every token fed back (the last generated token is not fed).
    needed = {"prefill": lambda s: s["prompt_len"], "decode": lambda s: s["context"] + 1,
              "generate": lambda s: s["prompt_len"] + s["gen_len"] - 1}[phase](shape)
    limit = limits.positions
    if needed > limit:
        what = ", ".join(f"{key}={shape[key]}" for key in options)
        allowed = {"prefill": f"prompt_len at most {limit}",
                   "decode": f"context at most {limit - 1}",
                   "generate": f"prompt_len + gen_len at most {limit + 1}"}[phase]
        raise AccelsimError(f"{name}: {what} needs {needed} positions, beyond the model's "
                            f"{limit} (allowed: {allowed})")
    return shape


def _config(spec: ModelSpec) -> Any:
    import transformers

    # Eager attention: QK^T and PV stay two explicit matmuls (sdpa fuses them into one op). No
    # cache unless a forward asks for one (the phase tracer passes its StaticCache): a cache-free
    # forward then returns tensors only, which torch.export needs.
    return getattr(transformers, spec.hf_config)(**spec.config_dict, attn_implementation="eager",
                                                 use_cache=False)


def build_decoder(spec: ModelSpec, *, causal_lm: bool) -> nn.Module:
    """The family's HF backbone (``causal_lm=False``) or causal LM with its head, random init
    in the caller's default device and seed."""
    import transformers

    backbone, lm = _CLASSES[spec.family]
    return getattr(transformers, lm if causal_lm else backbone)(_config(spec))


def build_causal_lm(name: str, *, seed: int = 0, meta: bool = False) -> nn.Module:
    """Decoder ``name`` with its LM head in eval mode: seeded random init, or on the meta
    device (shapes only, no memory: how the phase tracer builds Llama-2-7B)."""
    import torch

    spec = get_spec(name)
    if not is_decoder(spec):
        raise AccelsimError(f"{name}: not a decoder (family {spec.family}; decoder families: "
                            f"{', '.join(DECODER_FAMILIES)})")
    if meta:
        with torch.device("meta"):
            return build_decoder(spec, causal_lm=True).eval()
    torch.manual_seed(seed)
    return build_decoder(spec, causal_lm=True).eval()


def phase_macs(name: str, phase: str, shape: dict[str, int]) -> int:
    """MACs of one prefill or one decode step from the config alone: per layer Q, K, V, O
    projections, QK^T and PV over the cached positions, the FFN (Llama's gated FFN has three
    linears), plus the LM head on the last position only."""
    if is_speech_recognizer(name):
        return _recognizer_phase_macs(name, phase, shape)
    spec = get_spec(name)
    d = dims(spec)
    hidden, head_dim = d["hidden"], d["hidden"] // d["heads"]
    kv_width = d["kv_heads"] * head_dim
    if phase == "prefill":
        tokens, positions = shape["prompt_len"], shape["prompt_len"]
    elif phase == "decode":
        tokens, positions = 1, shape["context"] + 1
    else:
        raise AccelsimError(f"phase_macs: phase {phase!r} is not one of prefill, decode")
    ffn_linears = 3 if spec.family == "llama" else 2
    layer = (tokens * hidden * (2 * hidden + 2 * kv_width)
             + 2 * tokens * positions * hidden
             + ffn_linears * tokens * hidden * d["ffn"])
    return shape["batch"] * (d["layers"] * layer + hidden * d["vocab"])


def encoder_window_frames(name: str) -> int:
    """Mel frames a speech recognizer's prefill encodes: Whisper's whole 30 s window
    (``2 x max_source_positions``)."""
    return 2 * int(get_spec(asr_spec(name).whisper).config_dict["max_source_positions"])


def _recognizer_phase_macs(name: str, phase: str, shape: dict[str, int]) -> int:
    """A speech recognizer's pass: the prefill adds the encoder over its window and each
    layer's cross-attention key and value projections of the encoder output (computed once,
    then cached); every pass has per decoder layer self-attention (Q, K, V, O, QK^T and PV over
    the cached positions), cross-attention (Q, O, QK^T and PV over the encoder positions) and
    the FFN, plus the LM head on the last position."""
    from accelsim.zoo.inputs import WHISPER_HOP_SAMPLES
    from accelsim.zoo.macs import analytic_macs

    whisper = asr_spec(name).whisper
    cfg = get_spec(whisper).config_dict
    hidden, encoded = cfg["d_model"], cfg["max_source_positions"]
    batch = shape["batch"]
    if phase == "prefill":
        tokens, positions = shape["prompt_len"], shape["prompt_len"]
        frames = encoder_window_frames(name)
        once = (analytic_macs(whisper, {"batch": batch,
                                        "audio_samples": frames * WHISPER_HOP_SAMPLES})
                + batch * cfg["decoder_layers"] * 2 * encoded * hidden * hidden)
    elif phase == "decode":
        tokens, positions, once = 1, shape["context"] + 1, 0
    else:
        raise AccelsimError(f"phase_macs: phase {phase!r} is not one of prefill, decode")
    layer = (4 * tokens * hidden * hidden + 2 * tokens * positions * hidden
             + 2 * tokens * hidden * hidden + 2 * tokens * encoded * hidden
             + 2 * tokens * hidden * cfg["decoder_ffn_dim"])
    return once + batch * (cfg["decoder_layers"] * layer + hidden * cfg["vocab_size"])
