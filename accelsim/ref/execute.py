"""Whole-model integer execution of an exported integer model.

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
The layer-by-layer check of this execution against the fake-quant model is
:mod:`accelsim.ref.compare`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from accelsim.compress.apply import mask_scores, quantized_attention_forward
from accelsim.compress.export import IntAttention, IntLinear, IntModel
from accelsim.errors import AccelsimError
from accelsim.formats import SPARSE_24, twos_complement_range
from accelsim.ref import int_mode, kernels, vector_mode, vector_ops
from accelsim.ref.codes import (
    decompress_2to4,
    dequantize,
    quantize,
    unpack_indices_2bit,
    unpack_weight_codes,
)
from accelsim.ref.datapath import FAKE_QUANT_DATAPATH, Datapath, DatapathCounts

BiasMode = Literal["float", "int32"]
BIAS_MODES: tuple[str, ...] = ("float", "int32")
INT_ATTN_IMPLEMENTATION = "accelsim_int"
INT_ATTN_ATTR = "accelsim_int_attention"  # the IntAttention of a module run by the executor
DATAPATH_ATTR = "accelsim_datapath"  # (Datapath, DatapathCounts) of an executed attention module
COUNTS_ATTR = "accelsim_datapath_counts"  # the executor's DatapathCounts
INT_MODE_ATTR = "accelsim_int_format_mode"  # an int-format executor's IntFormatMode
# The projections whose output is an attention operand with nothing in between but views: their
# accumulators requantize straight to the operand's codes (Datapath.integer_requant).
_OPERAND_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "q": ("query", "q_proj"), "k": ("key", "k_proj"), "v": ("value", "v_proj")}
# Whisper and OPT multiply q_proj's output by the attention scaling (a vector-unit op) before the
# quantizer, and Llama rotates q and k (RoPE), so those projections do not feed the quantizer
# directly.
_SCALED_PROJECTIONS: dict[str, tuple[str, ...]] = {"whisper": ("q",), "opt": ("q",),
                                                   "llama": ("q", "k")}


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
    if layer.sparsity == SPARSE_24:
        if layer.packed_values is None or layer.packed_indices is None:
            raise AccelsimError(f"int model: layer {layer.name}: sparsity 2:4 without packed "
                                "values/indices")
        half = layer.k // 2
        values = unpack_weight_codes(layer.packed_values, layer.weight_bits, half, layer.grid)
        indices = unpack_indices_2bit(layer.packed_indices, half)
        dense = decompress_2to4(values, indices)
        _same(layer, "packed_values", values, layer.sparse_values)
        _same(layer, "packed_indices", indices, layer.sparse_indices)
        _same(layer, "sparse_values/sparse_indices", dense, layer.weight_codes)
        return DecodedWeights(None, values, indices)
    codes = unpack_weight_codes(layer.packed_codes, layer.weight_bits, layer.k, layer.grid)
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

    def __init__(self, layer: IntLinear, bias_mode: BiasMode = "float",
                 datapath: Datapath = FAKE_QUANT_DATAPATH, counts: DatapathCounts | None = None,
                 requant_to: Any = None) -> None:
        super().__init__()
        if bias_mode not in BIAS_MODES:
            raise AccelsimError(f"bias_mode={bias_mode!r} is not one of {', '.join(BIAS_MODES)}")
        self.layer = layer
        self.bias_mode = bias_mode
        self.datapath = datapath
        self.counts = DatapathCounts() if counts is None else counts
        # The ActQuant this layer's output feeds directly; its accumulators requantize to it.
        self.requant_to = requant_to
        self.requant_multiplier = None if requant_to is None else (
            np.float64(layer.act.scale) * layer.weight_scale.astype(np.float64)
            / np.float64(requant_to.scale))
        self.weights = decode_weights(layer)
        # The forms the kernels stream (padded dense codes; the 2:4 shuffle controls and values),
        # made once.
        w = self.weights
        self.dense_prepared = None if w.codes is None else kernels.prepare_dense(w.codes,
                                                                                 layer.name)
        self.sparse_prepared = None if w.values is None else kernels.prepare_sparse(
            w.values, w.indices, layer.name)
        self.out_scale = np.float32(layer.act.scale) * layer.weight_scale.astype(np.float32)
        self.capture: list[np.ndarray] | None = None
        # The integer tensors of the ``int`` vector format (None in the float formats).
        self.int_tensors: int_mode.IntTensors | None = None
        acc_scales = np.float64(layer.act.scale) * layer.weight_scale.astype(np.float64)
        self.int_scale = float(acc_scales.max())
        self.int_rescale = np.broadcast_to(acc_scales / self.int_scale, (layer.n,))

    def input_codes(self, x: np.ndarray) -> np.ndarray:
        """Activation codes of float32 inputs ``[..., K]``, smoothed per channel first where the
        layer smooths (one float32 division, as the fake-quant model)."""
        act = self.layer.act
        if self.layer.input_smoothing is not None:
            x = np.asarray(x, dtype=np.float32) / self.layer.input_smoothing
        return quantize(x, act.scale, act.zero_point, act.qmin, act.qmax)

    def accumulate(self, x: np.ndarray, with_bias: bool = False) -> np.ndarray:
        """int32 accumulators ``[rows, N]`` of float32 inputs ``[rows, K]`` (started at
        ``bias_int32`` when ``with_bias``)."""
        return self.accumulate_codes(self.input_codes(x), with_bias)

    def int_input_codes(self, q: np.ndarray, scale: float) -> np.ndarray:
        """Codes of an ``int``-format tensor ``q * scale`` ``[rows, K]``: an integer requantize by
        ``scale / (s_a * smoothing[k])`` per input channel."""
        act = self.layer.act
        smoothing = (np.ones(self.layer.k) if self.layer.input_smoothing is None
                     else self.layer.input_smoothing.astype(np.float64))
        multiplier = scale / (np.float64(act.scale) * smoothing)
        int32_min, int32_max = twos_complement_range(32)
        if q.size and (int(q.min()) < int32_min or int(q.max()) > int32_max):
            # The requantizer reads int32: a wider value would wrap silently in the cast.
            raise AccelsimError(
                f"{self.layer.name}: int-format input spans [{int(q.min())}, {int(q.max())}]; "
                f"the input requantizer takes int32 ({int32_min}..{int32_max})")
        q32 = q.astype(np.int32)
        codes = kernels.requantize(q32, multiplier, act.zero_point, act.qmin, act.qmax)
        self.counts.record("requantize", codes, {"acc": q32, "multiplier": multiplier,
                                                 "zero_point": act.zero_point, "qmin": act.qmin,
                                                 "qmax": act.qmax})
        return codes

    def accumulate_codes(self, codes: np.ndarray, with_bias: bool = False) -> np.ndarray:
        """int32 accumulators ``[rows, N]`` of activation codes ``[rows, K]``, clipped to the
        datapath's accumulator."""
        act = self.layer.act
        bias = self.layer.bias_int32 if with_bias else None
        w = self.weights
        if w.codes is None:
            acc = kernels.sparse_gemm(codes, w.values, w.indices, act.zero_point, bias,
                                      prepared=self.sparse_prepared)
            inputs = {"values": w.values, "indices": w.indices}
        else:
            acc = kernels.int_gemm(codes, w.codes, act.zero_point, bias,
                                   prepared=self.dense_prepared)
            inputs = {"w_codes": w.codes}
        self.counts.add_macs("linear", codes.shape[0] * self.layer.k * self.layer.n)
        return clip_to_datapath(acc, self.datapath, self.counts,
                                "gemm" if w.codes is not None else "sparse_gemm",
                                {"a_codes": codes, "a_zp": act.zero_point, "bias": bias, **inputs})

    def dequantize(self, acc: np.ndarray) -> np.ndarray:
        """float32 layer output of accumulators from :meth:`accumulate` (same ``bias_mode``)."""
        y = acc.astype(np.float32) * self.out_scale
        if self.bias_mode == "float" and self.layer.bias is not None:
            y += self.layer.bias
        return y

    def forward(self, x: Tensor) -> Tensor:
        requant = self.requant_to is not None
        with_bias = requant or self.bias_mode == "int32" or self.int_tensors is not None
        ints = self.int_tensors
        if ints is not None and ints.scale(x) is not None:
            q, scale = ints.ints(x)
            codes = self.int_input_codes(q.reshape(-1, self.layer.k), scale)
        else:
            codes = self.input_codes(_to_numpy(x).reshape(-1, self.layer.k))
        acc = self.accumulate_codes(codes, with_bias)
        if self.capture is not None:
            self.capture.append(acc)
        if ints is not None and not requant:
            q = vector_ops.multiply_by_real(acc, self.int_rescale)
            int32_min, int32_max = twos_complement_range(32)
            self.counts.record("requantize", q, {
                "acc": acc, "multiplier": self.int_rescale, "zero_point": 0,
                "qmin": int32_min, "qmax": int32_max})
            return ints.tensor(q.reshape(*x.shape[:-1], self.layer.n), self.int_scale,
                               self.datapath.accumulator_bits)  # each column rescaled by <= 1
        if requant:
            out = self.requant_to
            codes = kernels.requantize(acc, self.requant_multiplier, out.zero_point, out.qmin,
                                       out.qmax)
            self.counts.record("requantize", codes, {
                "acc": acc, "multiplier": self.requant_multiplier, "zero_point": out.zero_point,
                "qmin": out.qmin, "qmax": out.qmax})
            # The next quantizer divides these values by its scale and recovers the codes
            # exactly: |code - zp| <= 255 and the float32 round trip errs by < 2^-15.
            y = dequantize(codes, out.scale, out.zero_point)
        else:
            y = self.dequantize(acc)
        return torch.from_numpy(y).reshape(*x.shape[:-1], self.layer.n)


