"""Fake quantization: the one quantize expression, weight and activation quantizers, QuantLinear.

The integer reference (``accelsim.ref``) mirrors :func:`quantize_codes` bit for bit, so every
quantizer here goes through it (or, for the ``no_zero`` ablation grid, through the half-step
variant documented in :class:`WeightQuantizer`). See docs/compression.md §1-3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from accelsim.compress.precision import GemmPrecision
from accelsim.compress.sparsity import is_2_4, mask_2_4
from accelsim.formats import SPARSE_24, act_code_range, weight_code_range, weight_top_level

WeightGrid = Literal["zero_preserving", "twos_complement", "no_zero"]
Granularity = Literal["per_channel", "per_tensor"]
ScaleMethod = Literal["sawb", "lsq"]
ActMode = Literal["pact2", "symmetric"]

# Weights per block of rows in which a layer built for tracing computes its mask, step and
# codes (1 MiB of float32): the block's temporaries stay in cache and reuse freed heap blocks.
SUMMARY_BLOCK_WEIGHTS = 2**18

# SAWB clip coefficients (alpha = c1*sqrt(E[w^2]) + c2*E[|w|]) per bit width, from IBM's
# fms-model-optimizer sawb_utils (zero-aligned grids "403"/"803"; docs/compression.md §1).
SAWB_COEFFICIENTS: dict[int, tuple[float, float]] = {4: (12.035, -12.03), 8: (31.76, -35.04)}


def quantize_codes(x: Tensor, scale: Tensor, zero_point: Tensor | float, qmin: float,
                   qmax: float) -> Tensor:
    """THE quantize expression: ``clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)``.

    float32, true division by the float32 ``scale`` (not a multiply by its reciprocal: the two
    disagree near ties), ``torch.round`` rounds half to even like ``np.rint``. Returns float32
    integer-valued codes. No gradient (see :func:`fake_quantize`).
    """
    codes = torch.round(x / scale)
    # In place on the fresh quotient (a weight matrix is 4-17 MB); a tensor zero point keeps
    # the out-of-place add and its type promotion.
    codes = codes + zero_point if isinstance(zero_point, Tensor) else codes.add_(zero_point)
    return codes.clamp_(qmin, qmax)


def dequantize(codes: Tensor, scale: Tensor, zero_point: Tensor | float) -> Tensor:
    """``(codes - zero_point) * scale``."""
    return (codes - zero_point) * scale


@torch.library.custom_op("accelsim::fake_quantize", mutates_args=())
def fake_quantize_op(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: float, qmax: float,
                     smoothing: Tensor | None = None) -> Tensor:
    """``dequantize(quantize_codes(x / smoothing, ...))`` as ONE operator (no gradient): what a
    frozen activation quantizer runs, so ``torch.export`` records one node instead of six (the
    tracer knows it as ``fake_quantize``, a requantize; per-channel smoothing is part of it, as
    the hardware folds the factors into the quantize step)."""
    if smoothing is not None:
        x = x / smoothing
    return dequantize(quantize_codes(x, scale, zero_point, qmin, qmax), scale, zero_point)


@fake_quantize_op.register_fake
def _fake_quantize_shape(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: float, qmax: float,
                         smoothing: Tensor | None = None) -> Tensor:
    return torch.empty_like(x)


def integer_operand(x_fq: Tensor, scale: Tensor) -> Tensor:
    """The integers ``code - zero_point`` behind dequantized values ``x_fq``, as float64.

    ``x_fq = (c - zp) * s`` in float32, so ``x_fq / s`` lies within float32 rounding (relative
    2^-23) of an integer of magnitude below 2^8 and rounds back to it exactly.
    """
    return torch.round(x_fq.detach() / scale.detach()).to(torch.float64)


def integer_matmul(a: Tensor, b: Tensor, out_scale: Tensor) -> Tensor:
    """``float32(a @ b) * out_scale``: the integer reference's dequantized GEMM, bit for bit.

    ``a`` and ``b`` hold integers (:func:`integer_operand`) in float64, so every partial sum is an
    integer far below 2^53 and the matmul is exact in any summation order: the int32 accumulator.
    Its conversion to float32 and the one float32 multiply by ``out_scale`` (the ref's
    ``float32(s_a) * float32(s_w)``) are IEEE operations numpy performs identically.
    """
    return torch.matmul(a, b).to(torch.float32) * out_scale


def runs_integer_path(module: nn.Module) -> bool:
    """Whether a quantized module computes the integer reference's arithmetic: inference (eval
    mode, gradients off) outside ``torch.export``, whose graph must keep the float GEMM op that the
    tracer reads. Training keeps the float path for its straight-through gradients."""
    return (not module.training and not torch.is_grad_enabled()
            and not torch.compiler.is_exporting())


def round_ste(x: Tensor) -> Tensor:
    """``torch.round`` forward, identity backward (straight-through estimator).

    ``x + (round(x) - x)`` is exact in float32 (``round(x) - x`` is exact by Sterbenz's lemma
    for |x| >= 0.5 and equals ``-x`` otherwise), so the forward value is bit-identical to
    ``torch.round(x)``; tests check it on ties.
    """
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor | float, qmin: float,
                  qmax: float) -> Tensor:
    """Dequantized :func:`quantize_codes` with straight-through gradients.

    d/dx is 1 inside ``[qmin, qmax]`` and 0 where the code saturates; ``scale`` and a tensor
    ``zero_point`` receive LSQ/PACT+ gradients through autograd.
    """
    codes = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale


def sawb_clip(weight: Tensor, bits: int, per_channel: bool) -> Tensor:
    """SAWB clip per output channel ([N, 1]) or per tensor ([1, 1]), clamped to (0, max|w|].

    Statistics include pruned zeros (as in the reference code). The clamp keeps a degenerate
    channel (constant magnitude, mostly zeros) from an oversized or zero step.
    """
    c1, c2 = SAWB_COEFFICIENTS[bits]
    w = weight.detach().float()
    flat = w if per_channel else w.reshape(1, -1)
    magnitude = flat.abs()
    alpha = c1 * flat.pow(2).mean(dim=1, keepdim=True).sqrt() + c2 * magnitude.mean(
        dim=1, keepdim=True)
    max_abs = magnitude.amax(dim=1, keepdim=True)
    floor = torch.clamp(max_abs / 4.0, min=torch.finfo(torch.float32).tiny)
    return torch.minimum(torch.maximum(alpha, floor), torch.clamp(max_abs, min=floor))


def percentile_pair(sample: Tensor, lo_percent: float, hi_percent: float) -> Tensor:
    """``torch.quantile(sample, [lo, hi] / 100)`` (linear interpolation) of a 1-d float32 tensor,
    bit for bit, from two partial selections instead of a full sort (~10x faster).

    The arithmetic is quantile's own: float32 ranks ``q * (n - 1)``, the order statistics at
    their floor and ceil, ``lerp`` by the fractional part. The low percentile reads the smallest
    ``ceil(rank) + 1`` values, the high one the largest ``n - floor(rank)``. Empty or NaN inputs
    go to ``torch.quantile`` itself (its NaN propagation).
    """
    q = torch.tensor([lo_percent / 100.0, hi_percent / 100.0])
    n = sample.numel()
    if n == 0 or bool(torch.isnan(sample).any()):
        return torch.quantile(sample, q)
    ranks = q * (n - 1)
    below, above = ranks.long(), ranks.ceil().long()
    (lo_below, hi_below), (lo_above, hi_above) = below.tolist(), above.tolist()
    smallest = sample.topk(lo_above + 1, largest=False).values  # ascending
    largest = sample.topk(n - hi_below, largest=True).values  # descending: [i] = rank n-1-i
    values_below = torch.stack((smallest[lo_below], largest[n - 1 - hi_below]))
    values_above = torch.stack((smallest[lo_above], largest[n - 1 - hi_above]))
    return values_below.lerp(values_above, ranks - below)


def code_summary(codes: Tensor) -> tuple[float, bool]:
    """``(density, is_2_4)`` of weight ``codes``: the fraction of non-zero codes as a float32
    mean, and whether every group of 4 along K holds 2 zeros; what a trace reads of a layer."""
    return float((codes != 0).float().mean()), is_2_4(codes)


class WeightQuantizer(nn.Module):
    """Symmetric weight fake-quantizer (zero point 0), per output channel or per tensor.

    Grids (docs/compression.md §2): ``zero_preserving`` codes ``-q..q`` (4-bit: -7..7, the
    default: a pruned zero stays an exact zero); ``twos_complement`` ``-q-1..q``; ``no_zero``
    (ablation) levels ``(i + 0.5) * s`` with ``i = clamp(round(w / s - 0.5), -q-1, q)``.
    The step ``s`` is stored in ``self.step`` ([N, 1] or [1, 1]): a buffer recomputed from the
    weights by SAWB in every training forward (default), or an LSQ parameter.
    """

    def __init__(self, out_features: int, bits: int, grid: WeightGrid = "zero_preserving",
                 granularity: Granularity = "per_channel", method: ScaleMethod = "sawb") -> None:
        super().__init__()
        self.bits = bits
        self.grid: WeightGrid = grid
        self.granularity: Granularity = granularity
        self.method: ScaleMethod = method
        self.qmin, self.qmax = weight_code_range(bits, grid)
        rows = out_features if granularity == "per_channel" else 1
        step = torch.ones(rows, 1)
        if method == "lsq":
            self.step = nn.Parameter(step)
        else:
            self.register_buffer("step", step)

    def sawb_step(self, weight: Tensor) -> Tensor:
        """The step SAWB statistics of ``weight`` give ([rows, 1] or [1, 1])."""
        alpha = sawb_clip(weight, self.bits, self.granularity == "per_channel")
        return alpha / weight_top_level(self.bits, self.grid)

    def init_step(self, weight: Tensor) -> None:
        """Set the step from SAWB statistics of ``weight`` (the LSQ initial value too)."""
        with torch.no_grad():
            self.step.copy_(self.sawb_step(weight))
        if self.method == "lsq" and not hasattr(self, "_grad_hook"):
            # LSQ gradient scale 1/sqrt(numel * q) (Esser et al. 2020), applied on the gradient
            # so the forward step value stays exactly the stored (and exported) one.
            numel = weight.numel() // self.step.shape[0]
            factor = 1.0 / (numel * (2 ** (self.bits - 1) - 1)) ** 0.5
            self._grad_hook = self.step.register_hook(lambda g: g * factor)

    def current_step(self, weight: Tensor) -> Tensor:
        """The step the forward uses (SAWB recomputes it first in training mode)."""
        if self.method == "sawb" and self.training:
            self.init_step(weight)
        if self.method == "lsq":
            # A learned step must stay positive; the clamp is the identity on any sane value.
            return torch.clamp(self.step, min=torch.finfo(torch.float32).tiny)
        return self.step

    def forward(self, weight: Tensor) -> Tensor:
        step = self.current_step(weight)
        if self.grid == "no_zero":
            idx = torch.clamp(round_ste(weight / step - 0.5), self.qmin, self.qmax)
            return (idx + 0.5) * step
        return fake_quantize(weight, step, 0.0, self.qmin, self.qmax)

    @torch.no_grad()
    def export_codes(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(codes [N, K] integer-valued float32, scale [N] or [1]) with ``codes * scale`` equal
        to the eval-mode forward. ``no_zero`` codes are the odd integers ``2i + 1`` at ``s / 2``.
        """
        codes, scale = self._codes(weight, self.step)
        return codes, scale.reshape(-1)

    def _codes(self, weight: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
        """(codes, scale [rows, 1]) of ``weight`` at the stored ``step`` (or its rows)."""
        step = (torch.clamp(step, min=torch.finfo(torch.float32).tiny)
                if self.method == "lsq" else step).detach()
        if self.grid == "no_zero":
            idx = torch.clamp(torch.round(weight / step - 0.5), self.qmin, self.qmax)
            return 2.0 * idx + 1.0, step / 2.0
        return quantize_codes(weight, step, 0.0, self.qmin, self.qmax), step

    @torch.no_grad()
    def init_step_and_summarize_codes(self, weight: Tensor,
                                      magnitude_mask: bool) -> tuple[float, bool]:
        """:meth:`init_step` from ``weight``, 2:4-masked by magnitude first where
        ``magnitude_mask``, then :func:`code_summary` of :meth:`export_codes`' codes of it, bit for
        bit.

        With a per-row step the work goes :data:`SUMMARY_BLOCK_WEIGHTS` weights of rows at a
        time, so no temporary is weight-sized. torch's float32 mean of 0/1 values is their
        float32 sum over the float32 size, both exact integers below 2^24 elements, so the
        density is the float32 quotient of the counts there; above it, or with one step for the
        whole tensor, the codes are computed whole."""

        def masked(rows: Tensor) -> Tensor:
            return rows * mask_2_4(rows) if magnitude_mask else rows

        n, k = weight.shape
        if self.granularity != "per_channel" or weight.numel() > 2**24:
            whole = masked(weight)
            self.init_step(whole)
            codes, _ = self.export_codes(whole)
            return code_summary(codes)
        block_rows = max(1, SUMMARY_BLOCK_WEIGHTS // k)
        nonzero, pattern_2_4 = 0, True
        for start in range(0, n, block_rows):
            rows = masked(weight[start:start + block_rows])
            step = self.step[start:start + block_rows]
            step.copy_(self.sawb_step(rows))
            codes, _ = self._codes(rows, step)
            nonzero += int((codes != 0).sum())
            pattern_2_4 = pattern_2_4 and is_2_4(codes)
        return float(np.float32(nonzero) / np.float32(n * k)), pattern_2_4


class ActQuantizer(nn.Module):
    """Activation fake-quantizer with learnable clips, calibrated by percentiles.

    ``pact2`` (default): clips ``lo <= 0 <= hi`` (two-sided PACT), unsigned codes
    ``0..2^b-1``, ``scale = (hi - lo) / (2^b - 1)``, integer zero point
    ``clamp(round(-lo / scale), 0, 2^b - 1)`` so 0.0 stays exact. ``symmetric``: one clip ``a``,
    codes ``-q..q``, ``scale = a / q``, zero point 0. Before calibration finishes the quantizer
    passes its input through; with ``observing`` set it records percentiles.

    With ``channels`` the quantizer smooths its input per channel (last dimension) before
    anything else: it observes, quantizes and returns ``x / smoothing`` (float32 division),
    the domain of its layer's weights ``w * smoothing`` (set by ``apply.calibrate``).
    ``smoothing`` is all ones, an exact no-op, until calibration sets it.
    """

    def __init__(self, bits: int, mode: ActMode = "pact2", channels: int | None = None) -> None:
        super().__init__()
        self.bits = bits
        self.mode: ActMode = mode
        self.smoothing: Tensor | None
        if channels is None:
            self.smoothing = None
        else:
            self.register_buffer("smoothing", torch.ones(channels))
            self.register_buffer("smoothing_set", torch.tensor(False))
        self.qmin, self.qmax = act_code_range(bits, mode)
        if mode == "pact2":
            self.lo = nn.Parameter(torch.tensor(-1.0))
            self.hi = nn.Parameter(torch.tensor(1.0))
        else:
            self.clip = nn.Parameter(torch.tensor(1.0))
        # The flag persists in the state dict; forward reads the Python mirror ``_active`` so that
        # torch.export sees no data-dependent branch.
        self.register_buffer("calibrated", torch.tensor(False))
        self._active = False
        self.observing = False
        self._observed: list[tuple[float, float]] = []
        self.percentiles = (0.1, 99.9)
        self._frozen: tuple[Tensor, Tensor] | None = None  # (scale, zero_point), frozen_quantizers

    @property
    def signed(self) -> bool:
        return self.mode == "symmetric"

    @property
    def is_calibrated(self) -> bool:
        return self._active

    @property
    def quantizing(self) -> bool:
        """Whether the forward quantizes (calibrated and not observing)."""
        return self._active and not self.observing

    @property
    def frozen(self) -> bool:
        """Whether the forward runs on :func:`frozen_quantizers` constants (tracing)."""
        return self._frozen is not None

    def current_qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero_point) the forward uses now (the frozen constants inside
        :func:`frozen_quantizers`)."""
        return self._frozen if self._frozen is not None else self.qparams()

    def qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero_point) as float32 scalars, exactly as the forward uses them."""
        tiny = torch.finfo(torch.float32).tiny
        if self.mode == "pact2":
            lo = torch.clamp(self.lo, max=0.0)
            hi = torch.clamp(self.hi, min=0.0)
            scale = torch.clamp((hi - lo) / float(self.qmax), min=tiny)
            zero_point = torch.clamp(round_ste(-lo / scale), 0.0, float(self.qmax))
            return scale, zero_point
        scale = torch.clamp(self.clip.abs() / float(self.qmax), min=tiny)
        return scale, torch.zeros((), dtype=scale.dtype)

    def frozen_qparams(self) -> tuple[Tensor, Tensor]:
        """:meth:`qparams` detached, as :func:`frozen_quantizers` holds them; on the meta device
        two empty float32 scalars (the same shapes, nothing to compute)."""
        reference = self.lo if self.mode == "pact2" else self.clip
        if reference.is_meta:
            return torch.empty_like(reference), torch.empty_like(reference)
        scale, zero_point = self.qparams()
        return scale.detach(), zero_point.detach()

    def smooth(self, x: Tensor) -> Tensor:
        """``x / smoothing`` per channel; ``x`` itself without smoothing."""
        return x if self.smoothing is None else x / self.smoothing

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            x = self.smooth(x)
            self._observe(x)
            return x
        if not self._active:
            return self.smooth(x)
        if self._frozen is not None:
            # Same values as fake_quantize (round_ste's forward is round, and adding the zero
            # point clears the sign of a -0.0 code in both), in one op instead of ~20.
            scale, zero_point = self._frozen
            return fake_quantize_op(x, scale, zero_point, float(self.qmin), float(self.qmax),
                                    self.smoothing)
        x = self.smooth(x)
        scale, zero_point = self.qparams()
        return fake_quantize(x, scale, zero_point, float(self.qmin), float(self.qmax))

    def _observe(self, x: Tensor) -> None:
        flat = x.detach().float().reshape(-1)
        # A fixed stride keeps large inputs deterministic (it dates from torch.quantile's 2^24
        # element limit and stays so that the clips do not move).
        stride = max(1, flat.numel() // (1 << 22))
        sample = flat[::stride]
        lo, hi = percentile_pair(sample, *self.percentiles)
        self._observed.append((float(lo), float(hi)))

    def start_calibration(self, percentiles: tuple[float, float]) -> None:
        self.percentiles = percentiles
        self._observed = []
        self.observing = True

    def finish_calibration(self) -> None:
        """Set the clips to the mean observed percentiles (a never-run quantizer keeps +-1)."""
        self.observing = False
        if self._observed:
            lo = sum(o[0] for o in self._observed) / len(self._observed)
            hi = sum(o[1] for o in self._observed) / len(self._observed)
            with torch.no_grad():
                if self.mode == "pact2":
                    # Keep 0 inside the range and a non-empty range for constant inputs.
                    span = max(hi - lo, 1e-6)
                    self.lo.fill_(min(lo, 0.0))
                    self.hi.fill_(max(hi, min(lo, 0.0) + span, 0.0))
                else:
                    self.clip.fill_(max(abs(lo), abs(hi), 1e-6))
        self._observed = []
        self.calibrated.fill_(True)
        self._active = True

    def bypass(self) -> None:
        """Pass floats through from now on, calibrated or not (diagnostics: the model without
        this quantizer); loading a state dict restores the calibrated behaviour."""
        self._active = False

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._active = bool(self.calibrated)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is 2:4-masked (optional), then fake-quantized, and whose input is
    fake-quantized: ``F.linear(Qa(x), Qw(w * mask), bias)`` with the bias in float.

    Inference (eval mode with gradients off, input quantizer calibrated) computes the integer
    reference's arithmetic instead (docs/integer_semantics.md §5): the exact integer GEMM of the
    codes, ``float32(acc) * (float32(s_a) * s_w) + bias``. The float matmul of dequantized values
    rounds differently, and a flipped code downstream compounds through deep 4-bit models. Training
    keeps ``F.linear`` (its straight-through gradients); so does tracing (``torch.export``, and
    :func:`frozen_quantizers`), whose graph must show the GEMM as one ``linear``
    (:func:`runs_integer_path`).

    ``accelsim_precision`` (read by the tracer) is computed from the real codes on access.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, *, weight_bits: int,
                 act_bits: int, grid: WeightGrid = "zero_preserving",
                 granularity: Granularity = "per_channel", scale_method: ScaleMethod = "sawb",
                 act_mode: ActMode = "pact2", sparse: bool = False,
                 learn_pruned: bool = False, smoothed: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.weight_quant = WeightQuantizer(out_features, weight_bits, grid, granularity,
                                            scale_method)
        # smoothed: the input quantizer divides by per-channel factors that calibration folds
        # into this layer's weight columns (recipe field smoothing_sites).
        self.act_quant = ActQuantizer(act_bits, act_mode,
                                      channels=in_features if smoothed else None)
        if sparse:
            self.register_buffer("weight_mask", torch.ones(out_features, in_features))
        else:
            self.weight_mask = None
        # SR-STE (pruning: sr_ste): pruned weights stay dense "shadows" that keep receiving
        # gradients, and the mask is re-chosen from them by |w_nk| * input_norm[k] (all ones for
        # magnitude scoring, the calibration's input-channel norms for activation weighting).
        self.learn_pruned = sparse and learn_pruned
        if self.learn_pruned:
            self.register_buffer("input_norm", torch.ones(in_features))
        self._frozen_weight: Tensor | None = None  # see frozen_quantizers
        self._released_precision: GemmPrecision | None = None  # see released_from_linear

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, mask: Tensor | None = None,
                    **kwargs: object) -> QuantLinear:
        """A copy of ``linear``; ``mask`` (with ``sparse=True``) is its initial 2:4 mask, set
        before the SAWB step init so the step is computed once, from the masked weights."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, **kwargs)
        with torch.no_grad():
            q.weight.copy_(linear.weight)
            if linear.bias is not None:
                q.bias.copy_(linear.bias)
            if mask is not None:
                if q.weight_mask is None:
                    raise ValueError("from_linear: a mask needs sparse=True")
                q.weight_mask.copy_(mask)
        q.to(linear.weight.device)
        q.weight_quant.init_step(q.masked_weight())
        return q

    def masked_weight(self) -> Tensor:
        """``w * mask``; under SR-STE in training with straight-through gradients, so pruned
        weights learn too (``w + (w * m - w)`` is exactly ``w * m`` for ``m`` in {0, 1})."""
        if self.weight_mask is None:
            return self.weight
        if self.learn_pruned and self.training and torch.is_grad_enabled():
            return self.weight + (self.weight * self.weight_mask - self.weight).detach()
        return self.weight * self.weight_mask

    def forward(self, x: Tensor) -> Tensor:
        w = self._frozen_weight
        if w is not None:
            return F.linear(self.act_quant(x), w, self.bias)
        if not (runs_integer_path(self) and self.act_quant.quantizing):
            return F.linear(self.act_quant(x), self.weight_quant(self.masked_weight()), self.bias)
        scale, _ = self.act_quant.current_qparams()
        codes, weight_scale = self.export_codes()
        out_scale = scale * weight_scale  # float32, as IntLinearModule.out_scale
        y = integer_matmul(integer_operand(self.act_quant(x), scale),
                           codes.to(torch.float64).T, out_scale)
        return y if self.bias is None else y + self.bias

    def export_codes(self) -> tuple[Tensor, Tensor]:
        """(codes [N, K], weight scale [N] or [1]) as the eval forward uses them."""
        return self.weight_quant.export_codes(self.masked_weight().detach())

    @property
    def accelsim_precision(self) -> GemmPrecision:
        if self._released_precision is not None:
            return self._released_precision
        codes, _ = self.export_codes()
        return self._precision(*code_summary(codes))

    def _precision(self, weight_density: float, codes_2_4: bool) -> GemmPrecision:
        """The precision a trace reads, from the density and 2:4 pattern of the weight codes."""
        return GemmPrecision(
            weight_bits=self.weight_quant.bits,
            act_bits=self.act_quant.bits,
            sparsity=SPARSE_24 if codes_2_4 else "dense",
            weight_density=weight_density,
        )

    @classmethod
    @torch.no_grad()
    def released_from_linear(cls, linear: nn.Linear, *, magnitude_mask: bool = False,
                             **kwargs: object) -> QuantLinear:
        """What ``from_linear(linear, mask=mask_2_4(linear.weight) if magnitude_mask else None,
        **kwargs)`` is for a trace: the layer on the meta device (shapes without memory; it
        cannot compute on data) holding the precision of the real codes. A compressed model
        built for tracing releases each layer as it is built, so a large model's compressed
        copy never exists whole; building it on the meta device skips the copy of the weight
        and mask that would only be freed, and the mask, step and codes are computed a block
        of rows at a time (:meth:`WeightQuantizer.init_step_and_summarize_codes`): a cold
        bert_large's ~10 weight-sized temporaries per layer made the compression of its 144
        layers take longer than building the model (benchmarks/README.md, bench_startup)."""
        with torch.device("meta"):
            q = cls(linear.in_features, linear.out_features, linear.bias is not None, **kwargs)
        if magnitude_mask and q.weight_mask is None:
            raise ValueError("released_from_linear: a mask needs sparse=True")
        # The step is the one real tensor the codes need: fill it as from_linear would.
        weight_quant = q.weight_quant.to_empty(device=linear.weight.device)
        q._released_precision = q._precision(
            *weight_quant.init_step_and_summarize_codes(linear.weight.detach(), magnitude_mask))
        weight_quant.to("meta")
        return q


@contextlib.contextmanager
def frozen_quantizers(model: nn.Module) -> Iterator[None]:
    """Inside the block, eval-mode quantizers of ``model`` run on precomputed constants.

    Each ``QuantLinear`` in eval mode uses its dequantized weight ``Qw(w * mask)`` computed once
    on entry, and each calibrated ``ActQuantizer`` in eval mode its ``(scale, zero_point)``: the
    forward gives the float path's values (``F.linear`` of dequantized operands, not the integer
    path of inference, see :class:`QuantLinear`) with only the ops that touch activations, an
    activation quantizer as the single :func:`fake_quantize_op`. For tracing: ``torch.export``
    records every op, and the ~30 fake-quant ops per quantized linear made a compressed ViT-B/16
    export ~10x slower than the plain one. Parameters must not change inside the block; the
    constants are dropped on exit. Training-mode modules are left as they are.

    On the meta device (a module moved there to be exported) the constants have no values to
    compute: they are empty tensors of their shapes, which is all the export of such a module
    records, without running the quantizer arithmetic through meta kernels (~0.5 s CPU for a
    compressed ViT-B/16).
    """
    layers = [m for m in model.modules() if isinstance(m, QuantLinear) and not m.training]
    acts = [m for m in model.modules()
            if isinstance(m, ActQuantizer) and not m.training and m.is_calibrated]
    try:
        with torch.no_grad():
            for layer in layers:
                layer._frozen_weight = (
                    torch.empty_like(layer.weight) if layer.weight.is_meta
                    else layer.weight_quant(layer.masked_weight()).detach())
            for act in acts:
                act._frozen = act.frozen_qparams()
        yield
    finally:
        for layer in layers:
            layer._frozen_weight = None
        for act in acts:
            act._frozen = None
