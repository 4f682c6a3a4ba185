"""The vector unit's arithmetic, bit for bit: LayerNorm, softmax, GELU, residual add and scale in
the float formats ``fp32 | fp16 | bf16`` and integer-only (I-BERT style) in the ``int`` format.

Every function is pure and deterministic (same inputs, same bits). The docstrings are the spec;
:mod:`accelsim.ref.oracle` recomputes every op by a different route (Python floats and Python
ints, element by element) and the tests require bit-for-bit agreement.

Float formats (arrays are float32 in memory; an fp16/bf16 value is a float32 that the format
represents exactly)
---------------------------------------------------------------------------------------------
* ``round_to_format(x, fmt)`` is the one rounding: IEEE round-to-nearest-even to the format's
  precision, gradual underflow (subnormals kept, no flush to zero), overflow to +-inf.
* Operands entering an op are first rounded to the format (the identity on format values; it is
  the conversion of a GEMM's float32 output into the vector unit's format).
* **Elementwise results** (every ``+ - * /`` between vectors or a vector and a scalar) are
  computed as one float32 IEEE operation and rounded to the format. For fp16 (p = 11) and bf16
  (p = 8) this equals the correctly rounded result of the format's own operation: float32 has
  24 >= 2p + 2 significand bits, so rounding the float32 result of ``+ - * / sqrt`` of two format
  values a second time is innocuous (Figueroa, "When is double rounding innocuous?", SIGNUM
  1995). A hardware unit that computes in the format with RNE matches these bits exactly.
* **Reductions** (sums of LayerNorm and softmax) accumulate in a float32 register, sequentially
  along the last axis, element 0 first, each partial sum rounded to float32 (a streaming
  accumulator, not a tree: float addition is not associative, so the order is part of the spec).
  Squares of format values are exact in float32 for fp16/bf16 (2p <= 24) and feed it unrounded.
  Reduction results (mean, variance, reciprocal std, softmax max and sum) stay float32.
* **Transcendentals** (``exp``, ``erf``) are evaluated in float64 from the operand by the C
  library (the functions Python's ``math.exp`` and ``math.erf`` call, here from numba),
  rounded to float32, then to the format. An RTL function evaluator will differ from these in
  the last place of the format near rounding boundaries; compare such units in ulps of the
  format.

Integer format (``int``), after I-BERT (Kim et al., ICML 2021, "I-BERT: Integer-only BERT
Quantization": its polynomial GELU and exp, integer square root and fixed-point softmax)
---------------------------------------------------------------------------------------------
A tensor is integers ``q`` (int64 arrays) with a real scale ``S`` (a Python float, or where a
function says so one float per channel of the last axis): the real value is ``q * S``. Inside a
kernel only int64 additions, multiplications, comparisons, floor divisions and arithmetic shifts
touch the data; **no float operation is applied to data**. Floats appear only in the per-layer
constants derived from the scales (``floor(b / S)``, fixed-point multipliers, output scales),
which a compiler computes once in float64 from the float32 scales and the hardware stores as
integers; each such constant is named in the function's docstring. Integer division and ``>>``
floor (toward -inf), as an arithmetic shift.
Rounding to nearest, where stated, is ``floor(x + 1/2)`` (ties toward +inf), the convention of
``accelsim.ref.kernels.requantize``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numba
import numpy as np

from accelsim.errors import AccelsimError
from accelsim.formats import (
    GELU_TABLE_PHI_BITS,
    GELU_TABLE_RANGE,
    GELU_TABLE_SEGMENTS,
    GELU_TABLE_X_FRAC_BITS,
    VECTOR_FORMATS,
    twos_complement_range,
)
from accelsim.ref.codes import code_dtype, quantize_multiplier

FLOAT_FORMATS: tuple[str, ...] = tuple(n for n, f in VECTOR_FORMATS.items() if f.is_float)

# I-BERT's second-order polynomials, L(x) = A (x + B)^2 + C.
# erf(x) ~ sign(x) [A (min(|x|, -B) + B)^2 + C] on all of R.
ERF_A, ERF_B, ERF_C = -0.2888, -1.769, 1.0
# exp(p) ~ A (p + B)^2 + C on p in (-ln 2, 0].
EXP_A, EXP_B, EXP_C = 0.3585, 1.353, 0.344
# Bits the integer erf keeps: I-BERT divides its erf integer by a fixed 2^14 so that int32
# products do not overflow; here the shift is derived from the scale so that the erf integer
# keeps this many bits whatever the input scale (at an accumulator scale of 3e-3, |c_int| is
# about 2^19.6 and a fixed 2^14 would leave 5.6 bits), and int64 products fit below 2^46.
ERF_BITS = 16
# exp inputs below -EXP_MAX_HALVINGS * ln 2 are clamped there (I-BERT's ``const = 30``): the
# result there is below 2^-30 of the row maximum's.
EXP_MAX_HALVINGS = 30
# Fixed-point reciprocals: softmax divides 2^SOFTMAX_RECIP_BITS by the row sum, LayerNorm
# 2^LN_RECIP_BITS by the std (I-BERT: 2^32 and 2^31 in int32; int64 keeps more bits).
SOFTMAX_RECIP_BITS = 62
LN_RECIP_BITS = 61
LN_NORM_SHIFT = 31  # normalized values (y * recip) >> 31 carry scale sqrt(n) / 2^30
INT_MAX_BITS = 32  # inputs of int_layer_norm are at most int32


# ---------------------------------------------------------------------------------------------
# Float formats
# ---------------------------------------------------------------------------------------------


_FORMAT_CODES = {"fp32": 0, "fp16": 1, "bf16": 2}
_FP16_MIN_NORMAL = np.float32(2.0**-14)
_FP16_MAX = np.float32(65504.0)


@numba.njit(cache=True, nogil=True)
def _round_inplace(buf, code):  # pragma: no cover - compiled
    """Round a contiguous 1-D float32 buffer to the format ``code`` in place (see
    :func:`round_to_format`)."""
    if code == 0:
        return
    bits = buf.view(np.uint32)
    for i in range(buf.size):
        v = buf[i]
        if v != v:  # NaN stays NaN
            continue
        b = np.int64(bits[i])
        if code == 2:
            # RNE on the top 16 bits: add 0x7FFF plus the lowest kept bit, then truncate. A carry
            # into the exponent is the correct rounding up (the next binade, or inf).
            bits[i] = np.uint32((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000)
        elif abs(v) < _FP16_MIN_NORMAL:
            # fp16 subnormals are multiples of 2^-24: scale, round half even, scale back (exact).
            buf[i] = np.float32(np.rint(v * np.float32(16777216.0))) * np.float32(2.0**-24)
        else:
            # fp16 normals keep 11 significant bits: RNE on the 13 dropped bits, as for bf16.
            bits[i] = np.uint32((b + 0xFFF + ((b >> 13) & 1)) & 0xFFFFE000)
            if abs(buf[i]) > _FP16_MAX:
                buf[i] = np.float32(np.inf) if v > 0 else np.float32(-np.inf)


@numba.njit(cache=True, nogil=True)
def _row_sum(buf):  # pragma: no cover - compiled
    """Sequential float32 sum, element 0 first, every partial sum rounded to float32."""
    total = np.float32(0.0)
    for i in range(buf.size):
        total = np.float32(total + buf[i])
    return total


def check_format(fmt: str) -> int:
    """The format's kernel code; :class:`AccelsimError` unless ``fmt`` is a float format."""
    if fmt not in FLOAT_FORMATS:
        raise AccelsimError(
            f"vector format {fmt!r} is not a float format; allowed: {', '.join(FLOAT_FORMATS)}"
        )
    return _FORMAT_CODES[fmt]