def clip_to_datapath(acc: np.ndarray, datapath: Datapath, counts: DatapathCounts, kind: str,
                     inputs: dict[str, Any]) -> np.ndarray:
    """Exact int32 sums as the datapath's accumulator holds them; ``counts`` counts them and
    records the GEMM (oracle ``kind``, its operand ``inputs``)."""
    bits, overflow = datapath.accumulator_bits, datapath.overflow
    clipped, outside = kernels.clip_accumulators(acc, bits, overflow)
    counts.accumulators += acc.size
    counts.saturations += outside
    counts.record(kind, (clipped, outside), {**inputs, "bits": bits, "overflow": overflow})
    return clipped


def quantize_act(x: Tensor, act: Any) -> np.ndarray:
    """Codes of a float tensor under an exported activation quantizer's parameters."""
    return quantize(_to_numpy(x), act.scale, act.zero_point, act.qmin, act.qmax)


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
    datapath, counts, ints = getattr(module, DATAPATH_ATTR,
                                     (FAKE_QUANT_DATAPATH, DatapathCounts(), None))
    q, k, v, p = params.q, params.k, params.v, params.probs
    q_codes = quantize_act(query, q)
    k_codes_t = np.ascontiguousarray(np.swapaxes(quantize_act(key, k), -1, -2))
    acc_qk = clip_to_datapath(
        kernels.int_bmm(q_codes, k_codes_t, q.zero_point, k.zero_point), datapath, counts, "bmm",
        {"a_codes": q_codes, "a_zp": q.zero_point, "b_codes": k_codes_t, "b_zp": k.zero_point})
    counts.add_macs("matmul", q_codes.size * k_codes_t.shape[-1])
    if ints is not None:
        return _int_attention_tail(acc_qk, attention_mask, key.shape[-2], value, params, scaling,
                                   datapath, counts, ints)
    qk_scale = np.float32(q.scale) * np.float32(k.scale)
    scores = torch.from_numpy(acc_qk.astype(np.float32) * qk_scale)
    scores = mask_scores(scores * scaling, attention_mask, key.shape[-2])
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    p_codes = quantize_act(probs, p)
    v_codes = quantize_act(value, v)
    acc_pv = clip_to_datapath(
        kernels.int_bmm(p_codes, v_codes, p.zero_point, v.zero_point), datapath, counts, "bmm",
        {"a_codes": p_codes, "a_zp": p.zero_point, "b_codes": v_codes, "b_zp": v.zero_point})
    counts.add_macs("matmul", p_codes.size * v_codes.shape[-1])
    out = acc_pv.astype(np.float32) * (np.float32(p.scale) * np.float32(v.scale))
    probs_dq = dequantize(p_codes, p.scale, p.zero_point)
    return torch.from_numpy(out).transpose(1, 2).contiguous(), torch.from_numpy(probs_dq)


