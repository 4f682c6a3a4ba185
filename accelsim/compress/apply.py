"""Turn a Hugging Face encoder or decoder into its fake-quantized, 2:4-sparse version (in place).

Every ``nn.Linear`` inside the encoder blocks becomes a :class:`QuantLinear`; each self-attention
module gets quantizers for both operands of its two matmuls, run by a custom attention function
registered with transformers' ``AttentionInterface``. Embeddings, LayerNorm, softmax, the
convolutional front end and the task head stay float32 (docs/compression.md §3).

Decoders (GPT-2, OPT, Llama causal LMs): the linears of the decoder blocks (GPT-2's ``Conv1D``,
whose weight is stored ``[in, out]``, as the equivalent transposed linear) and the LM head, which
a decode step streams every token and the phase pricing counts at the recipe's widths; the
attention's K and V quantizers are the KV cache's stored width (recipe ``kv_bits``, default
``attention_bits``): the cache holds exactly the codes QK^T and PV read.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from accelsim.compress.precision import ATTENTION_ATTR, GemmPrecision
from accelsim.compress.quant import (
    ActQuantizer,
    QuantLinear,
    integer_matmul,
    integer_operand,
    runs_integer_path,
)
from accelsim.compress.recipe import FAMILIES, Recipe, check_family
from accelsim.compress.sites import check_stacks, site_if_any, site_of, stack_of
from accelsim.compress.sparsity import (
    gradual_mask_2_4,
    mask_2_4,
    obs_prune_2_4,
    supports_2_4,
)
from accelsim.errors import AccelsimError
from accelsim.heap import return_freed_memory

ATTN_IMPLEMENTATION = "accelsim_quant"
ATTN_QUANT = "accelsim_attn_quant"  # ModuleDict q, k, v, probs on a quantized attention module
PLAN_ATTR = "accelsim_plan"  # the CompressionPlan, set on the model by apply_recipe

# Module paths of the encoder blocks (transformers 5.24: ViT keeps its blocks in ``vit.layers``).
_ENCODER_BLOCK = {
    "bert": r"(?:^|\.)encoder\.layer\.\d+\.",
    "vit": r"(?:^|\.)(?:encoder\.layer|layers)\.\d+\.",
    "dinov2": r"(?:^|\.)encoder\.layer\.\d+\.",
    "wav2vec2": r"(?:^|\.)encoder\.layers\.\d+\.",
    "whisper": r"(?:^|\.)encoder\.layers\.\d+\.",
}
# Decoder blocks, as the causal LM (transformer.h, model.decoder.layers, model.layers) or the
# backbone names them (transformers 5.25).
DECODER_FAMILIES: tuple[str, ...] = ("gpt2", "opt", "llama")
_DECODER_BLOCK = {
    "gpt2": r"(?:^|\.)h\.\d+\.",
    "opt": r"(?:^|\.)decoder\.layers\.\d+\.",
    "llama": r"(?:^|\.)layers\.\d+\.",
}
LM_HEAD = "lm_head"
# The modules that call ALL_ATTENTION_FUNCTIONS (checked against transformers 5.24 sources).
_ATTENTION_CLASSES = {
    "bert": "BertSelfAttention",
    "vit": "ViTAttention",
    "dinov2": "Dinov2Attention",
    "wav2vec2": "Wav2Vec2Attention",
    "whisper": "WhisperAttention",
    "gpt2": "GPT2Attention",
    "opt": "OPTAttention",
    "llama": "LlamaAttention",
}
# Float attributes that transformers models use as functional dropout rates.
_DROPOUT_ATTRS = ("dropout", "attention_dropout", "activation_dropout", "dropout_prob")


class Batch(Protocol):
    """Structural twin of ``accelsim.tasks.base.Batch`` (compress sits below tasks and must not
    import it): model keyword inputs and labels."""

    @property
    def inputs(self) -> dict[str, Tensor]: ...

    @property
    def labels(self) -> Tensor: ...


@dataclass(frozen=True)
class CompressionPlan:
    """What :func:`apply_recipe` did to a model."""

    family: str
    recipe: str
    quantized_linears: tuple[str, ...]
    attention_modules: tuple[str, ...]
    dense_layers: dict[str, str]  # quantized linear -> why it stays dense under a 2:4 recipe
    float_layers: tuple[str, ...]  # Linear/Conv modules left in float32 (front end, head, ...)


def model_family(model: nn.Module) -> str:
    """The HF ``config.model_type`` of ``model``, checked against the supported families."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES + DECODER_FAMILIES:
        raise AccelsimError(f"model: family (config.model_type) {model_type!r} is not supported; "
                            f"allowed: {', '.join(FAMILIES + DECODER_FAMILIES)}")
    return str(model_type)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _block_pattern(family: str) -> str:
    return _DECODER_BLOCK[family] if family in DECODER_FAMILIES else _ENCODER_BLOCK[family]


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The encoder (or decoder) blocks (transformer layers) of ``model``, in order."""
    block = re.compile(_block_pattern(model_family(model)) + "$")
    return [m for n, m in model.named_modules() if n and block.search(n + ".")]


def _encoder_linears(model: nn.Module, family: str,
                     extra: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the nn.Linear inside encoder blocks, the other ones ``extra`` names), in model order."""
    block = re.compile(_block_pattern(family))
    names = [n for n, m in model.named_modules()
             if _is_linear(m) and block.search(n + ".")]
    if family in DECODER_FAMILIES and isinstance(getattr(model, LM_HEAD, None), nn.Linear):
        names.append(LM_HEAD)
    linears = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    extras: list[str] = []
    for pattern in extra:
        matched = [n for n in linears if re.fullmatch(pattern, n)]
        if not matched:
            raise AccelsimError(f"recipe: quantize_extra: {pattern!r} matches no nn.Linear; "
                                f"candidates: {', '.join(sorted(linears - set(names)))}")
        extras.extend(n for n in matched if n not in names and n not in extras)
    return names, extras