def round_to_format(x: np.ndarray | float, fmt: str) -> np.ndarray:
    """Round float32 values to the format, returned as float32 (a new array).

    * ``fp32``: the identity (after conversion to float32).
    * ``fp16``: IEEE binary16, round-to-nearest-even: 11 significant bits down to 2^-14, fixed
      quantum 2^-24 below (subnormals), values at or above 65520 to +-inf.
    * ``bf16``: the top 16 bits of the float32 pattern, round-to-nearest-even on the 16 bits
      dropped (ties to the even kept pattern); overflow to inf as IEEE; subnormals kept.

    A NaN stays a NaN (its payload is not specified).
    """
    code = check_format(fmt)
    # A C-ordered copy (callers keep their input), so that the flat view rounds it in place.
    x32 = np.array(x, dtype=np.float32, order="C")
    _round_inplace(x32.reshape(-1), code)
    return x32


def _ieee(op: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run ``op`` without numpy's floating-point warnings: IEEE results (inf, NaN, underflow to
    0) are the specified ones."""

    @functools.wraps(op)
    def quiet(*args: object, **kwargs: object) -> np.ndarray:
        with np.errstate(all="ignore"):
            return op(*args, **kwargs)

    return quiet


@_ieee
def add(a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
    """``round(round(a) + round(b))``: one float32 addition of format values (broadcasting),
    rounded to the format; the correctly rounded sum in the format (module docstring)."""
    return round_to_format(round_to_format(a, fmt) + round_to_format(b, fmt), fmt)


@_ieee
def mul(a: np.ndarray, b: np.ndarray, fmt: str) -> np.ndarray:
    """``round(round(a) * round(b))``: one float32 multiplication of format values
    (broadcasting; a scalar ``b`` is the vector unit's ``scale``), rounded to the format."""
    return round_to_format(round_to_format(a, fmt) * round_to_format(b, fmt), fmt)


def _rows(x: np.ndarray) -> np.ndarray:
    """A float32 copy of ``x`` as contiguous rows ``[-1, n]`` (the kernels work in place)."""
    x32 = np.array(x, dtype=np.float32, order="C")
    return x32.reshape(-1, x32.shape[-1]) if x32.ndim else x32.reshape(1, 1)


@numba.njit(cache=True, nogil=True)
def _layer_norm_kernel(rows, gamma, beta, eps, code):  # pragma: no cover - compiled
    n = rows.shape[1]
    count = np.float32(n)
    d = np.empty(n, dtype=np.float32)
    squares = np.empty(n, dtype=np.float32)
    for r in range(rows.shape[0]):
        row = rows[r]
        _round_inplace(row, code)
        mean = np.float32(_row_sum(row) / count)
        for i in range(n):
            d[i] = row[i] - mean
        _round_inplace(d, code)
        for i in range(n):
            squares[i] = d[i] * d[i]
        var = np.float32(_row_sum(squares) / count)
        rstd = np.float32(np.float32(1.0) / np.sqrt(np.float32(var + eps)))
        for i in range(n):
            row[i] = d[i] * rstd
        _round_inplace(row, code)
        for i in range(n):
            row[i] = row[i] * gamma[i]
        _round_inplace(row, code)
        for i in range(n):
            row[i] = row[i] + beta[i]
        _round_inplace(row, code)
    return rows


@_ieee
def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float,
               fmt: str) -> np.ndarray:
    """LayerNorm over the last axis (``n`` elements), biased variance, in the format.

    With ``R`` = round to the format, ``f`` = round to float32, all ops IEEE float32 RNE::

        x, gamma, beta = R(x), R(gamma), R(beta)
        mean  = f(sum(x) / n)                  # sum: sequential float32 accumulator
        d_i   = R(x_i - mean)
        var   = f(sum(d_i * d_i) / n)          # products d_i * d_i in float32
        rstd  = f(1 / f(sqrt(f(var + f(eps)))))
        y_i   = R(R(R(d_i * rstd) * gamma_i) + beta_i)

    ``mean``, ``var`` and ``rstd`` are float32 registers (reduction results); every elementwise
    result is a format value.
    """
    code = check_format(fmt)
    rows = _rows(x)
    n = rows.shape[1]
    gamma_r, beta_r = (round_to_format(np.broadcast_to(np.asarray(v, np.float32), (n,)), fmt)
                       for v in (gamma, beta))
    out = _layer_norm_kernel(rows, gamma_r, beta_r, np.float32(eps), code)
    return out.reshape(np.shape(x))


