"""The integer execution (:mod:`accelsim.ref.execute`) checked against the fake-quant model it
was exported from: :func:`compare_with_fake_quant` and its :class:`VerifyReport`
(docs/integer_semantics.md §5).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from accelsim.compress.apply import ATTN_QUANT
from accelsim.compress.export import IntAttention, IntModel
from accelsim.compress.quant import ActQuantizer, QuantLinear
from accelsim.errors import AccelsimError
from accelsim.ref import kernels
from accelsim.ref.execute import (
    BiasMode,
    IntLinearModule,
    build_int_executor,
    model_inputs,
    one_torch_thread,
    output_logits,
    quantize_act,
)

PREDICTION_AGREEMENT_MIN_PCT = 99.9
# Of max |fake-quant logits|, for bias_mode="int32" only (the bias rounded into the accumulator
# is not the fake-quant model's float bias); bias_mode="float" must be bit-identical.
# docs/integer_semantics.md §5.
LOGITS_RTOL = 1e-3


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
        ops[op] = (_integers(quantizer(x), scale), quantize_act(x, getattr(params, op)))
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
                with one_torch_thread():  # the executor's float ops run on one thread
                    fq_logits = output_logits(model(**inputs)).float()
                for name, module in fq_layers.items():
                    _check_linear(tallies[name], module, int_layers[name], capture.inputs[name])
                for attention in int_model.attentions:
                    _check_attention(tallies, attention.name, attention_quant[attention.name],
                                     attention, capture.inputs)
                int_capture.inputs.clear()
                int_logits = output_logits(executor(**inputs)).float()
                for name, module in int_layers.items():
                    codes = [module.input_codes(c.inputs[name].detach().float().numpy())
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
