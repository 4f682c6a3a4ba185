"""Integer codes on the numpy side of the reference: quantization, the int32 overflow guard, the
2:4 compressed form, bit packing and the requantization multiplier.

``docs/integer_semantics.md`` is the spec; :mod:`accelsim.ref.kernels` runs the GEMMs and the
requantization on what this module produces. Quantize (the one expression shared with
``accelsim.compress.quant``): ``codes = clamp(round_half_even(x / scale) + zero_point, qmin,
qmax)`` in float32 with true division (``x / s``, never ``x * (1 / s)``: they disagree at ties).
"""

from __future__ import annotations

import math

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.formats import (
    INDEX_BITS,
    INT32_MAX,
    SPARSE_GROUP,
    SPARSE_KEPT,
    twos_complement_range,
)

INT4_MIN, INT4_MAX = twos_complement_range(4)
INDEX_MAX = 2**INDEX_BITS - 1
ACT_DTYPES = (np.int8, np.uint8, np.int16)


def check_codes(name: str, array: np.ndarray, allowed: tuple[type, ...], ndim: int) -> None:
    """Raise :class:`AccelsimError` unless ``array`` is an ndarray of one of the ``allowed``
    dtypes with ``ndim`` dimensions."""
    if not isinstance(array, np.ndarray) or array.dtype not in [np.dtype(d) for d in allowed]:
        got = getattr(array, "dtype", type(array).__name__)
        names = ", ".join(np.dtype(d).name for d in allowed)
        raise AccelsimError(f"{name}: dtype {got} is not one of {names}")
    if array.ndim != ndim:
        raise AccelsimError(f"{name}: expected {ndim} dimensions, got shape {array.shape}")


def check_codes_any_dim(name: str, array: np.ndarray, dtypes: type | tuple[type, ...]) -> None:
    """Raise :class:`AccelsimError` unless ``array`` is an ndarray of one of ``dtypes`` with at
    least 1 dimension."""
    allowed = [np.dtype(d) for d in (dtypes if isinstance(dtypes, tuple) else (dtypes,))]
    if not isinstance(array, np.ndarray) or array.dtype not in allowed or array.ndim < 1:
        got = getattr(array, "dtype", type(array).__name__)
        names = ", ".join(d.name for d in allowed)
        raise AccelsimError(f"{name}: expected an array of {names}, got {got}")


# ---------------------------------------------------------------------------------------------
# Quantization (float32 -> codes), shared rule with accelsim.compress.quant
# ---------------------------------------------------------------------------------------------


def code_dtype(qmin: int, qmax: int) -> np.dtype:
    """Smallest numpy integer dtype holding ``[qmin, qmax]`` (int8, uint8 or int16)."""
    for dtype in ACT_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return np.dtype(dtype)
    raise AccelsimError(
        f"quantize: code range [{qmin}, {qmax}] is wider than int16; allowed ranges fit in int16"
    )


def quantize(
    x: np.ndarray, scale: np.ndarray | float, zero_point: int, qmin: int, qmax: int
) -> np.ndarray:
    """``clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`` in float32.

    ``scale`` is a scalar or broadcasts against ``x`` (per-channel). Returns the smallest integer
    dtype that holds the code range.
    """
    x32 = np.asarray(x, dtype=np.float32)
    s32 = np.asarray(scale, dtype=np.float32)
    if np.any(s32 <= 0) or not np.all(np.isfinite(s32)):
        raise AccelsimError(f"quantize: scale must be finite and > 0, got min {s32.min()!r}")
    rounded = np.rint(x32 / s32) + np.float32(zero_point)
    return np.clip(rounded, qmin, qmax).astype(code_dtype(qmin, qmax))


