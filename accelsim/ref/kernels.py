"""Bit-exact integer kernels: the golden model of what the accelerator computes.

Everything here works on integer *codes* (numpy arrays; quantization, the 2:4 compressed form,
packing and the overflow bound are :mod:`accelsim.ref.codes`) and returns exactly the integers
the hardware produces; ``docs/integer_semantics.md`` is the spec. The conventions:

* Linear GEMM: ``acc[m, n] = bias[n] + sum_k (a[m, k] - a_zp) * w[n, k]`` in int32. Weights are
  symmetric (zero point 0), stored ``[N, K]`` like ``torch.nn.Linear``.
* 2:4 GEMM: each group of 4 weights along K keeps 2 values plus 2-bit indices; the index drives a
  4:1 mux that picks the matching activation of the group (no decompression of the weights).
* Attention matmuls: ``acc[b, m, n] = sum_k (a[b, m, k] - a_zp) * (b[b, k, n] - b_zp)``.
* Requantization: ``clamp(zp + ((acc * M0 + 2^(n-1)) >> n), qmin, qmax)`` in int64, a single
  rounding, half-up (ties toward +inf).
* Accumulator width: every GEMM's exact int32 sum (bias included) is then clipped to the chip's
  ``accumulator_bits`` by its overflow policy (:func:`clip_accumulators`): once, after the whole
  K reduction (docs/integer_semantics.md §2 says why this is the hardware's point).

Kernels are numba-compiled (``cache=True``: the JIT cost is paid once per machine), parallel over
output tiles, and check before running that int32 cannot overflow (``accumulator_bound``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
from numba import prange

from accelsim.errors import AccelsimError
from accelsim.formats import OVERFLOW_POLICIES, twos_complement_range
from accelsim.ref.codes import (
    ACT_DTYPES,
    check_accumulator_bound,
    check_codes,
    check_codes_any_dim,
    check_sparse_operands,
    code_dtype,
    max_abs_shifted,
    quantize_multiplier,
)

# Output tile per parallel task: 8 rows x 1024 int32 columns = 32 KiB of accumulators (L1), and
# a 768 x 1024 int8 weight block (768 KiB, L2) reused by all 8 rows. Chosen by measurement on
# 197x768x3072 (benchmarks/bench_ref.py); any tiling gives the same integers.
_TILE_M = 8
_TILE_N = 1024
_TILE_K = 768
# Below this many MACs a call runs on one thread: waking the pool costs 0.1-1.5 ms on a busy
# 2-core machine, more than the whole GEMM (tiny models, attention of short sequences).
_PARALLEL_MIN_MACS = 1 << 21


@contextmanager
def _threads_for(macs: int) -> Iterator[None]:
    previous = numba.get_num_threads()
    if macs < _PARALLEL_MIN_MACS:
        numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _bias_or_zeros(name: str, bias: np.ndarray | None, n: int) -> np.ndarray:
    if bias is None:
        return np.zeros(n, dtype=np.int32)
    if not isinstance(bias, np.ndarray) or bias.dtype != np.int32 or bias.shape != (n,):
        got = (getattr(bias, "dtype", None), getattr(bias, "shape", None))
        raise AccelsimError(f"{name}.bias: expected int32 of shape ({n},), got {got}")
    return bias


# ---------------------------------------------------------------------------------------------
# Dense GEMM
# ---------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _gemm_kernel(a, a_zp, wt, bias, out):  # pragma: no cover - compiled
    m_size, k_size = a.shape
    n_size = wt.shape[1]
    tiles_m = (m_size + _TILE_M - 1) // _TILE_M
    tiles_n = (n_size + _TILE_N - 1) // _TILE_N
    for tile in prange(tiles_m * tiles_n):
        m0 = (tile // tiles_n) * _TILE_M
        n0 = (tile % tiles_n) * _TILE_N
        rows = min(m_size, m0 + _TILE_M) - m0
        cols = min(n_size, n0 + _TILE_N) - n0
        # Tile-local accumulators and zero-point-shifted activations: contiguous rows that LLVM
        # vectorizes (the order of integer additions does not change the result).
        acc = np.empty((rows, cols), dtype=np.int32)
        for i in range(rows):
            for j in range(cols):
                acc[i, j] = bias[n0 + j]
        x = np.empty((rows, k_size), dtype=np.int32)
        for i in range(rows):
            for k in range(k_size):
                x[i, k] = np.int32(a[m0 + i, k]) - a_zp
        for k0 in range(0, k_size, _TILE_K):
            k1 = min(k_size, k0 + _TILE_K)
            for i in range(rows):
                arow = acc[i]
                xrow = x[i]
                k = k0
                while k + 4 <= k1:  # 4 reduction steps per pass: 1 accumulator load/store
                    w0 = wt[k, n0:n0 + cols]
                    w1 = wt[k + 1, n0:n0 + cols]
                    w2 = wt[k + 2, n0:n0 + cols]
                    w3 = wt[k + 3, n0:n0 + cols]
                    x0 = xrow[k]
                    x1 = xrow[k + 1]
                    x2 = xrow[k + 2]
                    x3 = xrow[k + 3]
                    for j in range(cols):
                        arow[j] += (
                            x0 * np.int32(w0[j]) + x1 * np.int32(w1[j])
                            + x2 * np.int32(w2[j]) + x3 * np.int32(w3[j])
                        )
                    k += 4
                while k < k1:
                    wr = wt[k, n0:n0 + cols]
                    xv = xrow[k]
                    for j in range(cols):
                        arow[j] += xv * np.int32(wr[j])
                    k += 1
        out[m0:m0 + rows, n0:n0 + cols] = acc
    return out


def int_gemm(
    a_codes: np.ndarray,
    w_codes: np.ndarray,
    a_zero_point: int = 0,
    bias: np.ndarray | None = None,
    *,
    w_transposed: np.ndarray | None = None,
) -> np.ndarray:
    """``acc[m, n] = bias[n] + sum_k (a[m, k] - a_zp) * w[n, k]`` in int32.

    ``a_codes``: int8/uint8/int16 ``[M, K]``; ``w_codes``: int8 ``[N, K]``; ``bias``: int32
    ``[N]`` or ``None``. ``w_transposed`` (a contiguous ``[K, N]`` copy) may be passed to skip the
    per-call transpose when the same weights run many times.
    """
    check_codes("int_gemm.a", a_codes, ACT_DTYPES, 2)
    check_codes("int_gemm.w", w_codes, (np.int8,), 2)
    if a_codes.shape[1] != w_codes.shape[1]:
        raise AccelsimError(
            f"int_gemm: reduction sizes differ, a {a_codes.shape} vs w {w_codes.shape} "
            "(w is [N, K])"
        )
    n = w_codes.shape[0]
    bias32 = _bias_or_zeros("int_gemm", bias, n)
    check_accumulator_bound(
        "int_gemm", max_abs_shifted(a_codes, a_zero_point), max_abs_shifted(w_codes),
        a_codes.shape[1], max_abs_shifted(bias32),
    )
    wt = np.ascontiguousarray(w_codes.T) if w_transposed is None else w_transposed
    m, k = a_codes.shape
    out = np.empty((m, n), dtype=np.int32)
    with _threads_for(m * n * k):
        return _gemm_kernel(np.ascontiguousarray(a_codes), np.int32(a_zero_point), wt, bias32,
                            out)


# ---------------------------------------------------------------------------------------------
# 2:4 sparse: the index-mux GEMM on the compressed form
# ---------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _sparse_gemm_kernel(a, a_zp, vt, it, bias, out):  # pragma: no cover - compiled
    # vt/it: kept values and indices transposed to [K/2, N]; slots 2g and 2g+1 belong to group g.
    m_size = a.shape[0]
    groups = vt.shape[0] // 2
    n_size = vt.shape[1]
    tiles_m = (m_size + _TILE_M - 1) // _TILE_M
    tiles_n = (n_size + _TILE_N - 1) // _TILE_N
    for tile in prange(tiles_m * tiles_n):
        m0 = (tile // tiles_n) * _TILE_M
        n0 = (tile % tiles_n) * _TILE_N
        rows = min(m_size, m0 + _TILE_M) - m0
        cols = min(n_size, n0 + _TILE_N) - n0
        acc = np.empty((rows, cols), dtype=np.int32)
        for i in range(rows):
            for j in range(cols):
                acc[i, j] = bias[n0 + j]
        for i in range(rows):
            arow = acc[i]
            for g in range(groups):
                # The 4 activations of group g, broadcast to every PE column.
                x0 = np.int32(a[m0 + i, 4 * g]) - a_zp
                x1 = np.int32(a[m0 + i, 4 * g + 1]) - a_zp
                x2 = np.int32(a[m0 + i, 4 * g + 2]) - a_zp
                x3 = np.int32(a[m0 + i, 4 * g + 3]) - a_zp
                v0 = vt[2 * g, n0:n0 + cols]
                v1 = vt[2 * g + 1, n0:n0 + cols]
                i0 = it[2 * g, n0:n0 + cols]
                i1 = it[2 * g + 1, n0:n0 + cols]
                for j in range(cols):
                    # 4:1 muxes: each 2-bit index selects the activation its value multiplies.
                    s0 = i0[j]
                    s1 = i1[j]
                    y0 = x0 if s0 == 0 else (x1 if s0 == 1 else (x2 if s0 == 2 else x3))
                    y1 = x0 if s1 == 0 else (x1 if s1 == 1 else (x2 if s1 == 2 else x3))
                    arow[j] += y0 * np.int32(v0[j]) + y1 * np.int32(v1[j])
        out[m0:m0 + rows, n0:n0 + cols] = acc
    return out


def sparse_gemm(
    a_codes: np.ndarray,
    values: np.ndarray,
    indices: np.ndarray,
    a_zero_point: int = 0,
    bias: np.ndarray | None = None,
    *,
    transposed: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """2:4 GEMM on the compressed form, as the hardware runs it.

    ``values``/``indices``: ``[N, K/2]`` kept int8 values and uint8 positions (0..3) in their group
    of 4 along K. ``acc[m, n] = bias[n] + sum_slot (a[m, 4*g + idx] - a_zp) * value``.
    ``transposed`` (contiguous ``[K/2, N]`` copies of both) skips the per-call transposes.
    """
    check_codes("sparse_gemm.a", a_codes, ACT_DTYPES, 2)
    check_sparse_operands("sparse_gemm", values, indices)
    k = a_codes.shape[1]
    if k != 2 * values.shape[1]:
        raise AccelsimError(
            f"sparse_gemm: a has K={k} but values {values.shape} encode K={2 * values.shape[1]}"
        )
    n = values.shape[0]
    bias32 = _bias_or_zeros("sparse_gemm", bias, n)
    # Only K/2 products reach each accumulator.
    check_accumulator_bound(
        "sparse_gemm", max_abs_shifted(a_codes, a_zero_point), max_abs_shifted(values), k // 2,
        max_abs_shifted(bias32),
    )
    out = np.empty((a_codes.shape[0], n), dtype=np.int32)
    if transposed is None:
        transposed = (np.ascontiguousarray(values.T), np.ascontiguousarray(indices.T))
    with _threads_for(a_codes.shape[0] * n * k // 2):
        return _sparse_gemm_kernel(
            np.ascontiguousarray(a_codes), np.int32(a_zero_point), *transposed, bias32, out
        )


# ---------------------------------------------------------------------------------------------
# Batched activation x activation matmuls (attention QK^T and PV)
# ---------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _bmm_kernel(a, a_zp, b, b_zp, out):  # pragma: no cover - compiled
    batch, m_size, k_size = a.shape
    n_size = b.shape[2]
    for t in prange(batch * m_size):
        bi = t // m_size
        row = out[bi, t % m_size]
        arow = a[bi, t % m_size]
        for j in range(n_size):
            row[j] = 0
        for k in range(k_size):
            av = np.int32(arow[k]) - a_zp
            brow = b[bi, k]
            for j in range(n_size):
                row[j] += av * (np.int32(brow[j]) - b_zp)
    return out


def int_bmm(
    a_codes: np.ndarray, b_codes: np.ndarray, a_zero_point: int = 0, b_zero_point: int = 0
) -> np.ndarray:
    """``acc[..., m, n] = sum_k (a[..., m, k] - a_zp) * (b[..., k, n] - b_zp)`` in int32.

    Leading (batch, head) dimensions must match; both operands are activation codes.
    """
    for name, arr in (("int_bmm.a", a_codes), ("int_bmm.b", b_codes)):
        check_codes_any_dim(name, arr, ACT_DTYPES)
        if arr.ndim < 2:
            raise AccelsimError(f"{name}: needs at least 2 dimensions, got shape {arr.shape}")
    lead = a_codes.shape[:-2]
    if b_codes.shape[:-2] != lead or a_codes.shape[-1] != b_codes.shape[-2]:
        raise AccelsimError(
            f"int_bmm: shapes {a_codes.shape} and {b_codes.shape} do not multiply "
            "(need [..., M, K] x [..., K, N] with equal leading dims)"
        )
    k = a_codes.shape[-1]
    check_accumulator_bound(
        "int_bmm", max_abs_shifted(a_codes, a_zero_point),
        max_abs_shifted(b_codes, b_zero_point), k, 0,
    )
    a3 = np.ascontiguousarray(a_codes.reshape(-1, *a_codes.shape[-2:]))
    b3 = np.ascontiguousarray(b_codes.reshape(-1, *b_codes.shape[-2:]))
    out = np.empty((a3.shape[0], a3.shape[1], b3.shape[2]), dtype=np.int32)
    with _threads_for(out.size * k):
        _bmm_kernel(a3, np.int32(a_zero_point), b3, np.int32(b_zero_point), out)
    return out.reshape(*lead, a3.shape[1], b3.shape[2])


# ---------------------------------------------------------------------------------------------
# Accumulator width: saturate or wrap the exact sums to accumulator_bits
# ---------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _clip_kernel(acc, low, high, wrap, out):  # pragma: no cover - compiled
    span = high - low + 1
    outside = 0
    for i in prange(acc.size):
        value = np.int64(acc[i])
        if value < low or value > high:
            outside += 1
            # wrap: Python's modulo is >= 0, so the low bits sign-extend from `low`.
            clamped = low if value < low else high
            value = (value - low) % span + low if wrap else clamped
        out[i] = value
    return outside


def clip_accumulators(acc: np.ndarray, bits: int, overflow: str) -> tuple[np.ndarray, int]:
    """``acc`` (exact int32 sums) as a ``bits``-wide signed accumulator holds them, and how many
    fell outside ``[-2^(bits-1), 2^(bits-1) - 1]``.

    ``saturate`` clamps to that range; ``wrap`` keeps the low ``bits`` bits as two's complement
    (``(acc - low) mod 2^bits + low``). ``bits >= 32`` holds every int32 sum: ``acc`` itself and
    0. Same shape, int32.
    """
    if overflow not in OVERFLOW_POLICIES:
        raise AccelsimError(f"overflow={overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}")
    check_codes_any_dim("clip_accumulators.acc", acc, np.int32)
    if bits >= 32:
        return acc, 0
    if bits < 2:
        raise AccelsimError(f"accumulator_bits={bits}; allowed: >= 2")
    low, high = twos_complement_range(bits)
    flat = np.ascontiguousarray(acc).reshape(-1)
    out = np.empty_like(flat)
    with _threads_for(flat.size):
        outside = _clip_kernel(flat, np.int64(low), np.int64(high), overflow == "wrap", out)
    return out.reshape(acc.shape), int(outside)


# ---------------------------------------------------------------------------------------------
# Requantization: integer multiplier + shift (single rounding)
# ---------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _requant_kernel(acc, m0, shift, zp, qmin, qmax, out):  # pragma: no cover - compiled
    rows, cols = acc.shape
    for i in prange(rows):
        for j in range(cols):
            n = shift[j]
            value = (np.int64(acc[i, j]) * m0[j] + (np.int64(1) << (n - 1))) >> n
            value += zp
            out[i, j] = min(max(value, qmin), qmax)
    return out


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray | float,
    zero_point: int,
    qmin: int,
    qmax: int,
) -> np.ndarray:
    """Requantize int32 accumulators ``[M, N]`` to output codes with integer arithmetic only.

    ``multiplier`` (the real ``s_in * s_w / s_out``, a scalar or per output column ``[N]``) is
    turned into ``(M0, n)`` by :func:`quantize_multiplier`; then
    ``out = clamp(zero_point + ((acc * M0 + 2^(n-1)) >> n), qmin, qmax)`` with int64 intermediates
    and an arithmetic (flooring) shift: one rounding, half-up (ties toward +inf).
    """
    check_codes("requantize.acc", acc, (np.int32,), 2)
    cols = acc.shape[1]
    reals = np.broadcast_to(np.asarray(multiplier, dtype=np.float64), (cols,))
    pairs = [quantize_multiplier(float(r)) for r in reals]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64)
    shift = np.array([p[1] for p in pairs], dtype=np.int64)
    out = np.empty(acc.shape, dtype=np.int32)
    with _threads_for(acc.size):
        _requant_kernel(acc, m0, shift, np.int64(zero_point), np.int64(qmin), np.int64(qmax),
                        out)
    return out.astype(code_dtype(qmin, qmax))