@numba.njit(cache=True, nogil=True)
def _softmax_kernel(rows, code):  # pragma: no cover - compiled
    for r in range(rows.shape[0]):
        row = rows[r]
        _round_inplace(row, code)
        top = row[0]
        for i in range(1, row.size):
            v = row[i]
            if v > top or v != v:  # the max; a NaN anywhere makes it NaN
                top = v
            if top != top:
                break
        for i in range(row.size):
            row[i] = row[i] - top
        _round_inplace(row, code)
        for i in range(row.size):
            row[i] = np.float32(math.exp(np.float64(row[i])))
        _round_inplace(row, code)
        total = _row_sum(row)
        for i in range(row.size):
            row[i] = row[i] / total
        _round_inplace(row, code)
    return rows


@_ieee
def softmax(x: np.ndarray, fmt: str) -> np.ndarray:
    """Softmax over the last axis, max-subtracted, in the format::

        x   = R(x)
        m   = max_j x_j                        # exact; NaN if any x_j is NaN
        e_i = R(f(exp(float64(R(x_i - m)))))   # exp of the C library, in float64
        s   = sum(e_i)                         # sequential float32 accumulator
        p_i = R(f(e_i / s))

    An additive mask of -inf (or a large negative float32 that the format rounds to -inf) gives
    ``e_i = 0``; a row whose entries are all -inf gives NaN, as IEEE arithmetic does.
    """
    code = check_format(fmt)
    return _softmax_kernel(_rows(x), code).reshape(np.shape(x))


@numba.njit(cache=True, nogil=True)
def _gelu_kernel(flat, code):  # pragma: no cover - compiled
    _round_inplace(flat, code)
    for i in range(flat.size):
        t = np.float64(flat[i])
        flat[i] = np.float32(0.5 * t * (1.0 + math.erf(t / math.sqrt(2.0))))
    _round_inplace(flat, code)
    return flat


@_ieee
def gelu(x: np.ndarray, fmt: str) -> np.ndarray:
    """Exact-erf GELU (transformers' default ``"gelu"``), one function evaluation per element::

        t   = float64(R(x))
        y_i = R(f(0.5 * t * (1 + erf(t / sqrt(2)))))     # float64, left to right

    ``erf`` is the C library's (``math.erf``); the float64 result is rounded to float32, then
    to the format.
    """
    code = check_format(fmt)
    return _gelu_kernel(_rows(x).reshape(-1), code).reshape(np.shape(x))


# ---------------------------------------------------------------------------------------------
# Integer format (I-BERT)
# ---------------------------------------------------------------------------------------------


def _as_int64(name: str, q: np.ndarray) -> np.ndarray:
    if not isinstance(q, np.ndarray) or q.dtype.kind not in "iu":
        got = getattr(q, "dtype", type(q).__name__)
        raise AccelsimError(f"{name}: expected an integer array, got {got}")
    return q.astype(np.int64)


def _check_scale(name: str, scale: float) -> float:
    value = float(scale)
    if not math.isfinite(value) or value <= 0:
        raise AccelsimError(f"{name}: scale={scale!r} must be finite and > 0")
    return value


def _channel_scales(name: str, scale: float | np.ndarray, channels: int) -> np.ndarray:
    """A per-tensor scale (0-d) or one scale per channel of the last axis (``[channels]``), as
    float64, each finite and > 0."""
    values = np.asarray(scale, dtype=np.float64)
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != channels):
        raise AccelsimError(f"{name}: scale of shape {values.shape}; allowed: a scalar or one "
                            f"scale per channel of the last axis ({channels},)")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise AccelsimError(f"{name}: scale min {float(values.min())!r} must be finite and > 0")
    return values


def _check_out_bits(name: str, out_bits: int, low: int, high: int) -> int:
    if not isinstance(out_bits, (int, np.integer)) or not low <= int(out_bits) <= high:
        raise AccelsimError(f"{name}: out_bits={out_bits!r}; allowed: integers {low}..{high}")
    return int(out_bits)


def _check_magnitude(name: str, q: np.ndarray, bits: int) -> None:
    if q.size and int(np.abs(q).max()) >= 2 ** (bits - 1):
        raise AccelsimError(
            f"{name}: |q| reaches {int(np.abs(q).max())}; allowed: signed {bits}-bit inputs "
            f"(|q| < 2^{bits - 1})"
        )