def _is_linear(module: nn.Module) -> bool:
    return type(module) is nn.Linear or type(module).__name__ == "Conv1D"


def _as_linear(module: nn.Module) -> nn.Linear:
    """``module`` itself, or the ``nn.Linear`` computing what GPT-2's ``Conv1D`` computes
    (``x W + b`` with ``W`` stored ``[in, out]``): the same weights, transposed."""
    if type(module) is nn.Linear:
        return module
    weight = module.weight.detach()
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=module.bias is not None,
                       device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.T)
        if module.bias is not None:
            linear.bias.copy_(module.bias)
    return linear


def quantized_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                                attention_mask: Tensor | None, scaling: float | None = None,
                                dropout: float = 0.0, **_: object) -> tuple[Tensor, Tensor]:
    """Eager attention with both operands of ``QK^T`` and ``PV`` fake-quantized.

    Same arithmetic as transformers' ``eager_attention_forward`` (additive float mask, float32
    softmax); modules without quantizers (e.g. a whisper decoder) run it unquantized. The
    probabilities are quantized before dropout, so calibration sees their inference distribution.
    Inference runs :func:`_integer_attention` instead (see :class:`QuantLinear` for why and when).
    """
    quant = getattr(module, ATTN_QUANT, None)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if quant is not None and _runs_integer(module, quant):
        return _integer_attention(quant, query, key, value, attention_mask, scaling)
    if quant is not None:
        query, key, value = quant["q"](query), quant["k"](key), quant["v"](value)
    scores = mask_scores(torch.matmul(query, key.transpose(2, 3)) * scaling, attention_mask,
                          key.shape[-2])
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if quant is not None:
        probs = quant["probs"](probs)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def mask_scores(scores: Tensor, attention_mask: Tensor | None, keys: int) -> Tensor:
    """transformers' eager mask arithmetic: bool masks fill the float32 minimum, others add (the
    fake-quant attention's and the integer reference's, accelsim.ref.execute)."""
    if attention_mask is None:
        return scores
    if attention_mask.dtype == torch.bool:
        return scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    return scores + attention_mask[..., :keys]


def _runs_integer(module: nn.Module, quant: nn.ModuleDict) -> bool:
    """Inference with all four quantizers live, outside tracing (export, frozen constants)."""
    quantizers: list[ActQuantizer] = [quant[op] for op in ("q", "k", "v", "probs")]
    return runs_integer_path(module) and all(q.quantizing and not q.frozen for q in quantizers)