def _keep_mask(attention_mask: Tensor | None, keys: int, shape: tuple) -> np.ndarray | None:
    """Which scores take part: a bool mask itself, an additive one where it is not the float32
    minimum (transformers' eager masks hold 0 or that minimum)."""
    if attention_mask is None:
        return None
    mask = attention_mask[..., :keys]
    keep = mask if mask.dtype == torch.bool else mask > torch.finfo(torch.float32).min / 2
    return np.broadcast_to(keep.numpy(), shape)


def _int_attention_tail(acc_qk: np.ndarray, attention_mask: Tensor | None, keys: int,
                        value: Tensor, params: IntAttention, scaling: float, datapath: Datapath,
                        counts: DatapathCounts, ints: int_mode.IntTensors) -> tuple[Tensor, Tensor]:
    """Softmax and ``PV`` in the ``int`` format: the scaling folds into the scores' scale."""
    q, k, v, p = params.q, params.k, params.v, params.probs
    scale = float(np.float64(q.scale) * np.float64(k.scale) * scaling)
    keep = _keep_mask(attention_mask, keys, acc_qk.shape)
    p_codes = int_mode.int_softmax_codes(acc_qk, scale, keep, p, counts,
                                         exact="softmax" in datapath.exact_kernels)
    v_codes = quantize_act(value, v)
    acc_pv = clip_to_datapath(
        kernels.int_bmm(p_codes, v_codes, p.zero_point, v.zero_point), datapath, counts, "bmm",
        {"a_codes": p_codes, "a_zp": p.zero_point, "b_codes": v_codes, "b_zp": v.zero_point})
    counts.add_macs("matmul", p_codes.size * v_codes.shape[-1])
    out = ints.tensor(acc_pv, float(np.float64(p.scale) * np.float64(v.scale)),
                      datapath.accumulator_bits)
    return out.transpose(1, 2).contiguous(), torch.from_numpy(dequantize(p_codes, p.scale,
                                                                           p.zero_point))