def dequantize(codes: np.ndarray, scale: np.ndarray | float, zero_point: int) -> np.ndarray:
    """``(codes - zero_point) * scale`` in float32."""
    shifted = codes.astype(np.float32) - np.float32(zero_point)
    return shifted * np.asarray(scale, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Overflow guard
# ---------------------------------------------------------------------------------------------


def accumulator_bound(max_abs_a: int, max_abs_w: int, k: int, max_abs_bias: int = 0) -> int:
    """Largest |acc| any dot product of length ``k`` can reach: ``max|a-zp| * max|w| * k + |b|``."""
    return int(max_abs_a) * int(max_abs_w) * int(k) + int(max_abs_bias)


def max_supported_k(act_bits: int, weight_bits: int, act_signed_zero_point: bool = True) -> int:
    """Largest reduction length for which int32 cannot overflow, whatever the codes are.

    With a zero point, ``|a - zp|`` can reach ``2^act_bits - 1``; symmetric weights reach
    ``2^(weight_bits - 1)`` in magnitude (-8 on the two's complement int4 grid).
    """
    max_a = 2**act_bits - 1 if act_signed_zero_point else 2 ** (act_bits - 1)
    return INT32_MAX // (max_a * 2 ** (weight_bits - 1))


def max_abs_shifted(codes: np.ndarray, zero_point: int = 0) -> int:
    """``max |codes - zero_point|`` as a Python int (0 for an empty array)."""
    if codes.size == 0:
        return 0
    return max(abs(int(codes.max()) - zero_point), abs(int(codes.min()) - zero_point))


def check_accumulator_bound(name: str, max_a: int, max_w: int, k: int, max_bias: int) -> None:
    """Raise :class:`AccelsimError` unless ``accumulator_bound(...)`` fits int32."""
    bound = accumulator_bound(max_a, max_w, k, max_bias)
    if bound > INT32_MAX:
        raise AccelsimError(
            f"{name}: K={k} with max|a-zp|={max_a}, max|w|={max_w}, max|bias|={max_bias} can reach "
            f"|acc|={bound} > 2^31-1; allowed: max|a-zp|*max|w|*K + max|bias| <= 2^31-1"
        )


# ---------------------------------------------------------------------------------------------
# 2:4 sparse: the compressed form
# ---------------------------------------------------------------------------------------------


def compress_2to4(w_codes: np.ndarray, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """Dense ``[N, K]`` int8 codes -> kept values ``[N, K/2]`` int8 + indices ``[N, K/2]`` uint8.

    Each group of 4 along K keeps 2 slots in ascending index order: the non-zero positions, then
    the lowest unused positions with value 0 where a group has fewer than 2 non-zeros. A group
    with more than 2 non-zeros is not 2:4 and raises :class:`AccelsimError`.
    """
    check_codes(f"{name}", w_codes, (np.int8,), 2)
    n, k = w_codes.shape
    g = SPARSE_GROUP
    if k % g:
        raise AccelsimError(f"{name}: K={k} is not a multiple of {g}; 2:4 needs groups of {g} "
                            "along K")
    groups = w_codes.reshape(n, k // g, g)
    nonzero = groups != 0
    counts = nonzero.sum(axis=2)
    if np.any(counts > SPARSE_KEPT):
        row, group = np.argwhere(counts > SPARSE_KEPT)[0]
        raise AccelsimError(
            f"{name}: row {row}, group {group} (k={g * group}..{g * group + g - 1}) holds "
            f"{counts[row, group]} non-zeros {groups[row, group].tolist()}; 2:4 allows at most "
            f"{SPARSE_KEPT}"
        )
    # Stable sort puts non-zero slots first (ascending), then zero slots (ascending); keep 2 and
    # restore ascending order so the index stream is monotone within a group.
    order = np.argsort(~nonzero, axis=2, kind="stable")[:, :, :SPARSE_KEPT]
    order.sort(axis=2)
    values = np.take_along_axis(groups, order, axis=2)
    kept = k // g * SPARSE_KEPT
    return values.reshape(n, kept).astype(np.int8), order.reshape(n, kept).astype(np.uint8)


def decompress_2to4(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Kept values + indices ``[N, K/2]`` -> dense ``[N, K]`` int8 with zeros in place."""
    check_sparse_operands("decompress_2to4", values, indices)
    n, kept = values.shape
    groups = kept // SPARSE_KEPT
    dense = np.zeros((n, groups, SPARSE_GROUP), dtype=np.int8)
    np.put_along_axis(
        dense, indices.reshape(n, groups, SPARSE_KEPT).astype(np.intp),
        values.reshape(n, groups, SPARSE_KEPT), axis=2,
    )
    return dense.reshape(n, groups * SPARSE_GROUP)


def check_sparse_operands(name: str, values: np.ndarray, indices: np.ndarray) -> None:
    """Raise :class:`AccelsimError` unless ``values``/``indices`` form valid 2:4 operands: int8
    and uint8 ``[N, K/2]``, indices 0..3, distinct and ascending within each group."""
    check_codes(f"{name}.values", values, (np.int8,), 2)
    check_codes(f"{name}.indices", indices, (np.uint8,), 2)
    if values.shape != indices.shape or values.shape[1] % 2:
        raise AccelsimError(
            f"{name}: values {values.shape} and indices {indices.shape} must have the same shape "
            "[N, K/2] with an even K/2"
        )
    if indices.size and int(indices.max()) > INDEX_MAX:
        raise AccelsimError(f"{name}.indices: max {int(indices.max())}; {INDEX_BITS}-bit indices "
                            f"are 0..{INDEX_MAX}")
    pairs = indices.reshape(indices.shape[0], -1, SPARSE_KEPT)
    if np.any(pairs[:, :, 0] >= pairs[:, :, 1]):
        raise AccelsimError(
            f"{name}.indices: the 2 indices of a group must be distinct and ascending"
        )


# ---------------------------------------------------------------------------------------------
# Bit packing of the on-disk weight fields
# ---------------------------------------------------------------------------------------------


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Int4 codes (int8 in -8..7) ``[..., L]`` -> bytes ``[..., ceil(L/2)]``.

    Two's complement nibbles, element ``2i`` in the low nibble and ``2i+1`` in the high nibble
    (an odd tail is padded with 0).
    """
    check_codes_any_dim("pack_int4", codes, np.int8)
    if codes.size and (int(codes.min()) < INT4_MIN or int(codes.max()) > INT4_MAX):
        raise AccelsimError(
            f"pack_int4: codes span [{int(codes.min())}, {int(codes.max())}]; int4 allows "
            f"{INT4_MIN}..{INT4_MAX}"
        )
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.int8)], axis=-1)
    nibbles = codes.view(np.uint8) & 0x0F
    return (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: bytes ``[..., B]`` -> int8 codes ``[..., length]``."""
    check_codes_any_dim("unpack_int4", packed, np.uint8)
    if not 2 * packed.shape[-1] - 1 <= length <= 2 * packed.shape[-1]:
        raise AccelsimError(
            f"unpack_int4: length={length} does not fit {packed.shape[-1]} bytes of 2 nibbles"
        )
    nibbles = np.empty((*packed.shape[:-1], 2 * packed.shape[-1]), dtype=np.uint8)
    nibbles[..., 0::2] = packed & 0x0F
    nibbles[..., 1::2] = packed >> 4
    # Sign-extend 4-bit two's complement: 8..15 -> -8..-1.
    signed = nibbles.astype(np.int8) - ((nibbles & 0x08) << 1).astype(np.int8)
    return signed[..., :length]


def pack_indices_2bit(indices: np.ndarray) -> np.ndarray:
    """2-bit indices (uint8 in 0..3) ``[..., L]`` -> bytes ``[..., ceil(L/4)]``, LSB first."""
    check_codes_any_dim("pack_indices_2bit", indices, np.uint8)
    if indices.size and int(indices.max()) > INDEX_MAX:
        raise AccelsimError(f"pack_indices_2bit: max index {int(indices.max())}; allowed "
                            f"0..{INDEX_MAX}")
    pad = (-indices.shape[-1]) % 4
    if pad:
        indices = np.concatenate(
            [indices, np.zeros((*indices.shape[:-1], pad), np.uint8)], axis=-1
        )
    return (
        indices[..., 0::4]
        | (indices[..., 1::4] << 2)
        | (indices[..., 2::4] << 4)
        | (indices[..., 3::4] << 6)
    ).astype(np.uint8)


def unpack_indices_2bit(packed: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`pack_indices_2bit`: bytes ``[..., B]`` -> uint8 ``[..., length]``."""
    check_codes_any_dim("unpack_indices_2bit", packed, np.uint8)
    if not 4 * packed.shape[-1] - 3 <= length <= 4 * packed.shape[-1]:
        raise AccelsimError(
            f"unpack_indices_2bit: length={length} does not fit {packed.shape[-1]} bytes of 4"
        )
    out = np.empty((*packed.shape[:-1], 4 * packed.shape[-1]), dtype=np.uint8)
    for slot in range(4):
        out[..., slot::4] = (packed >> (2 * slot)) & 0x03
    return out[..., :length]


def unpack_weight_codes(packed: np.ndarray, bits: int, length: int, grid: str) -> np.ndarray:
    """Decode packed weight fields (docs/compression.md §6.4) ``[N, B]`` -> int8 codes.

    4-bit: two's complement nibbles, low nibble first; 8-bit: one int8 per byte. The ``no_zero``
    grid stores ``i = (code - 1) >> 1`` and decodes to the odd code ``2i + 1``.
    """
    if bits == 4:
        fields = unpack_int4(packed, length)
    elif bits == 8:
        check_codes_any_dim("unpack_weight_codes", packed, np.uint8)
        fields = packed.view(np.int8)[..., :length]
    else:
        raise AccelsimError(f"unpack_weight_codes: bits={bits!r} is not one of 4, 8")
    if grid == "no_zero":
        return (2 * fields.astype(np.int16) + 1).astype(np.int8)
    return np.ascontiguousarray(fields)


# ---------------------------------------------------------------------------------------------
# Requantization multiplier (gemmlowp/TFLite style)
# ---------------------------------------------------------------------------------------------


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """``real = M0 * 2^-n`` with ``M0`` a Q31 mantissa in ``[2^30, 2^31)`` and ``1 <= n <= 62``.

    Allowed multipliers: ``2^-32 < real < 2^30`` (the range in which ``acc * M0`` plus the
    rounding term fits int64).
    """
    if not math.isfinite(real_multiplier) or real_multiplier <= 0:
        raise AccelsimError(f"quantize_multiplier: multiplier={real_multiplier!r} must be > 0")
    mantissa, exponent = math.frexp(real_multiplier)  # real = mantissa * 2^exponent
    m0 = round(mantissa * 2**31)
    if m0 == 2**31:  # mantissa rounded up to 1.0
        m0 //= 2
        exponent += 1
    shift = 31 - exponent
    if not 1 <= shift <= 62:
        raise AccelsimError(
            f"quantize_multiplier: multiplier={real_multiplier!r} is outside (2^-32, 2^30)"
        )
    return m0, shift