def saturate(q: np.ndarray, bits: int) -> np.ndarray:
    """Clamp int64 values to the signed ``bits``-bit range ``[-2^(bits-1), 2^(bits-1) - 1]``."""
    return np.clip(q, *twos_complement_range(bits))


def int_sqrt(n: np.ndarray) -> np.ndarray:
    """``floor(sqrt(n))`` elementwise for int64 ``n >= 0``, by integer Newton iteration
    (I-BERT's i-sqrt).

    ``x_0 = 2^ceil(bits(n) / 2)`` (``bits(n)`` the bit length, found by comparisons and shifts),
    then ``x_{i+1} = (x_i + n // x_i) // 2`` until ``x_{i+1} >= x_i``; the answer is that ``x_i``
    (0 for ``n = 0``). ``x_0 >= sqrt(n)`` and the iteration decreases monotonically to the floor
    square root: at most 6 steps for 63-bit ``n``.
    """
    values = _as_int64("int_sqrt", n)
    if values.size and int(values.min()) < 0:
        raise AccelsimError(f"int_sqrt: min {int(values.min())}; allowed: n >= 0")
    length = np.zeros(values.shape, dtype=np.int64)
    rest = values.copy()
    for step in (32, 16, 8, 4, 2, 1):
        wide = rest >= (1 << step)
        rest = np.where(wide, rest >> step, rest)
        length += wide * step
    length += rest > 0
    x = np.left_shift(np.int64(1), (length + 1) // 2)
    active = values > 0
    while np.any(active):
        nxt = (x + values // np.maximum(x, 1)) // 2
        active &= nxt < x
        x = np.where(active, nxt, x)
    return np.where(values > 0, x, 0)


WIDE_BITS = 62  # multiply_by_real / to_codes accept |q| < 2^62 and results below 2^62


def multiply_by_real(q: np.ndarray, real: float | np.ndarray) -> np.ndarray:
    """``round(q * real)`` in fixed point: ``floor((q * M0 + 2^(n-1)) / 2^n)`` with
    ``(M0, n) = codes.quantize_multiplier(|real|)`` (Q31 mantissa, compile-time) and the sign of
    ``real`` on ``M0``. One rounding, ties toward +inf; ``real = 0`` gives 0. ``real`` is a
    scalar or one multiplier per channel of the last axis.

    Exact for ``|q| < 2^62`` (a GELU output is up to 48 bits) with int64 words only: ``q`` is
    split as ``hi * 2^31 + lo`` (``lo = q & (2^31 - 1) >= 0``), so ``q * M0 + 2^(n-1) =
    (hi * M0) * 2^31 + (lo * M0 + 2^(n-1))``, both parts below 2^63, and for ``n >= 31``
    (``|real| < 1``) the result is ``(hi * M0 + ((lo * M0 + 2^(n-1)) >> 31)) >> (n - 31)``;
    for ``n < 31``, ``(hi * M0) << (31 - n)`` plus ``(lo * M0 + 2^(n-1)) >> n``. The result must
    stay below 2^62 in magnitude."""
    q64 = _as_int64("multiply_by_real", q)
    _check_magnitude("multiply_by_real", q64, WIDE_BITS + 1)
    reals = np.asarray(real, dtype=np.float64)
    channels = q64.shape[-1] if q64.ndim else 1
    if reals.ndim > 1 or (reals.ndim == 1 and reals.shape[0] != channels):
        raise AccelsimError(f"multiply_by_real: multiplier of shape {reals.shape}; allowed: a "
                            f"scalar or one per channel of the last axis ({channels},)")
    pairs = [quantize_multiplier(abs(r)) if r != 0 else (0, WIDE_BITS)
             for r in reals.reshape(-1).tolist()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64).reshape(reals.shape)
    shift = np.array([p[1] for p in pairs], dtype=np.int64).reshape(reals.shape)
    if q64.size:
        peak = np.abs(q64).reshape(-1, channels).max(axis=0) if reals.ndim else np.abs(q64).max()
        if float(np.max(peak * np.abs(reals))) >= 2**WIDE_BITS:
            raise AccelsimError(
                f"multiply_by_real: max|q * real| = {float(np.max(peak * np.abs(reals))):.3g}; "
                f"allowed: below 2^{WIDE_BITS}"
            )
    signed = np.where(reals < 0, -q64, q64)
    high = (signed >> 31) * m0
    low = (signed & (2**31 - 1)) * m0 + (np.int64(1) << (shift - 1))
    narrow = (high + (low >> 31)) >> np.maximum(shift - 31, 0)  # n >= 31
    # n < 31 (|real| >= 1); the other lanes' values are discarded by the where.
    with np.errstate(over="ignore"):
        wide = (high << np.maximum(31 - shift, 0)) + (low >> np.minimum(shift, 31))
    return np.where(shift >= 31, narrow, wide)


def to_codes(q: np.ndarray, scale: float | np.ndarray, out_scale: float, zero_point: int,
             qmin: int, qmax: int) -> np.ndarray:
    """Integer values ``q * scale`` requantized to a quantizer's codes:
    ``clamp(zero_point + multiply_by_real(q, scale / out_scale), qmin, qmax)`` (the next GEMM's
    activation codes from a vector op's output), in the smallest dtype holding ``[qmin, qmax]``.
    ``scale / out_scale`` is a compile-time Q31 multiplier (``quantize_multiplier``), one per
    channel when ``scale`` is per channel of the last axis."""
    q64 = _as_int64("to_codes", q)
    scale = _channel_scales("to_codes", scale, q64.shape[-1] if q64.ndim else 1)
    out_scale = _check_scale("to_codes.out_scale", out_scale)
    shifted = multiply_by_real(q64, scale / out_scale) + zero_point
    return np.clip(shifted, qmin, qmax).astype(code_dtype(qmin, qmax))


def int_gelu(q: np.ndarray, scale: float | np.ndarray) -> tuple[np.ndarray, float | np.ndarray]:
    """Integer GELU, I-BERT's i-GELU: ``x (1 + erf(x / sqrt 2)) / 2`` with ``x = q * scale``.

    ``scale`` is per tensor or one per channel of the last axis (a GEMM accumulator with
    per-channel weight scales); the constants are then per channel. Compile-time constants
    (float64 from each scale), I-BERT's except for the shift ``k``::

        s     = scale / sqrt(2)                      # the scale of x / sqrt(2) on the same q
        b_int = floor(ERF_B / s)                     # < 0
        c_int = floor((ERF_C / ERF_A) / (s * s))     # < 0 (ERF_A < 0)
        k     = max(0, bits(|c_int|) - ERF_BITS)     # I-BERT: 14
        s_erf = ERF_A * (s * s) * 2^k                # < 0
        one   = floor(1 / s_erf)                     # < 0; one * s_erf ~ 1

    Integer kernel::

        erf_q = sign(q) * ((min(|q|, -b_int) + b_int)^2 + c_int)    # erf(x/sqrt2) ~ erf_q*s^2*A
        erf_q = erf_q >> k
        q_out = -(q * (erf_q + one))

    Returns ``(q_out, scale_out)`` with ``scale_out = -scale * s_erf / 2 > 0`` (I-BERT's integers
    and scale, both negated so that the scale is positive; per channel if ``scale`` is).
    ``|q_out| <= |q| * 2^(ERF_BITS+2)``; inputs must satisfy ``|q| < 2^45``.
    """
    q64 = _as_int64("int_gelu", q)
    scales = _channel_scales("int_gelu", scale, q64.shape[-1] if q64.ndim else 1)
    _check_magnitude("int_gelu", q64, 46)
    s = scales / math.sqrt(2.0)
    b_int = np.floor(ERF_B / s).astype(np.int64)
    c_int = np.floor((ERF_C / ERF_A) / (s * s)).astype(np.int64)
    shift = np.array([max(0, abs(c).bit_length() - ERF_BITS) for c in c_int.reshape(-1).tolist()],
                     dtype=np.int64).reshape(c_int.shape)
    s_erf = ERF_A * (s * s) * np.exp2(shift)
    one = np.floor(1.0 / s_erf).astype(np.int64)
    channels = q64.shape[-1] if q64.ndim else 1
    constants = [np.ascontiguousarray(np.broadcast_to(v, (channels,)))
                 for v in (b_int, c_int, shift, one)]
    out = _int_gelu_kernel(q64.reshape(-1, channels), *constants).reshape(q64.shape)
    scale_out = -scales * s_erf / 2.0
    return out, float(scale_out) if scale_out.ndim == 0 else scale_out


@numba.njit(cache=True, nogil=True)
def _int_gelu_kernel(rows, b_int, c_int, shift, one):  # pragma: no cover - compiled
    out = np.empty_like(rows)
    for r in range(rows.shape[0]):
        for c in range(rows.shape[1]):
            v = rows[r, c]
            t = min(abs(v), -b_int[c]) + b_int[c]
            erf = t * t + c_int[c]
            if v < 0:
                erf = -erf
            elif v == 0:
                erf = 0
            out[r, c] = -(v * ((erf >> shift[c]) + one[c]))
    return out


@functools.cache
def gelu_table(segments: int) -> np.ndarray:
    """The table GELU's stored values: ``floor(Phi(i h) 2^PHI_BITS + 1/2)`` for ``i = 0 ..
    segments`` with ``h = GELU_TABLE_RANGE / segments`` and ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``
    in float64 (compile time; every value is at most ``2^PHI_BITS``, one 16-bit word)."""
    if segments not in GELU_TABLE_SEGMENTS or segments == 0:
        allowed = ", ".join(str(n) for n in GELU_TABLE_SEGMENTS if n)
        raise AccelsimError(f"gelu table: {segments!r} segments; allowed: {allowed}")
    h = GELU_TABLE_RANGE / segments
    values = [math.floor((1.0 + math.erf(i * h / math.sqrt(2.0))) / 2.0 * 2**GELU_TABLE_PHI_BITS
                         + 0.5) for i in range(segments + 1)]
    table = np.array(values, dtype=np.int64)
    table.flags.writeable = False
    return table


def int_gelu_table(q: np.ndarray, scale: float | np.ndarray,
                   segments: int) -> tuple[np.ndarray, float | np.ndarray]:
    """Integer GELU from a table of the normal CDF ``Phi``: ``x Phi(x)`` with ``x = q * scale``,
    ``Phi`` interpolated linearly on ``segments`` equal segments of ``|x|`` in ``[0,
    GELU_TABLE_RANGE)`` (table: :func:`gelu_table`, ``P[0 .. segments]``). ``scale`` is per
    tensor or one per channel of the last axis. With ``F = GELU_TABLE_X_FRAC_BITS``, ``B =
    GELU_TABLE_PHI_BITS`` and ``f = F + log2(GELU_TABLE_RANGE / segments)`` fraction bits per
    segment::

        x   = multiply_by_real(q, scale * 2^F)             # round(x 2^F), one Q31 multiplier
        a   = |x|
        phi = 2^B                                          if a >= GELU_TABLE_RANGE * 2^F
            = P[i] + ((P[i+1] - P[i]) * r + 2^(f-1)) >> f  otherwise, i = a >> f, r = a & (2^f - 1)
        phi = 2^B - phi                                    if x < 0
        q_out = (q * phi + 2^(B-1)) >> B

    Returns ``(q_out, scale)``: the output keeps the input's scale. Three multiplies per element
    (to fixed point, interpolation, output) and a read of two adjacent table words. Its error
    against exact GELU: docs/integer_semantics.md's kernel table. Inputs must satisfy ``|q| <
    2^46``."""
    q64 = _as_int64("int_gelu_table", q)
    scales = _channel_scales("int_gelu_table", scale, q64.shape[-1] if q64.ndim else 1)
    _check_magnitude("int_gelu_table", q64, 46)
    table = gelu_table(segments)
    x = multiply_by_real(q64, scales * 2.0**GELU_TABLE_X_FRAC_BITS)
    fraction_bits = GELU_TABLE_X_FRAC_BITS + int(math.log2(GELU_TABLE_RANGE / segments))
    out = _int_gelu_table_kernel(q64.reshape(-1), np.ascontiguousarray(x).reshape(-1), table,
                                 fraction_bits, GELU_TABLE_RANGE << GELU_TABLE_X_FRAC_BITS,
                                 GELU_TABLE_PHI_BITS)
    return out.reshape(q64.shape), float(scales) if scales.ndim == 0 else scales


@numba.njit(cache=True, nogil=True)
def _int_gelu_table_kernel(q, x, table, fraction_bits, limit, phi_bits):  # pragma: no cover
    out = np.empty_like(q)
    one = np.int64(1) << phi_bits
    mask = (np.int64(1) << fraction_bits) - 1
    half = np.int64(1) << (fraction_bits - 1)
    for k in range(q.size):
        a = abs(x[k])
        if a >= limit:
            phi = one
        else:
            i = a >> fraction_bits
            phi = table[i] + (((table[i + 1] - table[i]) * (a & mask) + half) >> fraction_bits)
        if x[k] < 0:
            phi = one - phi
        out[k] = (q[k] * phi + (one >> 1)) >> phi_bits
    return out


def _exp_constants(name: str, scale: float) -> tuple[int, int, int]:
    ln2_int = math.floor(math.log(2.0) / scale)
    if ln2_int < 1:
        raise AccelsimError(f"{name}: scale={scale!r} >= ln 2; allowed: scales below ln 2 "
                            "(the integer exp needs ln 2 / scale >= 1)")
    return ln2_int, math.floor(EXP_B / scale), math.floor((EXP_C / EXP_A) / scale**2)


@numba.njit(cache=True, nogil=True)
def _int_exp_scalar(v, ln2_int, b_int, c_int):  # pragma: no cover - compiled
    v = max(v, -EXP_MAX_HALVINGS * ln2_int)
    z = (-v) // ln2_int
    p = v + z * ln2_int
    return ((p + b_int) * (p + b_int) + c_int) >> z


@numba.njit(cache=True, nogil=True)
def _int_exp_kernel(flat, ln2_int, b_int, c_int):  # pragma: no cover - compiled
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = _int_exp_scalar(flat[i], ln2_int, b_int, c_int)
    return out


@numba.njit(cache=True, nogil=True)
def _int_softmax_kernel(rows, keep, ln2_int, b_int, c_int, out_bits):  # pragma: no cover
    out = np.zeros_like(rows)
    e = np.empty(rows.shape[1], dtype=np.int64)
    largest = (np.int64(1) << out_bits) - 1
    for r in range(rows.shape[0]):
        top = np.int64(0)
        found = False
        for i in range(rows.shape[1]):
            if keep[r, i] and (not found or rows[r, i] > top):
                top = rows[r, i]
                found = True
        total = np.int64(0)
        for i in range(rows.shape[1]):
            e[i] = _int_exp_scalar(rows[r, i] - top, ln2_int, b_int, c_int) if keep[r, i] else 0
            total += e[i]
        recip = (np.int64(1) << SOFTMAX_RECIP_BITS) // max(total, np.int64(1))
        for i in range(rows.shape[1]):
            out[r, i] = min((e[i] * recip) >> (SOFTMAX_RECIP_BITS - out_bits), largest)
    return out


def int_exp(q: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Integer ``exp(q * scale)`` for ``q <= 0``, I-BERT's i-exp.

    ``x = -z ln 2 + p`` with integer ``z >= 0`` and ``p`` in ``(-ln 2, 0]``, so
    ``exp(x) = exp(p) >> z`` and ``exp(p) ~ EXP_A (p + EXP_B)^2 + EXP_C``. Compile-time
    constants (float64 from ``scale``)::

        ln2_int = floor(ln 2 / scale)       # >= 1 required
        b_int   = floor(EXP_B / scale)
        c_int   = floor((EXP_C / EXP_A) / scale^2)

    Integer kernel::

        q     = max(q, -EXP_MAX_HALVINGS * ln2_int)
        z     = (-q) // ln2_int
        p     = q + z * ln2_int             # -ln2_int < p <= 0
        q_out = ((p + b_int)^2 + c_int) >> z

    Returns ``(q_out >= 0, scale_out = EXP_A * scale^2)``.
    """
    scale = _check_scale("int_exp", scale)
    q64 = _as_int64("int_exp", q)
    if q64.size and int(q64.max()) > 0:
        raise AccelsimError(f"int_exp: max q {int(q64.max())}; allowed: q <= 0 (subtract the "
                            "row maximum first)")
    ln2_int, b_int, c_int = _exp_constants("int_exp", scale)
    out = _int_exp_kernel(q64.reshape(-1), ln2_int, b_int, c_int)
    return out.reshape(q64.shape), EXP_A * scale**2


def int_softmax(q: np.ndarray, scale: float, out_bits: int,
                keep: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Integer softmax over the last axis (I-BERT's i-softmax), output unsigned ``out_bits``.

    ``keep`` (boolean, broadcast against ``q``) marks the entries that take part; the others
    (an attention mask's) output 0. Integer kernel, per row::

        m      = max of the kept q
        e_i    = int_exp(q_i - m, scale)       (0 where not kept)
        recip  = 2^SOFTMAX_RECIP_BITS // sum(e)
        q_out  = min((e_i * recip) >> (SOFTMAX_RECIP_BITS - out_bits), 2^out_bits - 1)

    ``scale_out = 2^-out_bits``. ``e_i <= sum(e)`` keeps ``e_i * recip <= 2^62``. A row with no
    kept entry outputs zeros. I-BERT requantizes ``e`` to 16 bits and uses ``2^32`` to stay in
    int32; int64 lets the reciprocal keep more bits without that step.
    """
    scale = _check_scale("int_softmax", scale)
    out_bits = _check_out_bits("int_softmax", out_bits, 1, 30)
    q64 = _as_int64("int_softmax", q)
    _check_magnitude("int_softmax", q64, 48)
    kept = np.ones(q64.shape, dtype=bool) if keep is None else np.broadcast_to(keep, q64.shape)
    ln2_int, b_int, c_int = _exp_constants("int_softmax", scale)
    row_sum_bound = q64.shape[-1] * (b_int**2 + c_int)  # every e_i <= exp(0)'s integer
    if row_sum_bound >= 2 ** (SOFTMAX_RECIP_BITS - out_bits):
        raise AccelsimError(
            f"int_softmax: scale={scale!r} is too fine for rows of {q64.shape[-1]} at "
            f"out_bits={out_bits}; allowed: n * 2.79 / scale^2 < 2^{SOFTMAX_RECIP_BITS - out_bits}"
        )
    n = q64.shape[-1]
    out = _int_softmax_kernel(q64.reshape(-1, n), np.ascontiguousarray(kept).reshape(-1, n),
                              ln2_int, b_int, c_int, out_bits)
    return out.reshape(q64.shape), 2.0**-out_bits


def int_layer_norm(q: np.ndarray, scale: float, gamma: np.ndarray, beta: np.ndarray,
                   out_bits: int, eps: float = 0.0,
                   out_scale: float | None = None) -> tuple[np.ndarray, float]:
    """Integer LayerNorm over the last axis (``n`` elements), I-BERT's with wider fixed point.

    Compile-time constants (float64, from ``scale``, ``gamma``, ``beta``, ``eps``, ``n``)::

        s_norm   = sqrt(n) / 2^30                    # scale of the normalized integers
        s_out    = out_scale, or (max|gamma| * sqrt(n) + max|beta|) / (2^(out_bits-1) - 1)
                   (the default cannot saturate: |normalized| <= sqrt(n))
        eps_int  = floor(eps * n / scale^2)
        sh       = the largest shift <= 62 with every |M_c| < 2^31, then
        M_c      = round(gamma_c * s_norm / s_out * 2^sh)   # per channel, signed
        beta_c   = round(beta_c / s_out)

    Integer kernel, per row (inputs signed 32-bit)::

        mean   = (2 * sum(q) + n) // (2 * n)          # round(sum / n), ties up
        y      = q - mean
        var    = sum(y * y) + eps_int                 # needs n * max|y|^2 < 2^63
        std    = int_sqrt(var)
        recip  = 2^LN_RECIP_BITS // max(std, 1)
        norm   = (y * recip) >> LN_NORM_SHIFT         # |y * recip| <= 2^62
        q_out  = saturate(((norm * M_c + 2^(sh-1)) >> sh) + beta_c, out_bits)

    I-BERT divides ``2^31`` by the std and multiplies by ``y`` in int32; ``2^61`` keeps the
    reciprocal exact to 2^-29 relative for any std below 2^32. An all-equal row (``var = 0``)
    outputs ``beta_c``. Returns ``(q_out, s_out)``.
    """
    q64 = _as_int64("int_layer_norm", q)
    n = q64.shape[-1]
    gamma64 = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (n,))
    beta64 = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n,))
    return _int_normalize("int_layer_norm", q64, scale, gamma64, beta64, out_bits, eps, out_scale)