def _integer_attention(quant: nn.ModuleDict, query: Tensor, key: Tensor, value: Tensor,
                       attention_mask: Tensor | None, scaling: float) -> tuple[Tensor, Tensor]:
    """The integer reference's attention (accelsim.ref.execute.int_attention_forward), bit for
    bit: exact integer ``QK^T`` scaled by ``float32(s_q * s_k)``, then ``* scaling``, the mask,
    float32 softmax, quantized probabilities, exact integer ``PV`` scaled by ``s_p * s_v``."""
    operands = {}
    for op, x in (("q", query), ("k", key), ("v", value)):
        scale, _ = quant[op].current_qparams()
        operands[op] = (integer_operand(quant[op](x), scale), scale)
    (q_int, q_scale), (k_int, k_scale), (v_int, v_scale) = (
        operands["q"], operands["k"], operands["v"])
    scores = integer_matmul(q_int, k_int.transpose(2, 3), q_scale * k_scale) * scaling
    scores = mask_scores(scores, attention_mask, key.shape[-2])
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    probs_fq = quant["probs"](probs)
    p_scale, _ = quant["probs"].current_qparams()
    out = integer_matmul(integer_operand(probs_fq, p_scale), v_int, p_scale * v_scale)
    return out.transpose(1, 2).contiguous(), probs_fq