def _register_int_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    def materialized_mask(*args: Any, **kwargs: Any) -> Any:
        # transformers drops an all-ones padding mask (no padding) at run time, which the traced
        # graph cannot: the chip adds the padding mask it is given, zeros included, as the graph
        # prices. Without a padding mask (ViT) there is none to add, in the graph either.
        if kwargs.get("attention_mask") is not None:
            kwargs["allow_is_bidirectional_skip"] = False
        return eager_mask(*args, **kwargs)

    AttentionInterface.register(INT_ATTN_IMPLEMENTATION, int_attention_forward)
    AttentionMaskInterface.register(INT_ATTN_IMPLEMENTATION, materialized_mask)


def _set_attn_implementation(model: nn.Module, name: str) -> None:
    configs = {id(m.config): m.config for m in model.modules()
               if getattr(getattr(m, "config", None), "_attn_implementation", None) is not None}
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    for config in configs.values():  # wrappers (Whisper encoder) that are no PreTrainedModel
        config._attn_implementation = name


def operand_projections(int_model: IntModel) -> dict[str, Any]:
    """Linear layer name -> the attention operand quantizer (:class:`ActQuant`) its output feeds
    with only views in between (q, k, v projections; not Whisper's scaled q)."""
    names = {layer.name for layer in int_model.linears}
    scaled = _SCALED_PROJECTIONS.get(int_model.family, ())
    feeds: dict[str, Any] = {}
    for attention in int_model.attentions:
        for op, children in _OPERAND_PROJECTIONS.items():
            for child in children:
                if f"{attention.name}.{child}" in names and op not in scaled:
                    feeds[f"{attention.name}.{child}"] = getattr(attention, op)
    return feeds