def int_group_norm(q: np.ndarray, scale: float, groups: int, gamma: np.ndarray,
                   beta: np.ndarray, out_bits: int, eps: float = 0.0,
                   out_scale: float | None = None) -> tuple[np.ndarray, float]:
    """Integer GroupNorm of ``q`` shaped ``(batch, channels, *positions)``: each example's
    ``groups`` groups of ``channels / groups`` consecutive channels are normalized over their
    channels and positions together, then scaled and shifted per channel (``gamma``, ``beta``
    of length ``channels``). It is :func:`int_layer_norm`'s kernel on rows of one group's
    ``n = channels / groups * positions`` elements, with each element's ``M_c`` and ``beta_c``
    those of its channel; the constants (``s_out``, one ``sh`` for every channel) are derived
    from all channels at once, so the output is one tensor on one scale. Returns
    ``(q_out, s_out)``, ``q_out`` shaped like ``q``.
    """
    q64 = _as_int64("int_group_norm", q)
    if q64.ndim < 2:
        raise AccelsimError(f"int_group_norm: q of shape {q64.shape}; allowed: (batch, channels, "
                            "*positions)")
    channels = q64.shape[1]
    if not isinstance(groups, int | np.integer) or groups < 1 or channels % groups:
        raise AccelsimError(f"int_group_norm: groups={groups!r}; allowed: a divisor of the "
                            f"{channels} channels")
    positions = math.prod(q64.shape[2:])
    per_group = channels // groups

    def by_group(values: np.ndarray, name: str) -> np.ndarray:
        per_channel = np.asarray(values, dtype=np.float64)
        if per_channel.shape != (channels,):
            raise AccelsimError(f"int_group_norm: {name} of shape {per_channel.shape}; allowed: "
                                f"one value per channel ({channels},)")
        return np.repeat(per_channel.reshape(groups, per_group), positions, axis=1)

    rows = q64.reshape(q64.shape[0], groups, per_group * positions)
    out, s_out = _int_normalize("int_group_norm", rows, scale, by_group(gamma, "gamma"),
                                by_group(beta, "beta"), out_bits, eps, out_scale)
    return out.reshape(q64.shape), s_out


