"""Whole-model integer execution of an exported integer model, and its check against fake-quant.

Design (docs/integer_semantics.md §5): the compressed Hugging Face model's own forward runs, but
every quantized GEMM is computed by the integer kernels from the exported :class:`IntModel`:

* each quantized linear becomes an :class:`IntLinearModule`: quantize the input with the shared
  expression, run the int32 GEMM (2:4 layers through the index-mux kernel on the kept values and
  indices) on the weights decoded from the packed on-disk fields, dequantize and add the bias
  (``bias_mode="float"``, default: the float32 bias added by the vector unit, as the fake-quant
  model does) or start the accumulator at ``bias_int32`` (``bias_mode="int32"``);
* each quantized attention module runs :func:`int_attention_forward` (registered with
  transformers' ``AttentionInterface``): ``QK^T`` and ``PV`` as batched int32 matmuls of codes;
* everything else (embeddings, LayerNorm, GELU, softmax, residual adds, convolutional front end,
  head) is the model's float32 computation, the vector unit's default semantics.

This covers the BERT, ViT/DINOv2, wav2vec2 and Whisper-encoder families with one mechanism.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from accelsim.compress.apply import ATTN_QUANT, quantized_attention_forward
from accelsim.compress.export import IntAttention, IntLinear, IntModel
from accelsim.compress.quant import ActQuantizer, QuantLinear
from accelsim.errors import AccelsimError
from accelsim.ref import kernels

BiasMode = Literal["float", "int32"]
BIAS_MODES: tuple[str, ...] = ("float", "int32")
INT_ATTN_IMPLEMENTATION = "accelsim_int"
INT_ATTN_ATTR = "accelsim_int_attention"  # the IntAttention of a module run by the executor
PREDICTION_AGREEMENT_MIN_PCT = 99.9
# Of max |fake-quant logits|, for bias_mode="int32" only (the bias rounded into the accumulator
# is not the fake-quant model's float bias); bias_mode="float" must be bit-identical.
# docs/integer_semantics.md §5.
LOGITS_RTOL = 1e-3


# ---------------------------------------------------------------------------------------------
# Integer modules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DecodedWeights:
    """What the hardware reads for one layer, decoded from the packed fields."""

    codes: np.ndarray | None  # int8 [N, K] (dense layers)
    values: np.ndarray | None  # int8 [N, K/2] (2:4 layers)
    indices: np.ndarray | None  # uint8 [N, K/2]


def decode_weights(layer: IntLinear) -> DecodedWeights:
    """Decode a layer's packed on-disk weights and check them against its unpacked arrays.

    A 2:4 layer yields kept values + indices (never a dense matrix); a dense layer its codes.
    Raises :class:`AccelsimError` if the packed and unpacked forms disagree.
    """
    if layer.sparsity == "2:4":
        if layer.packed_values is None or layer.packed_indices is None:
            raise AccelsimError(f"int model: layer {layer.name}: sparsity 2:4 without packed "
                                "values/indices")
        half = layer.k // 2
        values = kernels.unpack_weight_codes(layer.packed_values, layer.weight_bits, half,
                                             layer.grid)
        indices = kernels.unpack_indices_2bit(layer.packed_indices, half)
        dense = kernels.decompress_2to4(values, indices)
        _same(layer, "packed_values", values, layer.sparse_values)
        _same(layer, "packed_indices", indices, layer.sparse_indices)
        _same(layer, "sparse_values/sparse_indices", dense, layer.weight_codes)
        return DecodedWeights(None, values, indices)
    codes = kernels.unpack_weight_codes(layer.packed_codes, layer.weight_bits, layer.k, layer.grid)
    _same(layer, "packed_codes", codes, layer.weight_codes)
    return DecodedWeights(codes, None, None)


def _same(layer: IntLinear, what: str, decoded: np.ndarray, stored: np.ndarray | None) -> None:
    if stored is None or decoded.shape != stored.shape or not np.array_equal(decoded, stored):
        bad = -1 if stored is None or decoded.shape != stored.shape else int(
            np.count_nonzero(decoded != stored))
        raise AccelsimError(
            f"int model: layer {layer.name}: {what} decodes to codes that differ from "
            f"weight_codes ({bad} entries; -1 = shape); allowed: identical"
        )


def _to_numpy(x: Tensor) -> np.ndarray:
    return x.detach().to(torch.float32).cpu().numpy()


class IntLinearModule(nn.Module):
    """A quantized linear layer computed by the integer kernels (see module docstring)."""

    def __init__(self, layer: IntLinear, bias_mode: BiasMode = "float") -> None:
        super().__init__()
        if bias_mode not in BIAS_MODES:
            raise AccelsimError(f"bias_mode={bias_mode!r} is not one of {', '.join(BIAS_MODES)}")
        self.layer = layer
        self.bias_mode = bias_mode
        self.weights = decode_weights(layer)
        # [K, N] (dense) or [K/2, N] (2:4) copies for the kernels' row-streaming loops, made once.
        w = self.weights
        self.w_transposed = None if w.codes is None else np.ascontiguousarray(w.codes.T)
        self.sparse_transposed = None if w.values is None else (
            np.ascontiguousarray(w.values.T), np.ascontiguousarray(w.indices.T))
        self.out_scale = np.float32(layer.act.scale) * layer.weight_scale.astype(np.float32)
        self.capture: list[np.ndarray] | None = None

    def accumulate(self, x: np.ndarray, with_bias: bool = False) -> np.ndarray:
        """int32 accumulators ``[rows, N]`` of float32 inputs ``[rows, K]`` (started at
        ``bias_int32`` when ``with_bias``)."""
        act = self.layer.act
        codes = kernels.quantize(x, act.scale, act.zero_point, act.qmin, act.qmax)
        bias = self.layer.bias_int32 if with_bias else None
        if self.weights.codes is None:
            return kernels.sparse_gemm(codes, self.weights.values, self.weights.indices,
                                       act.zero_point, bias, transposed=self.sparse_transposed)
        return kernels.int_gemm(codes, self.weights.codes, act.zero_point, bias,
                                w_transposed=self.w_transposed)

    def dequantize(self, acc: np.ndarray) -> np.ndarray:
        """float32 layer output of accumulators from :meth:`accumulate` (same ``bias_mode``)."""
        y = acc.astype(np.float32) * self.out_scale
        if self.bias_mode == "float" and self.layer.bias is not None:
            y += self.layer.bias
        return y

    def forward(self, x: Tensor) -> Tensor:
        rows = _to_numpy(x).reshape(-1, self.layer.k)
        acc = self.accumulate(rows, with_bias=self.bias_mode == "int32")
        if self.capture is not None:
            self.capture.append(acc)
        return torch.from_numpy(self.dequantize(acc)).reshape(*x.shape[:-1], self.layer.n)


def _quantize_act(x: Tensor, act: Any) -> np.ndarray:
    return kernels.quantize(_to_numpy(x), act.scale, act.zero_point, act.qmin, act.qmax)


def _additive_mask(scores: Tensor, attention_mask: Tensor | None, keys: int) -> Tensor:
    """The mask arithmetic of transformers' eager attention (and the fake-quant function)."""
    if attention_mask is None:
        return scores
    if attention_mask.dtype == torch.bool:
        return scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    return scores + attention_mask[..., :keys]