def register_attention() -> None:
    """Register :func:`quantized_attention_forward` (and the eager mask builder) by name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, quantized_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


def apply_recipe(model: nn.Module, recipe: Recipe, *, for_trace: bool = False) -> CompressionPlan:
    """Swap encoder linears for QuantLinear (2:4-masked per recipe) and quantize attention.

    Weight steps are initialised from the current weights (SAWB); activation clips still need
    :func:`calibrate`. One-shot masks are built here from the current weights, so critical
    initialization (masks from the task-fine-tuned model) is a matter of calling this after
    stage 1. A float recipe (``weight_bits: 32``) leaves the model untouched.

    ``for_trace`` builds the model for tracing only (``graph.workload``; only where
    :func:`clips_only_calibration` holds): each QuantLinear is built by
    :meth:`QuantLinear.released_from_linear`, on the meta device with the precision of its
    real codes, and replaces (so frees) its float original at once, so the peak memory is the
    float model's, not float plus compressed copy; nothing is drawn for the default init that
    copied weights would overwrite (the draw only advances the RNG stream, which a training run
    reads next and a trace does not). The model can then be calibrated on no batches and
    traced, not run on data.
    """
    family = model_family(model)
    # A recipe's families list the encoder families it covers: its default is saved with every
    # run's provenance, so decoders are not added to it; every recipe applies to decoders.
    if family not in DECODER_FAMILIES:
        check_family(recipe, family)
    previous = getattr(model, PLAN_ATTR, None)
    if previous is not None:
        raise AccelsimError(f"model: already compressed with recipe {previous.recipe!r}; "
                            f"allowed: an uncompressed model")
    gemm_types = (nn.Linear, nn.Conv1d, nn.Conv2d)
    if not recipe.quantized:
        floats = tuple(n for n, m in model.named_modules() if isinstance(m, gemm_types))
        return CompressionPlan(family, recipe.name, (), (), {}, floats)  # nothing to mark
    if for_trace and not clips_only_calibration(recipe):
        raise AccelsimError(f"apply_recipe: for_trace=True: recipe {recipe.name!r} calibrates "
                            "weights or masks (smoothing or activation-scored masks), which "
                            "needs them in memory; allowed: False")
    from transformers.initialization import no_init_weights

    block_names, extras = _encoder_linears(model, family, recipe.quantize_extra)
    names = block_names + extras
    check_stacks(recipe.dense_sites, names, f"the {family} model")
    with no_init_weights() if for_trace else contextlib.nullcontext():
        dense = _swap_linears(model, recipe, names, extras, for_trace)
    attention: list[str] = []
    if recipe.attention_bits != 32:
        attention = _quantize_attention(model, family, recipe)
    floats = tuple(n for n, m in model.named_modules()
                   if isinstance(m, gemm_types) and not isinstance(m, QuantLinear))
    plan = CompressionPlan(family, recipe.name, tuple(names), tuple(attention), dense, floats)
    setattr(model, PLAN_ATTR, plan)  # read by export_int_model
    return plan


# A released float layer's memory goes back to the OS every 12 layers (accelsim.heap): it kept
# vit_l16's cold trace at 1,642-1,729 MiB (up to 2,956 MiB without it) for about 0.5 s more CPU;
# every layer cost 2 s of system CPU refaulting the returned pages, every 6 layers 1.3 s
# (benchmarks/README.md, bench_startup).
_TRIM_EVERY_LAYERS = 12


def _swap_linears(model: nn.Module, recipe: Recipe, names: list[str], extras: list[str],
                  release: bool) -> dict[str, str]:
    """Replace the linears ``names`` by QuantLinears (see :func:`apply_recipe`); returns the
    dense layers of a 2:4 recipe, each with why it stays dense."""
    dense: dict[str, str] = {}
    for index, name in enumerate(names):
        linear = _as_linear(model.get_submodule(name))
        site = site_if_any(name) if name in extras or name == LM_HEAD else site_of(name)
        stack = stack_of(name)
        site_sparse = recipe.sparse_at(site, stack)
        sparse = site_sparse and supports_2_4(linear.in_features)
        if recipe.sparsity == "2:4" and not sparse:
            where = site if site in recipe.dense_sites else f"{stack}.{site}"
            dense[name] = (f"K={linear.in_features} is not a multiple of 4" if site_sparse
                           else f"input site {where} is in the recipe's dense_sites")
        smoothed = site in recipe.smoothing_sites
        # Activation-weighted and SparseGPT masks need activations, and a smoothed layer's
        # magnitudes are those of its smoothed weights: calibrate() sets those masks.
        one_shot = (sparse and recipe.pruning != "gradual" and recipe.mask_score == "magnitude"
                    and not smoothed)
        weight_bits, act_bits = recipe.widths_at(site)
        formats = {"weight_bits": weight_bits, "act_bits": act_bits, "grid": recipe.weight_grid,
                   "granularity": recipe.weight_granularity,
                   "scale_method": recipe.weight_scale_method, "act_mode": recipe.act_quantizer,
                   "sparse": sparse, "learn_pruned": sparse and recipe.pruning == "sr_ste",
                   "smoothed": smoothed}
        qlinear = (QuantLinear.released_from_linear(linear, magnitude_mask=one_shot, **formats)
                   if release else QuantLinear.from_linear(
                       linear, mask=mask_2_4(linear.weight) if one_shot else None, **formats))
        _set_submodule(model, name, qlinear)
        if release and index % _TRIM_EVERY_LAYERS == _TRIM_EVERY_LAYERS - 1:
            return_freed_memory()
    return dense


def reformat_linear(model: nn.Module, name: str, *, weight_bits: int, act_bits: int,
                    sparse: bool) -> QuantLinear:
    """Replace the QuantLinear at ``name`` in ``model`` by one at other widths, its weight
    grid, granularity, scale method and activation mode kept, with magnitude 2:4 masks from its
    current weights where ``sparse``; the new layer, its clips to be calibrated again. How a
    study lowers one layer group below its recipe (the co-design's assignments, a 2:4
    sensitivity scan)."""
    layer = model.get_submodule(name)
    if not isinstance(layer, QuantLinear):
        raise AccelsimError(f"{name}: is a {type(layer).__name__}, not a compressed linear")
    if layer.act_quant.smoothing is not None:
        raise AccelsimError(f"{name}: a smoothed linear cannot be reformatted (its smoothing "
                            "factors belong to the recipe's calibration)")
    if sparse and not supports_2_4(layer.in_features):
        raise AccelsimError(f"{name}: K={layer.in_features} is not a multiple of 4, so it "
                            "cannot be 2:4")
    old = layer.weight_quant
    rebuilt = QuantLinear.from_linear(
        layer, weight_bits=weight_bits, act_bits=act_bits, grid=old.grid,
        granularity=old.granularity, scale_method=old.method, act_mode=layer.act_quant.mode,
        sparse=sparse, mask=mask_2_4(layer.weight.detach()) if sparse else None)
    _set_submodule(model, name, rebuilt)
    return rebuilt


def _quantize_attention(model: nn.Module, family: str, recipe: Recipe) -> list[str]:
    block = re.compile(_block_pattern(family))
    names = [n for n, m in model.named_modules()
             if type(m).__name__ == _ATTENTION_CLASSES[family] and block.search(n + ".")]
    if not names:
        raise AccelsimError(f"model: no {_ATTENTION_CLASSES[family]} inside the encoder blocks of "
                            f"this {family} model; cannot quantize attention (attention_bits: 32 "
                            f"keeps it float)")
    kv_bits = kv_cache_bits(recipe) if family in DECODER_FAMILIES else recipe.attention_bits
    quantize_attention_modules(model, names, recipe, kv_bits)
    return names


def quantize_attention_modules(model: nn.Module, names: list[str], recipe: Recipe,
                               kv_bits: int) -> None:
    """Give the attention modules ``names`` of ``model`` quantizers for both operands of QK^T
    and PV (Q and the probabilities at ``attention_bits``, K and V at ``kv_bits``) and run
    them with the quantized attention function. Also the hook for attentions outside the
    family's blocks (a Whisper recognizer's decoder, :mod:`accelsim.accuracy.asr`)."""
    bits = recipe.attention_bits
    for name in names:
        module = model.get_submodule(name)
        module.add_module(ATTN_QUANT, nn.ModuleDict({
            "q": ActQuantizer(bits, recipe.act_quantizer),
            "k": ActQuantizer(kv_bits, recipe.act_quantizer),
            "v": ActQuantizer(kv_bits, recipe.act_quantizer),
            # Probabilities are >= 0: unsigned codes with zero point 0 after calibration.
            "probs": ActQuantizer(bits, "pact2"),
        }))
        # The B operands (K, V) are the KV cache, at its stored width.
        setattr(module, ATTENTION_ATTR, GemmPrecision(weight_bits=kv_bits, act_bits=bits))
    register_attention()
    if not hasattr(model, "set_attn_implementation"):
        raise AccelsimError(f"model: {type(model).__name__} is not a transformers PreTrainedModel; "
                            f"cannot install the quantized attention function")
    model.set_attn_implementation(ATTN_IMPLEMENTATION)


def kv_cache_bits(recipe: Recipe) -> int:
    """The stored width of a decoder's KV cache under ``recipe`` (``kv_bits``, default
    ``attention_bits``); one line for a width the integer codes cannot hold."""
    bits = recipe.kv_bits or recipe.attention_bits
    if bits not in (4, 8):
        raise AccelsimError(f"recipe {recipe.name!r}: kv_bits: {bits} cannot be stored as "
                            "integer codes of a compressed decoder; allowed: 4, 8")
    return bits


def act_quantizers(model: nn.Module) -> list[ActQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActQuantizer)]


def clips_only_calibration(recipe: Recipe) -> bool:
    """Whether :func:`calibrate` sets nothing but activation clips under ``recipe``: no input
    smoothing (its factors fold into the weights, so into the codes and their density) and no
    activation-scored 2:4 masks (set, with SparseGPT's weights, by calibration)."""
    return not recipe.smoothing_sites and (recipe.sparsity != "2:4"
                                           or recipe.mask_score == "magnitude")


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Batch], recipe: Recipe) -> int:
    """Percentile-calibrate every activation clip on the first ``calibration_batches`` batches
    (float activations, eval mode); returns the number of batches used. With no batches the
    quantizers are only made active, at their initial clips.

    Layers with input smoothing (recipe ``smoothing_sites``) get their factors first, from a
    float pass over the same batches (once: a second calibration keeps them, they are part of
    the weights). Under ``mask_score: activation_weighted`` or ``sparsegpt`` a pass with dense
    weights then sets the 2:4 masks (SparseGPT also its updated weights), so the clips see the
    pruned model as QAT starts it.
    """
    used_batches = list(itertools.islice(batches, recipe.calibration_batches))
    was_training = model.training
    model.eval()
    smoothed = _smooth_inputs(model, used_batches, recipe.smoothing_alpha)
    if recipe.sparsity == "2:4" and recipe.mask_score != "magnitude":
        _set_calibrated_masks(model, used_batches, recipe.mask_score)
    elif recipe.sparsity == "2:4" and recipe.pruning != "gradual":
        for layer in smoothed:  # magnitude masks of the smoothed weights (apply_recipe left them)
            if layer.weight_mask is not None:
                layer.weight_mask.copy_(mask_2_4(layer.weight))
                layer.weight_quant.init_step(layer.masked_weight())
    quantizers = act_quantizers(model)
    for q in quantizers:
        q.start_calibration(recipe.calibration_percentiles)
    for batch in used_batches:
        model(**batch.inputs)
    for q in quantizers:
        q.finish_calibration()
    model.train(was_training)
    return len(used_batches)