def _int_normalize(name: str, q64: np.ndarray, scale: float, gamma64: np.ndarray,
                   beta64: np.ndarray, out_bits: int, eps: float,
                   out_scale: float | None) -> tuple[np.ndarray, float]:
    """:func:`int_layer_norm`'s kernel over the last axis of ``q64``; ``gamma64`` and ``beta64``
    are broadcast against ``q64``'s trailing axes (one per element of a row, or per row and
    element for a GroupNorm)."""
    scale = _check_scale(name, scale)
    out_bits = _check_out_bits(name, out_bits, 2, 32)
    _check_magnitude(name, q64, INT_MAX_BITS)
    n = q64.shape[-1]
    qmax = 2 ** (out_bits - 1) - 1
    s_norm = math.sqrt(n) / 2**30
    if out_scale is None:
        bound = float(np.abs(gamma64).max()) * math.sqrt(n) + float(np.abs(beta64).max())
        out_scale = max(bound, np.finfo(np.float32).tiny) / qmax
    s_out = _check_scale(f"{name}.out_scale", out_scale)
    ratio = gamma64 * s_norm / s_out
    largest = float(np.abs(ratio).max())
    shift = 62 if largest == 0 else min(62, 30 - math.floor(math.log2(largest)))
    if largest * 2**shift >= 2**31 - 0.5:  # the mantissa rounds up to 2^31
        shift -= 1
    if shift < 1:
        raise AccelsimError(
            f"{name}: out_scale={s_out!r} is too fine for max|gamma|="
            f"{float(np.abs(gamma64).max())!r}; allowed: max|gamma| * sqrt(n) / 2^30 / out_scale "
            "< 2^30"
        )
    multipliers = np.floor(ratio * 2**shift + 0.5).astype(np.int64)
    beta_int = np.floor(beta64 / s_out + 0.5).astype(np.int64)
    eps_int = math.floor(eps * n / scale**2)

    total = q64.sum(axis=-1, keepdims=True)
    mean = (2 * total + n) // (2 * n)
    y = q64 - mean
    if y.size and n * int(np.abs(y).max()) ** 2 + eps_int >= 2**63:
        raise AccelsimError(
            f"{name}: n={n} values with max|q - mean|={int(np.abs(y).max())} overflow "
            "the int64 variance; allowed: n * max|q - mean|^2 < 2^63"
        )
    var = (y * y).sum(axis=-1, keepdims=True) + eps_int
    recip = (1 << LN_RECIP_BITS) // np.maximum(int_sqrt(var), 1)
    norm = (y * recip) >> LN_NORM_SHIFT
    affine = (norm * multipliers + (1 << (shift - 1))) >> shift
    return saturate(affine + beta_int, out_bits), s_out