def int_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                          attention_mask: Tensor | None, scaling: float | None = None,
                          dropout: float = 0.0, **kwargs: object) -> tuple[Tensor, Tensor]:
    """Attention whose ``QK^T`` and ``PV`` are int32 matmuls of codes (§4 of the spec).

    Modules without integer parameters run the fake-quant/eager function unchanged.
    """
    params: IntAttention | None = getattr(module, INT_ATTN_ATTR, None)
    if params is None:
        return quantized_attention_forward(module, query, key, value, attention_mask,
                                           scaling=scaling, dropout=dropout, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    q, k, v, p = params.q, params.k, params.v, params.probs
    q_codes = _quantize_act(query, q)
    k_codes_t = np.ascontiguousarray(np.swapaxes(_quantize_act(key, k), -1, -2))
    acc_qk = kernels.int_bmm(q_codes, k_codes_t, q.zero_point, k.zero_point)
    qk_scale = np.float32(q.scale) * np.float32(k.scale)
    scores = torch.from_numpy(acc_qk.astype(np.float32) * qk_scale)
    scores = _additive_mask(scores * scaling, attention_mask, key.shape[-2])
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    p_codes = _quantize_act(probs, p)
    acc_pv = kernels.int_bmm(p_codes, _quantize_act(value, v), p.zero_point, v.zero_point)
    out = acc_pv.astype(np.float32) * (np.float32(p.scale) * np.float32(v.scale))
    probs_dq = kernels.dequantize(p_codes, p.scale, p.zero_point)
    return torch.from_numpy(out).transpose(1, 2).contiguous(), torch.from_numpy(probs_dq)


def _register_int_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(INT_ATTN_IMPLEMENTATION, int_attention_forward)
    AttentionMaskInterface.register(INT_ATTN_IMPLEMENTATION, eager_mask)


def _set_attn_implementation(model: nn.Module, name: str) -> None:
    configs = {id(m.config): m.config for m in model.modules()
               if getattr(getattr(m, "config", None), "_attn_implementation", None) is not None}
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    for config in configs.values():  # wrappers (Whisper encoder) that are no PreTrainedModel
        config._attn_implementation = name


def build_int_executor(model: nn.Module, int_model: IntModel,
                       bias_mode: BiasMode = "float") -> nn.Module:
    """A copy of ``model`` whose quantized GEMMs run on the integer kernels from ``int_model``.

    ``model`` is the compressed model the integer model was exported from (or any model of the
    same architecture with the same float tensors); it is left untouched. The copy is in eval
    mode and is called like the model: ``executor(**inputs)``.
    """
    executor = copy.deepcopy(model).eval()
    for layer in int_model.linears:
        try:
            current = executor.get_submodule(layer.name)
        except AttributeError as exc:
            raise AccelsimError(f"int model: layer {layer.name!r} is not a module of "
                                f"{type(model).__name__}; allowed: the model it was exported "
                                "from") from exc
        if getattr(current, "in_features", layer.k) != layer.k or getattr(
                current, "out_features", layer.n) != layer.n:
            raise AccelsimError(f"int model: layer {layer.name} is [{layer.n}, {layer.k}] but the "
                                f"model's is [{current.out_features}, {current.in_features}]")
        parent_name, _, child = layer.name.rpartition(".")
        parent = executor.get_submodule(parent_name) if parent_name else executor
        setattr(parent, child, IntLinearModule(layer, bias_mode))
    if int_model.attentions:
        _register_int_attention()
        for attention in int_model.attentions:
            module = executor.get_submodule(attention.name)
            setattr(module, INT_ATTN_ATTR, attention)
        _set_attn_implementation(executor, INT_ATTN_IMPLEMENTATION)
    return executor


# ---------------------------------------------------------------------------------------------
# Running over batches
# ---------------------------------------------------------------------------------------------


def model_inputs(batch: Any) -> Mapping[str, Tensor]:
    """Keyword inputs of a :class:`~accelsim.tasks.base.Batch` or of a plain input dict."""
    inputs = getattr(batch, "inputs", batch)
    if not isinstance(inputs, Mapping):
        raise AccelsimError(f"batches: got {type(batch).__name__}; allowed: Batch objects or "
                            "dicts of model keyword inputs")
    return inputs


def output_logits(output: Any) -> Tensor:
    """Logits of a model output (``.logits``, else ``last_hidden_state``, a tensor or tuple)."""
    for attr in ("logits", "last_hidden_state"):
        if hasattr(output, attr) and isinstance(getattr(output, attr), Tensor):
            return getattr(output, attr)
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise AccelsimError(f"model output: {type(output).__name__} has no logits or hidden state")


@dataclass(frozen=True, eq=False)
class IntRunResult:
    """Logits of every batch (concatenated along dim 0) and, when asked, int32 accumulators of
    every quantized linear layer (one array per call, in call order)."""

    logits: Tensor
    accumulators: dict[str, list[np.ndarray]] | None


def run_int_model(model: nn.Module, int_model: IntModel, batches: Iterable[Any],
                  capture_accumulators: bool = False,
                  bias_mode: BiasMode = "float") -> IntRunResult:
    """Execute ``int_model`` (its GEMMs on the integer kernels) over ``batches``."""
    executor = build_int_executor(model, int_model, bias_mode)
    modules = {n: m for n, m in executor.named_modules() if isinstance(m, IntLinearModule)}
    if capture_accumulators:
        for module in modules.values():
            module.capture = []
    logits = []
    with torch.no_grad():
        for batch in batches:
            logits.append(output_logits(executor(**model_inputs(batch))).float())
    if not logits:
        raise AccelsimError("run_int_model: no batches given; allowed: at least one batch")
    captured = {n: m.capture for n, m in modules.items()} if capture_accumulators else None
    return IntRunResult(logits=torch.cat(logits), accumulators=captured)


# ---------------------------------------------------------------------------------------------
# Fake-quant vs integer verification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCheck:
    """One quantized GEMM: the teacher-forced bit-exactness check and the end-to-end drift.

    Teacher-forced (both sides get the fake-quant model's layer input): ``accumulators`` int32
    outputs compared, ``mismatches`` how many differ from the exact integers behind the fake-quant
    layer, ``max_abs_acc_diff`` the largest difference, ``max_abs_out_err`` the largest float
    difference of the dequantized output (linear: includes the int32 bias rounding).
    End to end (each model runs on its own outputs): ``e2e_input_codes`` input codes of the
    layer and ``e2e_code_flips`` how many differ between the two runs (linear layers; 0 for the
    attention matmuls, whose inputs are the projections' outputs).
    """

    name: str
    kind: str
    sparsity: str
    accumulators: int
    mismatches: int
    max_abs_acc_diff: int
    max_abs_out_err: float
    e2e_input_codes: int = 0
    e2e_code_flips: int = 0


@dataclass(frozen=True)
class VerifyReport:
    """``passed``: the bit-exact contract (no accumulator differs). ``end_to_end_ok``: logits
    within :attr:`logits_tolerance` (zero with the float bias: the fake-quant model's inference
    forward computes the integer path's arithmetic, docs/integer_semantics.md §5) and argmax
    agreement of at least ``PREDICTION_AGREEMENT_MIN_PCT``."""

    layers: tuple[LayerCheck, ...]
    logits_max_abs_diff: float
    logits_max_abs: float
    prediction_agreement_pct: float
    num_predictions: int
    bias_mode: BiasMode = "float"

    @property
    def logits_tolerance(self) -> float:
        if self.bias_mode == "float":
            return 0.0
        return LOGITS_RTOL * self.logits_max_abs

    @property
    def mismatches(self) -> int:
        return sum(layer.mismatches for layer in self.layers)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0

    @property
    def end_to_end_ok(self) -> bool:
        within = self.logits_max_abs_diff <= self.logits_tolerance
        return within and self.prediction_agreement_pct >= PREDICTION_AGREEMENT_MIN_PCT

    @property
    def first_code_flip(self) -> str | None:
        """The first layer (execution order) whose input codes differ between the two runs."""
        return next((layer.name for layer in self.layers if layer.e2e_code_flips), None)

    def verdict(self) -> str:
        accs = sum(layer.accumulators for layer in self.layers)
        e2e = "within" if self.end_to_end_ok else "OUTSIDE"
        flip = self.first_code_flip
        return (f"{'PASS' if self.passed else 'FAIL'}: {self.mismatches} of {accs} int32 "
                f"accumulators differ in {len(self.layers)} GEMMs; end to end {e2e} bounds: "
                f"logits max |diff| {self.logits_max_abs_diff:.3g} (tolerance "
                f"{self.logits_tolerance:.3g}, bias {self.bias_mode}), predictions agree on "
                f"{self.prediction_agreement_pct:.2f}% of {self.num_predictions} (bound "
                f"{PREDICTION_AGREEMENT_MIN_PCT}%), first input-code flip: {flip or 'none'}")


def _integers(x_fq: Tensor, scale: Tensor) -> np.ndarray:
    """Integer operand (codes - zero point) behind a dequantized float32 tensor, exactly.

    ``x_fq = (c - zp) * s`` in float32, so ``x_fq / s`` in float64 lies within float32 rounding
    (relative 2^-24) of an integer well below 2^8 and rounds back to it.
    """
    ratio = x_fq.detach().double() / scale.detach().double()
    return torch.round(ratio).numpy()


class _Capture:
    """Forward pre-hooks storing the inputs of the fake-quant model's quantized modules."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.inputs: dict[str, Tensor] = {}
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            self.inputs[name] = args[0].detach()
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@dataclass
class _Tally:
    kind: str
    sparsity: str
    accumulators: int = 0
    mismatches: int = 0
    max_abs_acc_diff: int = 0
    max_abs_out_err: float = 0.0
    e2e_input_codes: int = 0
    e2e_code_flips: int = 0

    def add(self, ours: np.ndarray, exact: np.ndarray, out_err: float) -> None:
        diff = np.abs(ours.astype(np.float64) - exact)
        self.accumulators += ours.size
        self.mismatches += int(np.count_nonzero(diff))
        self.max_abs_acc_diff = max(self.max_abs_acc_diff, int(diff.max(initial=0)))
        self.max_abs_out_err = max(self.max_abs_out_err, out_err)


def _check_linear(tally: _Tally, fq: QuantLinear, ours: IntLinearModule, x: Tensor) -> None:
    rows = x.reshape(-1, fq.in_features).float()
    scale, _ = fq.act_quant.qparams()
    x_fq = fq.act_quant(rows)
    w_fq = fq.weight_quant(fq.masked_weight())
    w_step = fq.weight_quant.step.detach()
    if fq.weight_quant.grid == "no_zero":
        w_step = w_step / 2.0  # odd codes 2i+1 at half the step (docs/compression.md §2)
    # float64 products and sums of integers below 2^53: exact, whatever the order.
    exact = _integers(x_fq, scale) @ _integers(w_fq, w_step).T
    acc = ours.accumulate(rows.numpy())
    if ours.bias_mode == "int32" and ours.layer.bias_int32 is not None:
        y_int = ours.dequantize(acc + ours.layer.bias_int32)
    else:
        y_int = ours.dequantize(acc)
    y_fq = fq.forward(rows).numpy()  # no hooks: capture keeps the model's own layer input
    tally.add(acc, exact, float(np.abs(y_int - y_fq).max(initial=0.0)))


def _check_attention(tallies: dict[str, _Tally], name: str, quant: nn.ModuleDict,
                     params: IntAttention, inputs: dict[str, Tensor]) -> None:
    ops = {}
    for op in ("q", "k", "v", "probs"):
        quantizer: ActQuantizer = quant[op]
        x = inputs[f"{name}/{op}"]
        scale, _ = quantizer.qparams()
        ops[op] = (_integers(quantizer(x), scale), _quantize_act(x, getattr(params, op)))
    (q_exact, q_codes), (k_exact, k_codes) = ops["q"], ops["k"]
    (p_exact, p_codes), (v_exact, v_codes) = ops["probs"], ops["v"]
    pairs = (
        ("qk", q_exact @ np.swapaxes(k_exact, -1, -2),
         kernels.int_bmm(q_codes, np.ascontiguousarray(np.swapaxes(k_codes, -1, -2)),
                         params.q.zero_point, params.k.zero_point),
         np.float32(params.q.scale) * np.float32(params.k.scale)),
        ("pv", p_exact @ v_exact,
         kernels.int_bmm(p_codes, v_codes, params.probs.zero_point, params.v.zero_point),
         np.float32(params.probs.scale) * np.float32(params.v.scale)),
    )
    for kind, exact, acc, scale in pairs:
        out_err = float(np.abs((acc.astype(np.float64) - exact) * float(scale)).max(initial=0.0))
        tallies[f"{name}:{kind}"].add(acc, exact, out_err)


def compare_with_fake_quant(model: nn.Module, int_model: IntModel, batches: Iterable[Any],
                            bias_mode: BiasMode = "float") -> VerifyReport:
    """Fake-quant ``model`` against the integer execution of ``int_model`` on ``batches``.

    Per layer (teacher-forced: both sides get the fake-quant model's layer input): integer
    accumulators of the kernels vs the exact integers behind the fake-quant layer's dequantized
    operands. End to end: logits of the fake-quant model vs the integer model's, and argmax
    agreement along the last axis.
    """
    model = model.eval()
    executor = build_int_executor(model, int_model, bias_mode)
    int_layers = {n: m for n, m in executor.named_modules() if isinstance(m, IntLinearModule)}
    fq_layers = {layer.name: model.get_submodule(layer.name) for layer in int_model.linears}
    for name, module in fq_layers.items():
        if not isinstance(module, QuantLinear):
            raise AccelsimError(f"verify: {name} is a {type(module).__name__}, not a QuantLinear; "
                                "allowed: the compressed model the integer model came from")
    watched: dict[str, nn.Module] = dict(fq_layers)
    attention_quant = {}
    for attention in int_model.attentions:
        quant = getattr(model.get_submodule(attention.name), ATTN_QUANT)
        attention_quant[attention.name] = quant
        watched.update({f"{attention.name}/{op}": quant[op] for op in ("q", "k", "v", "probs")})
    tallies = {n: _Tally("linear", int_model.linear(n).sparsity) for n in fq_layers}
    for attention in int_model.attentions:
        tallies[f"{attention.name}:qk"] = _Tally("qk", "dense")
        tallies[f"{attention.name}:pv"] = _Tally("pv", "dense")
    capture = _Capture(watched)
    int_capture = _Capture(int_layers)
    max_diff = max_abs = 0.0
    agree = total = 0
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = model_inputs(batch)
                capture.inputs.clear()
                fq_logits = output_logits(model(**inputs)).float()
                for name, module in fq_layers.items():
                    _check_linear(tallies[name], module, int_layers[name], capture.inputs[name])
                for attention in int_model.attentions:
                    _check_attention(tallies, attention.name, attention_quant[attention.name],
                                     attention, capture.inputs)
                int_capture.inputs.clear()
                int_logits = output_logits(executor(**inputs)).float()
                for name, module in int_layers.items():
                    act = module.layer.act
                    codes = [kernels.quantize(_to_numpy(c.inputs[name]), act.scale,
                                              act.zero_point, act.qmin, act.qmax)
                             for c in (capture, int_capture)]
                    tallies[name].e2e_input_codes += codes[0].size
                    tallies[name].e2e_code_flips += int(np.count_nonzero(codes[0] != codes[1]))
                max_diff = max(max_diff, float((int_logits - fq_logits).abs().max()))
                max_abs = max(max_abs, float(fq_logits.abs().max()))
                agree += int((int_logits.argmax(-1) == fq_logits.argmax(-1)).sum())
                total += fq_logits.argmax(-1).numel()
    finally:
        capture.close()
        int_capture.close()
    if total == 0:
        raise AccelsimError("verify: no batches given; allowed: at least one batch")
    layers = tuple(LayerCheck(name, t.kind, t.sparsity, t.accumulators, t.mismatches,
                              t.max_abs_acc_diff, t.max_abs_out_err, t.e2e_input_codes,
                              t.e2e_code_flips) for name, t in tallies.items())
    return VerifyReport(layers, max_diff, max_abs, 100.0 * agree / total, total, bias_mode)