def build_int_executor(model: nn.Module, int_model: IntModel, bias_mode: BiasMode = "float",
                       datapath: Datapath = FAKE_QUANT_DATAPATH) -> nn.Module:
    """A copy of ``model`` whose quantized GEMMs run on the integer kernels from ``int_model``.

    ``model`` is the compressed model the integer model was exported from (or any model of the
    same architecture with the same float tensors); it is left untouched. The copy is in eval
    mode and is called like the model: ``executor(**inputs)``. Its ``accelsim_datapath_counts``
    (:class:`DatapathCounts`) accumulate over its calls.
    """
    executor = copy.deepcopy(model).eval()
    counts = DatapathCounts()
    setattr(executor, COUNTS_ATTR, counts)
    feeds = operand_projections(int_model) if datapath.integer_requant else {}
    ints = int_mode.IntTensors() if datapath.vector_format == "int" else None
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
        module = IntLinearModule(layer, bias_mode, datapath, counts, feeds.get(layer.name))
        module.int_tensors = ints
        setattr(parent, child, module)
    if int_model.attentions:
        _register_int_attention()
        for attention in int_model.attentions:
            module = executor.get_submodule(attention.name)
            setattr(module, INT_ATTN_ATTR, attention)
            setattr(module, DATAPATH_ATTR, (datapath, counts, ints))
        _set_attn_implementation(executor, INT_ATTN_IMPLEMENTATION)
    if datapath.vector_format is not None:
        _run_in_vector_format(executor, datapath, int_model, counts, ints)
    _torch_single_threaded(executor)
    return executor


def calibrate_residual_adds(model: nn.Module, int_model: IntModel, batches: Iterable[Any],
                            datapath: Datapath) -> IntModel:
    """``int_model`` with the output scale of each of its on-chip residual adds calibrated
    (``IntModel.residual_add_scales``): ``int_mode.calibrated_add_scale`` of the largest sum the
    add produced over ``batches``, run on ``datapath``'s ``int`` vector unit with the ``fitted``
    rule (the calibrated scales are then the ``calibrated`` rule's)."""
    if datapath.vector_format != "int":
        raise AccelsimError(f"calibrate_residual_adds: vector format {datapath.vector_format}; "
                            "allowed: int (the float formats add in floating point)")
    executor = build_int_executor(model, int_model,
                                  datapath=replace(datapath, residual_scale="fitted"))
    mode = getattr(executor, INT_MODE_ATTR)
    mode.add_peaks = {}
    with torch.no_grad():
        for batch in batches:
            executor(**model_inputs(batch))
    if not mode.add_peaks:
        raise AccelsimError("calibrate_residual_adds: no batches given or no residual add on "
                            "the chip; allowed: at least one batch of a model with residual adds")
    scales = {site: int_mode.calibrated_add_scale(peak) for site, peak in mode.add_peaks.items()}
    return replace(int_model, residual_add_scales=scales)


