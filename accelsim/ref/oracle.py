"""An independent oracle of the datapath: the spec of docs/integer_semantics.md and of
:mod:`accelsim.ref.vector_ops` recomputed by another route, slowly, for tiny tensors.

Written apart from the fast reference: it imports neither :mod:`accelsim.ref.kernels` nor
:mod:`accelsim.ref.vector_ops` nor the reference's helpers in :mod:`accelsim.ref.codes`, so a
shared bug cannot hide. What it does differently, op by op:

* GEMMs (dense, 2:4, attention) are int64 numpy products of the zero-point-shifted codes
  (``np.matmul`` / ``np.einsum`` on int64, exact), the whole reduction first, then the
  accumulator width: saturate by ``np.clip``, wrap by masking the low bits (``&``) and
  sign-extending; the count is of exact sums outside the signed range.
* The 2:4 GEMM gathers, for every kept value, the activation column ``4 * group + index`` that
  its index selects (``np.take``), and multiplies; it never rebuilds a dense weight.
* Requantization and every fixed-point multiplier derive ``(M0, shift)`` from the exact rational
  value of the real multiplier (``fractions.Fraction``), and apply them in Python integers.
* Float formats: each value is a Python float (binary64); each rounding to fp32, fp16 or bf16 is
  :func:`round_binary`, a round-to-nearest-even written with exact rationals (not numpy's
  conversions); elementwise ops and reductions run one element at a time in the spec's order.
  An op of two format values done in binary64 and rounded once to the format equals the
  format's IEEE op (53 >= 2p + 2 for p <= 24, so the double rounding is innocuous).
* Integer vector ops run in Python integers element by element, ``math.isqrt`` for the square
  root; the compile-time constants follow the formulas the reference's docstrings state, and
  the LayerNorm shift is searched for instead of computed in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.formats import (
    GELU_TABLE_PHI_BITS,
    GELU_TABLE_RANGE,
    GELU_TABLE_X_FRAC_BITS,
    OVERFLOW_POLICIES,
    SPARSE_GROUP,
    SPARSE_KEPT,
    VECTOR_FORMATS,
    VectorFormat,
)


def _binary_format(fmt: VectorFormat) -> tuple[int, int, int]:
    """IEEE parameters of a float format: significand bits ``p`` (hidden bit included), the
    exponent of the smallest normal ``emin = 1 - emax`` and of the largest binade ``emax =
    2^(exponent_bits - 1) - 1``."""
    emax = 2 ** (fmt.exponent_bits - 1) - 1
    return fmt.significand_bits, 1 - emax, emax


# (significand bits p with the hidden bit, exponent of the smallest normal, of the largest binade)
BINARY_FORMATS: dict[str, tuple[int, int, int]] = {
    name: _binary_format(fmt) for name, fmt in VECTOR_FORMATS.items() if fmt.is_float}


# ---------------------------------------------------------------------------------------------
# Integer GEMMs and the accumulator width
# ---------------------------------------------------------------------------------------------


def clip(acc: np.ndarray, bits: int, overflow: str) -> tuple[np.ndarray, int]:
    """Exact int64 sums as a signed ``bits``-wide accumulator holds them, and how many are outside
    its range. ``saturate``: clamp; ``wrap``: the low ``bits`` bits, sign-extended."""
    if overflow not in OVERFLOW_POLICIES:
        raise AccelsimError(f"oracle: overflow {overflow!r}; allowed: "
                            f"{', '.join(OVERFLOW_POLICIES)}")
    exact = acc.astype(np.int64)
    if bits >= 64:
        return exact, 0
    half = 1 << (bits - 1)
    outside = int(np.count_nonzero((exact < -half) | (exact >= half)))
    if overflow == "saturate":
        return np.clip(exact, -half, half - 1), outside
    low_bits = exact & ((1 << bits) - 1)
    return np.where(low_bits >= half, low_bits - (1 << bits), low_bits), outside


def gemm(a_codes: np.ndarray, a_zp: int, w_codes: np.ndarray, bias: np.ndarray | None = None,
         bits: int = 64, overflow: str = "saturate") -> tuple[np.ndarray, int]:
    """``clip(bias[n] + sum_k (a[m, k] - a_zp) * w[n, k])`` with ``w`` stored ``[N, K]``."""
    acc = (a_codes.astype(np.int64) - a_zp) @ w_codes.astype(np.int64).T
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return clip(acc, bits, overflow)


def sparse_gemm(a_codes: np.ndarray, a_zp: int, values: np.ndarray, indices: np.ndarray,
                bias: np.ndarray | None = None, bits: int = 64,
                overflow: str = "saturate") -> tuple[np.ndarray, int]:
    """2:4 GEMM from kept values + 2-bit indices ``[N, K/2]``: slot ``s`` of a row multiplies
    activation column ``4 * (s // 2) + indices[n, s]``, gathered per (row, slot)."""
    slots = values.shape[1]
    group_starts = SPARSE_GROUP * (np.arange(slots) // SPARSE_KEPT)
    columns = group_starts[None, :] + indices.astype(np.int64)  # [N, K/2]
    shifted = a_codes.astype(np.int64) - a_zp  # [M, K]
    gathered = np.take(shifted, columns, axis=1)  # [M, N, K/2]
    acc = (gathered * values.astype(np.int64)[None, :, :]).sum(axis=2)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return clip(acc, bits, overflow)


def bmm(a_codes: np.ndarray, a_zp: int, b_codes: np.ndarray, b_zp: int, bits: int = 64,
        overflow: str = "saturate") -> tuple[np.ndarray, int]:
    """Attention matmul ``clip(sum_k (a[..., m, k] - a_zp) * (b[..., k, n] - b_zp))``."""
    acc = np.einsum("...mk,...kn->...mn", a_codes.astype(np.int64) - a_zp,
                    b_codes.astype(np.int64) - b_zp)
    return clip(acc, bits, overflow)


# ---------------------------------------------------------------------------------------------
# Fixed point
# ---------------------------------------------------------------------------------------------


def fixed_point(real: float) -> tuple[int, int]:
    """``(M0, shift)`` with ``2^30 <= M0 < 2^31`` and ``M0 / 2^shift`` the real rounded to 31
    significant bits (half to even), ``1 <= shift <= 62``; from the exact rational value."""
    exact = Fraction(real)
    if exact <= 0:
        raise AccelsimError(f"oracle: multiplier {real!r} must be > 0")
    shift = 0
    while exact * 2**shift < 2**30:
        shift += 1
    while exact * 2**shift >= 2**31:
        shift -= 1
    m0 = round(exact * 2**shift)
    if m0 == 2**31:
        m0, shift = 2**30, shift - 1
    if not 1 <= shift <= 62:
        raise AccelsimError(f"oracle: multiplier {real!r} is outside (2^-32, 2^30)")
    return m0, shift


def multiply(q: int, real: float) -> int:
    """``floor(q * M0 / 2^shift + 1/2)`` in Python integers, the sign of ``real`` on ``M0``."""
    if real == 0:
        return 0
    m0, shift = fixed_point(abs(real))
    return (q * (m0 if real > 0 else -m0) + (1 << (shift - 1))) >> shift


def multiply_by_real(q: np.ndarray, real: float | np.ndarray) -> np.ndarray:
    """``round(q * real)`` per element, fixed point as :func:`multiply`, ``real`` per tensor or
    per last-axis channel, in Python integers (any width)."""
    out = [multiply(v, r) for v, r in zip(_ints(q), _per_channel(real, np.shape(q)), strict=True)]
    return np.array(out, dtype=np.int64).reshape(np.shape(q))


def requantize(acc: np.ndarray, multiplier: np.ndarray | float, zero_point: int, qmin: int,
               qmax: int) -> np.ndarray:
    """``clamp(zero_point + round(acc * multiplier[n]), qmin, qmax)`` per element, fixed point
    as :func:`multiply`, for accumulators ``[M, N]``."""
    reals = np.broadcast_to(np.asarray(multiplier, dtype=np.float64), (acc.shape[1],))
    out = [[min(max(zero_point + multiply(int(v), float(reals[j])), qmin), qmax)
            for j, v in enumerate(row)] for row in acc.tolist()]
    return np.array(out, dtype=np.int64).reshape(acc.shape)


def to_codes(q: np.ndarray, scale: float | np.ndarray, out_scale: float, zero_point: int,
             qmin: int, qmax: int) -> np.ndarray:
    """``clamp(zero_point + round(q * scale / out_scale), qmin, qmax)`` per element, fixed point
    as :func:`multiply`, in Python integers (any width)."""
    out = [min(max(zero_point + multiply(v, element_scale / out_scale), qmin), qmax)
           for v, element_scale in zip(_ints(q), _per_channel(scale, np.shape(q)), strict=True)]
    return np.array(out, dtype=np.int64).reshape(np.shape(q))


# ---------------------------------------------------------------------------------------------
# Float formats, one Python float at a time
# ---------------------------------------------------------------------------------------------


def round_binary(value: float, fmt: str) -> float:
    """``value`` rounded to nearest-even in the binary format ``fmt``: ``p`` significant bits,
    gradual underflow below ``2^emin``, +-inf from ``2^(emax + 1)`` on; NaN and +-inf pass."""
    p, emin, emax = BINARY_FORMATS[fmt]
    if value == 0 or not math.isfinite(value):
        return value
    _, exponent = math.frexp(abs(value))  # |value| = m 2^exponent, m in [0.5, 1)
    quantum = Fraction(2) ** (max(exponent - 1, emin) - (p - 1))
    rounded = round(Fraction(abs(value)) / quantum) * quantum  # round(): half to even
    if rounded >= Fraction(2) ** (emax + 1):
        return math.copysign(math.inf, value)
    return math.copysign(float(rounded), value)


def _values(x: np.ndarray | float) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def _rows(x: np.ndarray) -> tuple[list[list[float]], tuple[int, ...]]:
    values = _values(x)
    return values.reshape(-1, values.shape[-1]).tolist(), values.shape


def _array(rows: list[list[float]], shape: tuple[int, ...]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(shape).astype(np.float32)


def round_to_format(x: np.ndarray | float, fmt: str) -> np.ndarray:
    """Every element rounded to ``fmt``, as float32."""
    values = _values(x)
    flat = [round_binary(v, fmt) for v in values.reshape(-1).tolist()]
    return np.array(flat, dtype=np.float64).reshape(values.shape).astype(np.float32)


def _elementwise(a: np.ndarray, b: np.ndarray, fmt: str,
                 op: Callable[[float, float], float]) -> np.ndarray:
    av, bv = np.broadcast_arrays(_values(a), _values(b))
    out = [round_binary(round_binary(op(round_binary(x, fmt), round_binary(y, fmt)), "fp32"),
                        fmt)
           for x, y in zip(av.reshape(-1).tolist(), bv.reshape(-1).tolist(), strict=True)]
    return np.array(out, dtype=np.float64).reshape(av.shape).astype(np.float32)


def add(a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
    """Elementwise ``a + b`` in ``fmt``."""
    return _elementwise(a, b, fmt, lambda x, y: x + y)


def mul(a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
    """Elementwise ``a * b`` in ``fmt``."""
    return _elementwise(a, b, fmt, lambda x, y: x * y)


def _f(value: float) -> float:
    return round_binary(value, "fp32")


def _sum(values: list[float]) -> float:
    total = 0.0
    for v in values:
        total = _f(total + v)
    return total


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float,
               fmt: str) -> np.ndarray:
    """LayerNorm in ``fmt``, every step of vector_ops.layer_norm's spec one Python float op."""
    rows, shape = _rows(x)
    g, b = ([round_binary(v, fmt) for v in np.broadcast_to(_values(p), shape[-1:]).tolist()]
            for p in (gamma, beta))
    eps32 = _f(float(eps))
    out = []
    for row in rows:
        xs = [round_binary(v, fmt) for v in row]
        n = len(xs)
        mean = _f(_sum(xs) / n)
        d = [round_binary(_f(v - mean), fmt) for v in xs]
        var = _f(_sum([_f(v * v) for v in d]) / n)
        rstd = _f(1.0 / _f(math.sqrt(_f(var + eps32))))
        out.append([
            round_binary(_f(round_binary(_f(round_binary(_f(di * rstd), fmt) * gi), fmt) + bi),
                         fmt)
            for di, gi, bi in zip(d, g, b, strict=True)
        ])
    return _array(out, shape)


def softmax(x: np.ndarray, fmt: str) -> np.ndarray:
    """Softmax in ``fmt`` (max-subtracted; exp in binary64), per vector_ops.softmax's spec."""
    rows, shape = _rows(x)
    out = []
    for row in rows:
        xs = [round_binary(v, fmt) for v in row]
        top = max(xs)
        e = [round_binary(_f(math.exp(round_binary(_f(v - top), fmt))), fmt) for v in xs]
        total = _sum(e)
        out.append([round_binary(_f(v / total), fmt) for v in e])
    return _array(out, shape)


def gelu(x: np.ndarray, fmt: str) -> np.ndarray:
    """``R(f(0.5 t (1 + erf(t / sqrt 2))))`` per element, ``t`` the format value."""
    values = _values(x)
    out = []
    for v in values.reshape(-1).tolist():
        t = round_binary(v, fmt)
        out.append(round_binary(_f(0.5 * t * (1.0 + math.erf(t / math.sqrt(2.0)))), fmt))
    return np.array(out, dtype=np.float64).reshape(values.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Integer (I-BERT) vector ops, one Python int at a time
# ---------------------------------------------------------------------------------------------

_ERF = (-0.2888, -1.769, 1.0)
_EXP = (0.3585, 1.353, 0.344)
_ERF_BITS = 16
_EXP_MAX_HALVINGS = 30


def _ints(q: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(q).reshape(-1).tolist()]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _per_channel(scale: float | np.ndarray, shape: tuple[int, ...]) -> list[float]:
    """The scale of every element of a tensor of ``shape`` (per tensor or per last-axis
    channel), flattened in C order."""
    return np.broadcast_to(np.asarray(scale, dtype=np.float64), shape).reshape(-1).tolist()


def _gelu_constants(scale: float) -> tuple[int, int, int, int, float]:
    a, b, c = _ERF
    s = scale / math.sqrt(2.0)
    b_int = math.floor(b / s)
    c_int = math.floor((c / a) / (s * s))
    shift = max(0, abs(c_int).bit_length() - _ERF_BITS)
    s_erf = a * (s * s) * 2**shift
    return b_int, c_int, shift, math.floor(1.0 / s_erf), -scale * s_erf / 2.0


def int_gelu(q: np.ndarray, scale: float | np.ndarray) -> tuple[np.ndarray, float | np.ndarray]:
    """I-BERT's integer GELU per element (the constants of vector_ops.int_gelu, per channel
    when ``scale`` is)."""
    out = []
    for v, element_scale in zip(_ints(q), _per_channel(scale, np.shape(q)), strict=True):
        b_int, c_int, shift, one, _ = _gelu_constants(element_scale)
        erf = _sign(v) * ((min(abs(v), -b_int) + b_int) ** 2 + c_int) >> shift
        out.append(-(v * (erf + one)))
    scales = [_gelu_constants(v)[4] for v in np.asarray(scale, dtype=np.float64).reshape(-1)]
    scale_out = scales[0] if np.ndim(scale) == 0 else np.array(scales)
    return np.array(out, dtype=np.int64).reshape(np.shape(q)), scale_out


def int_gelu_table(q: np.ndarray, scale: float | np.ndarray,
                   segments: int) -> tuple[np.ndarray, float | np.ndarray]:
    """The table GELU per element in Python integers: the segment and the position in it by
    ``divmod`` of ``|x|`` by the segment width in fixed point, the interpolation rounded half
    up by ``divmod`` too; the table from ``math.erf`` as the spec states it."""
    one = 2**GELU_TABLE_PHI_BITS
    width = (GELU_TABLE_RANGE << GELU_TABLE_X_FRAC_BITS) // segments  # a power of two
    phi_at = [math.floor(0.5 * (1.0 + math.erf(i * GELU_TABLE_RANGE / segments / math.sqrt(2.0)))
                         * one + 0.5) for i in range(segments + 1)]
    out = []
    for v, element_scale in zip(_ints(q), _per_channel(scale, np.shape(q)), strict=True):
        x = multiply(v, element_scale * 2**GELU_TABLE_X_FRAC_BITS)
        segment, offset = divmod(abs(x), width)
        if segment >= segments:
            phi = one
        else:
            step, rest = divmod((phi_at[segment + 1] - phi_at[segment]) * offset, width)
            phi = phi_at[segment] + step + (2 * rest >= width)
        if x < 0:
            phi = one - phi
        product, rest = divmod(v * phi, one)
        out.append(product + (2 * rest >= one))
    return np.array(out, dtype=np.int64).reshape(np.shape(q)), scale


def _int_exp(v: int, ln2_int: int, b_int: int, c_int: int) -> int:
    v = max(v, -_EXP_MAX_HALVINGS * ln2_int)
    z = -v // ln2_int
    p = v + z * ln2_int
    return ((p + b_int) ** 2 + c_int) >> z


def int_softmax(q: np.ndarray, scale: float, out_bits: int,
                keep: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """I-BERT's integer softmax per row; ``keep`` as in vector_ops.int_softmax."""
    a, b, c = _EXP
    ln2_int, b_int, c_int = (math.floor(math.log(2.0) / scale), math.floor(b / scale),
                             math.floor((c / a) / scale**2))
    shape = np.shape(q)
    kept = np.broadcast_to(True if keep is None else keep, shape).reshape(-1, shape[-1]).tolist()
    rows = np.asarray(q, dtype=np.int64).reshape(-1, shape[-1]).tolist()
    out = []
    for row, mask in zip(rows, kept, strict=True):
        members = [v for v, k in zip(row, mask, strict=True) if k]
        top = max(members) if members else 0
        e = [_int_exp(v - top, ln2_int, b_int, c_int) if k else 0
             for v, k in zip(row, mask, strict=True)]
        recip = 2**62 // max(sum(e), 1)
        out.append([min((v * recip) >> (62 - out_bits), 2**out_bits - 1) for v in e])
    return np.array(out, dtype=np.int64).reshape(shape), 2.0**-out_bits


def _norm_constants(g: list[float], bt: list[float], n: int, scale: float, out_bits: int,
                    eps: float, out_scale: float | None
                    ) -> tuple[list[int], list[int], int, int, int, float]:
    """LayerNorm's compile-time integers (vector_ops.int_layer_norm's docstring): per-channel
    multipliers and betas, the shift, ``eps_int``, ``qmax`` and the output scale."""
    qmax = 2 ** (out_bits - 1) - 1
    s_norm = math.sqrt(n) / 2**30
    if out_scale is None:
        bound = max(abs(v) for v in g) * math.sqrt(n) + max(abs(v) for v in bt)
        out_scale = max(bound, float(np.finfo(np.float32).tiny)) / qmax
    ratios = [v * s_norm / out_scale for v in g]
    shift = 62  # the largest shift whose multipliers all fit 31 bits
    while any(abs(math.floor(r * 2**shift + 0.5)) >= 2**31 for r in ratios):
        shift -= 1
    multipliers = [math.floor(r * 2**shift + 0.5) for r in ratios]
    beta_int = [math.floor(v / out_scale + 0.5) for v in bt]
    return multipliers, beta_int, shift, math.floor(eps * n / scale**2), qmax, out_scale


def _normalized(row: list[int], eps_int: int) -> list[int]:
    """A row's ``(q - mean) * (2^61 // std) >> 31``."""
    n = len(row)
    mean = (2 * sum(row) + n) // (2 * n)
    y = [v - mean for v in row]
    recip = 2**61 // max(math.isqrt(sum(v * v for v in y) + eps_int), 1)
    return [(v * recip) >> 31 for v in y]


def _affine(norm: int, multiplier: int, beta_int: int, shift: int, qmax: int) -> int:
    return min(max(((norm * multiplier + (1 << (shift - 1))) >> shift) + beta_int, -qmax - 1), qmax)


def int_layer_norm(q: np.ndarray, scale: float, gamma: np.ndarray, beta: np.ndarray,
                   out_bits: int, eps: float = 0.0,
                   out_scale: float | None = None) -> tuple[np.ndarray, float]:
    """I-BERT-style integer LayerNorm per row (vector_ops.int_layer_norm's spec)."""
    shape = np.shape(q)
    n = shape[-1]
    g = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (n,)).tolist()
    bt = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n,)).tolist()
    multipliers, beta_int, shift, eps_int, qmax, out_scale = _norm_constants(
        g, bt, n, scale, out_bits, eps, out_scale)
    out = [[_affine(t, m, bi, shift, qmax)
            for t, m, bi in zip(_normalized(row, eps_int), multipliers, beta_int, strict=True)]
           for row in np.asarray(q, dtype=np.int64).reshape(-1, n).tolist()]
    return np.array(out, dtype=np.int64).reshape(shape), out_scale


def int_group_norm(q: np.ndarray, scale: float, groups: int, gamma: np.ndarray,
                   beta: np.ndarray, out_bits: int, eps: float = 0.0,
                   out_scale: float | None = None) -> tuple[np.ndarray, float]:
    """Integer GroupNorm (vector_ops.int_group_norm's spec): per example and group, the
    LayerNorm kernel over the group's channels and positions, each element with its channel's
    multiplier, one shift and output scale for all channels."""
    shape = np.shape(q)
    batch, channels = shape[0], shape[1]
    positions = int(np.prod(shape[2:], dtype=np.int64))
    per_group = channels // groups
    multipliers, beta_int, shift, eps_int, qmax, out_scale = _norm_constants(
        np.asarray(gamma, dtype=np.float64).tolist(), np.asarray(beta, dtype=np.float64).tolist(),
        per_group * positions, scale, out_bits, eps, out_scale)
    values = np.asarray(q, dtype=np.int64).reshape(batch, channels, positions).tolist()
    out = []
    for example in values:
        for group in range(groups):
            members = range(group * per_group, (group + 1) * per_group)
            norm = _normalized([v for c in members for v in example[c]], eps_int)
            out.extend(_affine(t, multipliers[c], beta_int[c], shift, qmax)
                       for c, t in zip((c for c in members for _ in range(positions)), norm,
                                       strict=True))
    return np.array(out, dtype=np.int64).reshape(shape), out_scale


def int_add(qa: np.ndarray, scale_a: float | np.ndarray, qb: np.ndarray,
            scale_b: float | np.ndarray, out_bits: int,
            out_scale: float | None = None) -> tuple[np.ndarray, float]:
    """``saturate(round(qa * scale_a / s) + round(qb * scale_b / s), out_bits)`` per element,
    scales per tensor or per last-axis channel, ``s`` the largest by default."""
    av, bv = np.broadcast_arrays(np.asarray(qa, dtype=np.int64), np.asarray(qb, dtype=np.int64))
    sa, sb = _per_channel(scale_a, av.shape), _per_channel(scale_b, av.shape)
    s_out = max(max(sa), max(sb)) if out_scale is None else out_scale
    half = 2 ** (out_bits - 1)
    out = [min(max(multiply(x, fa / s_out) + multiply(y, fb / s_out), -half), half - 1)
           for x, y, fa, fb in zip(_ints(av), _ints(bv), sa, sb, strict=True)]
    return np.array(out, dtype=np.int64).reshape(av.shape), s_out


# ---------------------------------------------------------------------------------------------
# Per-op check: what verify calls for each op the executor recorded
# ---------------------------------------------------------------------------------------------


def _last_axis_rows(x: np.ndarray, rows: int) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])[:rows]


def _leading_rows(x: np.ndarray, rows: int) -> np.ndarray:
    return x[:rows]


def _matrix_rows(x: np.ndarray, rows: int) -> np.ndarray:
    return x[..., :rows, :]


# kind -> (oracle function, the arguments that carry rows, how rows are taken). The arguments are
# the fast function's keyword arguments (vector_ops) or, for the GEMMs, the oracle's (codes, zero
# points, bias, accumulator bits and overflow policy, the datapath's clip included).
OPS: dict[str, tuple[Callable[..., Any], tuple[str, ...], Callable[[np.ndarray, int], np.ndarray]]]
OPS = {
    "gemm": (gemm, ("a_codes",), _leading_rows),
    "sparse_gemm": (sparse_gemm, ("a_codes",), _leading_rows),
    "bmm": (bmm, ("a_codes",), _matrix_rows),
    "requantize": (requantize, ("acc",), _leading_rows),
    "to_codes": (to_codes, ("q",), _last_axis_rows),
    "multiply_by_real": (multiply_by_real, ("q",), _last_axis_rows),
    "round_to_format": (round_to_format, ("x",), _last_axis_rows),
    "add": (add, ("a", "b"), _last_axis_rows),
    "mul": (mul, ("a", "b"), _last_axis_rows),
    "layer_norm": (layer_norm, ("x",), _last_axis_rows),
    "softmax": (softmax, ("x",), _last_axis_rows),
    "gelu": (gelu, ("x",), _last_axis_rows),
    "int_gelu": (int_gelu, ("q",), _last_axis_rows),
    "int_gelu_table": (int_gelu_table, ("q",), _last_axis_rows),
    "int_softmax": (int_softmax, ("q", "keep"), _last_axis_rows),
    "int_layer_norm": (int_layer_norm, ("q",), _last_axis_rows),
    "int_group_norm": (int_group_norm, ("q",), _leading_rows),
    "int_add": (int_add, ("qa", "qb"), _last_axis_rows),
}


_GEMMS = ("gemm", "sparse_gemm", "bmm")


@dataclass(frozen=True)
class OpCheck:
    """One recorded op recomputed by the oracle: ``elements`` compared (output values, plus
    one for a returned scale or out-of-range count), ``mismatches`` that differ bit for bit."""

    kind: str
    elements: int
    mismatches: int


def _differ(ours: Any, theirs: Any) -> tuple[int, int]:
    if not isinstance(ours, np.ndarray):  # a scale or a count
        return 1, int(ours != theirs)
    theirs = np.asarray(theirs)
    if ours.shape != theirs.shape:
        return ours.size, ours.size
    if ours.dtype.kind == "f":  # bit patterns at the reference's precision (float32 values,
        a = np.ascontiguousarray(ours)  # float64 per-channel scales)
        b = np.ascontiguousarray(theirs, dtype=a.dtype)
        pattern = np.dtype(f"u{a.dtype.itemsize}")
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        bits_differ = (a.view(pattern) != b.view(pattern)) & ~(nan_a & nan_b)
        return a.size, int(np.count_nonzero(bits_differ | (nan_a != nan_b)))
    return ours.size, int(np.count_nonzero(ours.astype(np.int64) != theirs.astype(np.int64)))


def check_op(kind: str, output: Any, inputs: Mapping[str, Any],
             max_rows: int | None = None) -> OpCheck:
    """Recompute the op ``kind`` (a key of :data:`OPS`) from ``inputs`` and compare with the
    reference's ``output`` (an array, or the tuple the function returns: codes and scale, or
    accumulators and the out-of-range count).

    ``max_rows`` limits the check to the first rows (GEMM rows, or rows along the last axis of a
    vector op, whose rows are independent), so that the slow oracle can sample a large tensor; a
    GEMM's out-of-range count is of all rows, and the oracle recounts it on all of them
    (:func:`count_outside`).
    """
    if kind not in OPS:
        raise AccelsimError(f"oracle: op kind {kind!r} is not one of {', '.join(OPS)}")
    function, row_args, take = OPS[kind]
    args = dict(inputs)
    outputs = output if isinstance(output, tuple) else (output,)
    whole_count = None
    if max_rows is not None:
        present = [name for name in row_args if args.get(name) is not None]
        if kind in ("add", "mul", "int_add", "int_softmax") and present:
            # Broadcast operands to the output's shape first, so that rows line up.
            shape = np.shape(outputs[0])
            for name in present:
                args[name] = np.broadcast_to(args[name], shape)
        for name in present:
            args[name] = take(np.asarray(args[name]), max_rows)
        outputs = tuple(take(o, max_rows) if isinstance(o, np.ndarray) else o for o in outputs)
        if kind in _GEMMS and len(outputs) > 1:  # the count is compared against all rows'
            whole_count, outputs = outputs[1], outputs[:1]
    expected = function(**args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if len(outputs) > len(expected):
        raise AccelsimError(f"oracle: op {kind} returns {len(expected)} values, the recorded "
                            f"output has {len(outputs)}")
    elements = mismatches = 0
    for ours, theirs in zip(outputs, expected[: len(outputs)], strict=True):
        counted, differing = _differ(ours, theirs)
        elements += counted
        mismatches += differing
    if whole_count is not None:
        counted, differing = _differ(whole_count, count_outside(kind, inputs))
        elements += counted
        mismatches += differing
    return OpCheck(kind, elements, mismatches)


# Rows of a GEMM the oracle recomputes at once when counting (bounds the 2:4 gather's memory).
COUNT_BLOCK_ROWS = 64


def count_outside(kind: str, inputs: Mapping[str, Any]) -> int:
    """How many exact sums of the recorded GEMM ``kind`` (``gemm``, ``sparse_gemm``, ``bmm``)
    fall outside its accumulator, over all rows, recomputed block by block of rows."""
    if kind not in _GEMMS:
        raise AccelsimError(f"oracle: count_outside of op kind {kind!r}; allowed: "
                            f"{', '.join(_GEMMS)}")
    function, _, _ = OPS[kind]
    a_codes = np.asarray(inputs["a_codes"])
    axis = a_codes.ndim - 2 if kind == "bmm" else 0
    total = 0
    for start in range(0, a_codes.shape[axis], COUNT_BLOCK_ROWS):
        block = np.take(a_codes, np.arange(start, min(start + COUNT_BLOCK_ROWS,
                                                      a_codes.shape[axis])), axis=axis)
        total += function(**{**inputs, "a_codes": block})[1]
    return total