def _dense_input_pass(model: nn.Module, layers: list[QuantLinear], batches: list[Batch],
                      hook: Callable[[QuantLinear, tuple[Tensor, ...]], None]) -> None:
    """Run ``batches`` through ``model`` with every 2:4 mask lifted (dense weights), calling
    ``hook(layer, inputs)`` before each forward of ``layers``; masks are restored after."""
    masked = [layer for _, layer in quant_linears(model) if layer.weight_mask is not None]
    masks = [layer.weight_mask.clone() for layer in masked]
    for layer in masked:
        layer.weight_mask.fill_(1.0)
    hooks = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        for batch in batches:
            model(**batch.inputs)
    finally:
        for handle in hooks:
            handle.remove()
        for layer, mask in zip(masked, masks, strict=True):
            layer.weight_mask.copy_(mask)


def _smooth_inputs(model: nn.Module, batches: list[Batch], alpha: float) -> list[QuantLinear]:
    """Give every layer with unset input smoothing its factors; returns those layers.

    ``s_k = max|x_k|^alpha / max_n|w_nk|^(1 - alpha)`` (SmoothQuant's rule; ``max|x_k|`` over
    every token of ``batches``, float activations of the dense model), clamped to at least
    1e-5 so that a dead channel cannot divide by zero. The layer's weight columns are multiplied
    by ``s`` and its quantizer divides its input by ``s``: the float model computes the same
    function, while the 4-bit step of the input is no longer set by its few outlier channels.
    """
    layers = [layer for _, layer in quant_linears(model)
              if layer.act_quant.smoothing is not None and not bool(layer.act_quant.smoothing_set)]
    if not layers:
        return []
    peaks = {id(layer): torch.zeros(layer.in_features) for layer in layers}

    def record(layer: QuantLinear, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach().float().reshape(-1, layer.in_features)
        peaks[id(layer)] = torch.maximum(peaks[id(layer)], x.abs().amax(0))

    _dense_input_pass(model, layers, batches, record)
    floor = 1e-5
    for layer in layers:
        weight_peaks = layer.weight.abs().amax(0).clamp(min=floor)
        factors = (peaks[id(layer)].clamp(min=floor).pow(alpha)
                   / weight_peaks.pow(1.0 - alpha)).clamp(min=floor)
        layer.weight.mul_(factors)
        layer.act_quant.smoothing.copy_(factors)
        layer.act_quant.smoothing_set.fill_(True)
        layer.weight_quant.init_step(layer.masked_weight())
    return layers


def _set_calibrated_masks(model: nn.Module, batches: list[Batch], score: str) -> None:
    """2:4 masks that need the layers' inputs, from one pass over ``batches`` with dense weights.

    ``activation_weighted``: keep the largest ``|w_nk| * ||x_k||`` per group (Wanda's score): a
    small weight on an outlier input channel moves the output more than a larger one on a quiet
    channel; ``||x_k||`` is the input-channel norm over every token of ``batches``.
    ``sparsegpt``: :func:`obs_prune_2_4` on the inputs' Gram matrix ``X^T X``, which also
    updates the kept weights. Both see the dense model's inputs in every layer (one pass), not
    the pruned model's, layer after layer, as SparseGPT's reference code does.
    """
    layers = [layer for _, layer in quant_linears(model) if layer.weight_mask is not None]
    gram = score == "sparsegpt"
    sums = {id(layer): torch.zeros((layer.in_features,) * (2 if gram else 1), dtype=torch.float64)
            for layer in layers}

    def accumulate(layer: QuantLinear, args: tuple[Tensor, ...]) -> None:
        # The inputs the weights see: smoothed ones where the layer smooths.
        x = layer.act_quant.smooth(args[0].detach())
        x = x.to(torch.float64).reshape(-1, layer.in_features)
        sums[id(layer)] += x.T @ x if gram else x.square().sum(0)

    _dense_input_pass(model, layers, batches, accumulate)  # also on a second calibration
    for layer in layers:
        if gram:
            weight, mask = obs_prune_2_4(layer.weight, sums[id(layer)])
            layer.weight.copy_(weight)
            layer.weight_mask.copy_(mask)
        else:
            norms = sums[id(layer)].sqrt().to(layer.weight.dtype)
            if layer.learn_pruned:  # SR-STE re-scores its masks with the same norms
                layer.input_norm.copy_(norms)
            layer.weight_mask.copy_(mask_2_4(layer.weight.abs() * norms))
        layer.weight_quant.init_step(layer.masked_weight())


def quant_linears(model: nn.Module) -> list[tuple[str, QuantLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]


@torch.no_grad()
def update_masks(model: nn.Module, fraction: float) -> None:
    """Gradual pruning: grow every 2:4 mask to ``fraction`` of its groups (from current weights)."""
    for _, layer in quant_linears(model):
        if layer.weight_mask is not None:
            mask = gradual_mask_2_4(layer.weight, layer.weight_mask, fraction)
            layer.weight_mask.copy_(mask)


@torch.no_grad()
def reselect_masks(model: nn.Module) -> float:
    """SR-STE: re-choose every learning layer's 2:4 mask from its dense weights, by
    ``|w_nk| * input_norm[k]``; returns the fraction of mask entries that changed."""
    changed, total = 0, 0
    for _, layer in quant_linears(model):
        if layer.learn_pruned:
            mask = mask_2_4(layer.weight.abs() * layer.input_norm)
            changed += int((mask != layer.weight_mask).sum())
            total += mask.numel()
            layer.weight_mask.copy_(mask)
            if layer.weight_quant.method == "sawb":  # eval reads the stored step
                layer.weight_quant.init_step(layer.masked_weight())
    return changed / total if total else 0.0


@torch.no_grad()
def decay_pruned_weights(model: nn.Module, decay: float) -> None:
    """SR-STE's sparse-refined term: add ``decay * (1 - mask) * w`` to the gradient of every
    learning layer, so a pruned weight drifts to 0 unless its own gradient keeps it alive."""
    for _, layer in quant_linears(model):
        if layer.learn_pruned and layer.weight.grad is not None:
            layer.weight.grad.add_(layer.weight * (1.0 - layer.weight_mask), alpha=decay)


@torch.no_grad()
def enforce_masks(model: nn.Module, *, final: bool = False) -> None:
    """Zero pruned weights in place (after an optimizer step moved them through weight decay or
    stale Adam moments), so the stored weights are exactly 2:4. SR-STE layers keep their pruned
    weights as shadows until the ``final`` call at the end of training."""
    for _, layer in quant_linears(model):
        if layer.weight_mask is not None and (final or not layer.learn_pruned):
            layer.weight.mul_(layer.weight_mask)


DropoutRates = dict[tuple[str, str], float]


def dropout_rates(model: nn.Module) -> DropoutRates:
    """The model's own dropout rates: ``nn.Dropout.p`` and functional-dropout float attributes."""
    rates: DropoutRates = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            rates[(name, "p")] = float(module.p)
            continue
        for attr in _DROPOUT_ATTRS:
            value = module.__dict__.get(attr)
            if isinstance(value, float) and 0.0 <= value < 1.0:
                rates[(name, attr)] = value
    return rates


def set_dropout_factor(model: nn.Module, base: DropoutRates, factor: float) -> None:
    """Set every dropout rate to ``min(base * factor, 0.9)`` (scheduled dropout)."""
    for (name, attr), rate in base.items():
        module = model.get_submodule(name) if name else model
        setattr(module, attr, min(rate * factor, 0.9))