def with_residual_add_scales(model: nn.Module, int_model: IntModel, batches: Iterable[Any],
                             datapath: Datapath) -> IntModel:
    """``int_model`` as ``datapath`` runs it: under ``residual_scale: calibrated``, one without
    residual-add scales gets them from :func:`calibrate_residual_adds` on ``batches``; any other
    is returned as it is (``batches`` unread)."""
    if datapath.residual_scale != "calibrated" or int_model.residual_add_scales:
        return int_model
    return calibrate_residual_adds(model, int_model, batches, datapath)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's CPU ops on one thread inside the block. torch splits float reductions by thread,
    so a float op's bits depend on the thread count: a forward compared bit for bit with the
    executor's (whose PyTorch ops run here) must run here too."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _torch_single_threaded(executor: nn.Module) -> None:
    """Run the PyTorch ops of ``executor``'s calls on one thread (:func:`one_torch_thread`).
    They are small (views, host layers, glue between kernels), and torch's OpenMP workers,
    started at ``import torch``, spin between them: on a loaded 2-core machine a ViT-B/16 forward
    took 2.4x longer with 2 torch threads than with 1. The integer kernels pick their own
    threads."""
    model_forward = executor.forward

    def forward_one_thread(*args: Any, **kwargs: Any) -> Any:
        with one_torch_thread():
            return model_forward(*args, **kwargs)

    executor.forward = forward_one_thread


def _run_in_vector_format(executor: nn.Module, datapath: Datapath, int_model: IntModel,
                          counts: DatapathCounts, ints: int_mode.IntTensors | None) -> None:
    """Make every call of ``executor`` run its chip part in ``datapath``'s vector format
    (:mod:`accelsim.ref.vector_mode`, :mod:`accelsim.ref.int_mode`) and ``int_model``'s host
    modules in float32."""
    mode: Any
    if ints is None:
        mode = vector_mode.VectorFormatMode(datapath.vector_format, counts)
    else:
        if datapath.residual_scale == "calibrated" and not int_model.residual_add_scales:
            raise AccelsimError("datapath: residual_scale calibrated: the integer model has no "
                                "calibrated residual adds; allowed: a model calibrated by "
                                "accelsim.ref.execute.calibrate_residual_adds, or "
                                "residual_scale coarser, fitted")
        mode = int_mode.IntFormatMode(counts, ints, datapath.exact_kernels,
                                      datapath.gelu_table_segments, datapath.residual_scale,
                                      int_model.residual_add_scales)
        for name, module in executor.named_modules():
            module.register_forward_pre_hook(lambda *_, name=name: mode.enter_module(name))
            module.register_forward_hook(lambda *_: mode.leave_module(), always_call=True)
        setattr(executor, INT_MODE_ATTR, mode)
    vector_mode.host_hooks(executor, int_model.float_layers, mode)
    model_forward = executor.forward

    def forward_in_format(*args: Any, **kwargs: Any) -> Any:
        with mode:
            return model_forward(*args, **kwargs)

    executor.forward = forward_in_format


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
    """Logits of every batch (concatenated along dim 0), when asked the int32 accumulators of
    every quantized linear layer (one array per call, in call order, as the datapath's
    accumulator holds them), and the datapath's counts (accumulators, saturations)."""

    logits: Tensor
    accumulators: dict[str, list[np.ndarray]] | None
    counts: DatapathCounts = field(default_factory=DatapathCounts)


def run_int_model(model: nn.Module, int_model: IntModel, batches: Iterable[Any],
                  capture_accumulators: bool = False, bias_mode: BiasMode = "float",
                  datapath: Datapath = FAKE_QUANT_DATAPATH,
                  record_ops: bool = False) -> IntRunResult:
    """Execute ``int_model`` (its GEMMs on the integer kernels) over ``batches`` on
    ``datapath``; ``record_ops`` keeps every op for the oracle (``result.counts.records``)."""
    executor = build_int_executor(model, int_model, bias_mode, datapath)
    if record_ops:
        getattr(executor, COUNTS_ATTR).records = []
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
    return IntRunResult(logits=torch.cat(logits), accumulators=captured,
                        counts=getattr(executor, COUNTS_ATTR))