def int_add(qa: np.ndarray, scale_a: float | np.ndarray, qb: np.ndarray,
            scale_b: float | np.ndarray, out_bits: int,
            out_scale: float | None = None) -> tuple[np.ndarray, float]:
    """Residual add of two integer tensors with different scales (broadcasting; each scale per
    tensor or one per channel of the last axis, e.g. a GEMM accumulator's)::

        s_out = out_scale, or the largest of scale_a, scale_b    # the coarsest grid by default
        q_out = saturate(multiply_by_real(qa, scale_a / s_out)
                         + multiply_by_real(qb, scale_b / s_out), out_bits)

    Each rescale is one fixed-point multiply with a Q31 multiplier and a rounding shift
    (compile-time ``quantize_multiplier``, :func:`multiply_by_real`); a ratio of exactly 1 passes
    the operand unchanged. Inputs and rescaled operands below 2^62 in magnitude. Returns
    ``(q_out, s_out)``.
    """
    qa64, qb64 = np.broadcast_arrays(_as_int64("int_add.qa", qa), _as_int64("int_add.qb", qb))
    channels = qa64.shape[-1] if qa64.ndim else 1
    scale_a = _channel_scales("int_add.scale_a", scale_a, channels)
    scale_b = _channel_scales("int_add.scale_b", scale_b, channels)
    out_bits = _check_out_bits("int_add", out_bits, 2, 32)
    s_out = max(float(scale_a.max()), float(scale_b.max())) if out_scale is None else (
        _check_scale("int_add.out_scale", out_scale))
    total = multiply_by_real(qa64, scale_a / s_out) + multiply_by_real(qb64, scale_b / s_out)
    return saturate(total, out_bits), s_out
