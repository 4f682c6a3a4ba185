"""Decoder-only language models (GPT-2, OPT, Llama): Hugging Face causal LMs built from the
YAML's config with seeded random init (latency and energy need shapes, not trained weights),
their phase shapes (prefill, one decode step, a whole generation) checked against the model,
and analytic MAC counts per phase (an independent check on the phase tracer).

A phase's shape options: ``prefill`` (``batch``, ``prompt_len``), ``decode`` (``batch``,
``context``: tokens already in the KV cache; the step feeds one more) and ``generate``
(``batch``, ``prompt_len``, ``gen_len``: a prefill that yields the first output token, then
``gen_len - 1`` decode steps at contexts ``prompt_len .. prompt_len + gen_len - 2``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError
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
    """Check a phase's shape options against decoder ``name`` and fill defaults from its YAML
    (``prompt_len`` and ``context`` default to ``input.seq_len``, ``gen_len`` to
    ``input.gen_len``). One line for an encoder, an option the phase does not take, a size
    below 1 or beyond the model's positions."""
    spec = get_spec(name)
    if phase not in PHASES:
        raise AccelsimError(f"phase: {phase!r} is not one of {', '.join(PHASES)}")
    if not is_decoder(spec):
        raise AccelsimError(
            f"{name}: --phase {phase} needs a decoder model; {name} is an encoder-only "
            f"{spec.family} model (decoder families: {', '.join(DECODER_FAMILIES)})"
        )
    given = {"prompt_len": prompt_len, "context": context, "gen_len": gen_len}
    options = PHASE_OPTIONS[phase]
    for key, value in given.items():
        if value is not None and key not in options:
            raise AccelsimError(f"{name}: {key}={value!r} does not apply to phase {phase!r} "
                                f"(its shape options: {', '.join(options)})")
    defaults = spec.default_input_shape
    fallback = {"prompt_len": defaults["seq_len"], "context": defaults["seq_len"],
                "gen_len": defaults["gen_len"]}
    shape = {"batch": positive_int(name, "batch", batch)}
    for key in options:
        shape[key] = positive_int(name, key, given[key] if given[key] is not None
                                   else fallback[key])
    # Positions a phase occupies: the prompt; the cache plus the fed token; the prompt plus
    # every token fed back (the last generated token is not fed).
    needed = {"prefill": lambda s: s["prompt_len"], "decode": lambda s: s["context"] + 1,
              "generate": lambda s: s["prompt_len"] + s["gen_len"] - 1}[phase](shape)
    limit = max_positions(spec)
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
