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
output tiles, and check before running that int32 cannot overflow (``accumulator_bound``). The
inner loops of the dense GEMM and of the 2:4 shuffle kernel are LLVM vector IR
(:mod:`accelsim.ref.simd`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from accelsim.errors import AccelsimError
from accelsim.formats import (
    OVERFLOW_POLICIES,
    SPARSE_GROUP,
    SPARSE_KEPT,
    twos_complement_range,
)
from accelsim.ref import simd
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

# The narrow-M 2:4 kernel's task: 8 rows x 1024 int32 columns = 32 KiB of accumulators (L1), and
# a K/2 x 1024 block of kept values (L2) reused by all 8 rows. Chosen by measurement on
# 197x768x3072 (benchmarks/bench_ref.py), like every tile size here; any tiling gives the same
# integers.
_TILE_M = 8
_TILE_N = 1024
# Dense kernel task: 64 x 64 outputs (48 tasks on 197x768x3072). Chosen by measurement too.
_DENSE_TILE = 64
_BLOCK_ROWS, _BLOCK_COLS = simd.BLOCK
_NARROW_ROWS, _NARROW_COLS = simd.NARROW_BLOCK
_DOT_SUMS = max(_BLOCK_ROWS * _BLOCK_COLS, _NARROW_ROWS * _NARROW_COLS)
_W_ROW_MULTIPLE = max(_BLOCK_COLS, _NARROW_COLS)
# The 2:4 shuffle kernel: tasks of 128 outputs, 128 groups (512 of K) per pass over the rows.
_MUX_ROWS, _MUX_VECTORS = simd.MUX_BLOCK
_MUX_NARROW_ROWS, _MUX_NARROW_VECTORS = simd.MUX_NARROW_BLOCK
_MUX_TILE_N = 128
_MUX_GROUPS = 128
# Below this many MACs a call runs on one thread: waking the pool costs 0.1-1.5 ms on a busy
# 2-core machine, more than the whole GEMM (tiny models, attention of short sequences).
_PARALLEL_MIN_MACS = 1 << 21
# The wide-M 2:4 kernel: M in int16 lanes of a 512-bit vector, tasks of 16 outputs x 256 rows,
# 8 kept values per pass over the partial sums. From M = 16 it beats the narrow kernel.
_LANES = 32
_WIDE_BLOCK_N = 16
_WIDE_TILE_M = 256
_WIDE_BUFFER = _WIDE_BLOCK_N * _WIDE_TILE_M
_PASS = 8
_WIDE_M = 16
INT16_MAX = 2**15 - 1


# Idle OpenMP workers sleep instead of spinning. On a machine shared with other jobs a spinning
# worker holds a core the busy thread then waits for: under load, 2 threads ran 2-3x slower than
# 1 with spinning, the same as 1 without. Read when numba's OpenMP pool
# starts, i.e. at the first parallel call, which comes after this import; a value set by the
# user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_LOADAVG = Path("/proc/loadavg")


def idle_cpus() -> int:
    """CPUs of this process's affinity set that no other runnable thread wants right now: the
    affinity size less the runnable threads beyond the caller (``/proc/loadavg``), at least 1.
    Without ``/proc/loadavg`` (not Linux), the affinity size."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        runnable = int(_LOADAVG.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cpus
    return max(1, min(cpus, cpus + 1 - runnable))


def thread_count(macs: int, tasks: int) -> int:
    """Threads for one kernel call: 1 below ``_PARALLEL_MIN_MACS``, else at most the caller's
    numba thread count, the parallel ``tasks`` and :func:`idle_cpus`. A thread without a core of
    its own would make every call wait for the time slice it is descheduled for."""
    if macs < _PARALLEL_MIN_MACS or tasks < 2:
        return 1
    return max(1, min(numba.get_num_threads(), tasks, idle_cpus()))


@contextmanager
def _threads_for(macs: int, tasks: int) -> Iterator[None]:
    previous = numba.get_num_threads()
    numba.set_num_threads(thread_count(macs, tasks))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@intrinsic
def _stack_buffer(typingctx, count, dtype):  # pragma: no cover - compiled
    """A pointer to ``count`` (a compile-time constant) elements of ``dtype`` on the stack of the
    calling thread, for ``numba.carray``."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    size = ir.Constant(ir.IntType(64), count.literal_value)

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=size)

    return types.CPointer(dtype.dtype)(count, dtype), codegen


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


@dataclass(frozen=True, eq=False)
class DenseOperands:
    """Dense weight codes in the form the dense kernel streams, made once per layer
    (:func:`prepare_dense`): ``[N, K]`` zero-padded to whole blocks of rows (a multiple of every
    ``simd`` block's columns) and whole vector steps along K."""

    codes: np.ndarray  # int8 [N, K], as given
    padded: np.ndarray  # int8 [N padded, K padded]
    max_abs: int  # max |code|


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


_CACHE_LINE = 64  # bytes


def _aligned(shape: tuple[int, ...], dtype: type, *, zeroed: bool = True) -> np.ndarray:
    """A new array whose data starts on a cache line, so that the kernels' 64-byte vector loads
    and stores of whole rows never straddle two lines (numpy aligns to 16 bytes only: at a
    16-byte offset the 2:4 kernel ran at 1.35x the dense one's speed, aligned at 1.7x;
    benchmarks/README.md)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = (np.zeros if zeroed else np.empty)(size + _CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % _CACHE_LINE
    return raw[start:start + size].view(dtype).reshape(shape)


def _shifted(a_codes: np.ndarray, zero_point: int, row_multiple: int, cols: int,
             dtype: type) -> np.ndarray:
    """``a - zero_point`` as ``dtype``, zero-padded to whole ``row_multiple`` rows and ``cols``
    columns."""
    m, k = a_codes.shape
    x = _aligned((_round_up(m, row_multiple), cols), dtype)
    np.subtract(a_codes, zero_point, out=x[:m, :k], dtype=np.int32, casting="unsafe")
    return x


def prepare_dense(w_codes: np.ndarray, name: str = "int_gemm") -> DenseOperands:
    """Check dense weight codes (int8 ``[N, K]``) and derive the kernel's padded form (its K a
    multiple of every vector step, so it serves int16 and int32 activations alike)."""
    check_codes(f"{name}.w", w_codes, (np.int8,), 2)
    n, k = w_codes.shape
    padded = _aligned((_round_up(n, _W_ROW_MULTIPLE), _round_up(k, simd.K_STEP)), np.int8)
    padded[:n, :k] = w_codes
    return DenseOperands(codes=w_codes, padded=padded, max_abs=max_abs_shifted(w_codes))


@numba.njit(cache=True, nogil=True)
def _dense_task(x, w, bias, out, sums, m_first, n_first, rows, cols):  # pragma: no cover
    # One task's outputs in rows x cols blocks (compile-time constants); each block of weight
    # rows stays in L1 while the activation rows pass.
    numba.literally(rows)
    numba.literally(cols)
    m_size, n_size = out.shape
    for n0 in range(n_first, min(w.shape[0], n_first + _DENSE_TILE), cols):
        for m0 in range(m_first, min(m_size, m_first + _DENSE_TILE), rows):
            simd.dot_block(x, w, m0, n0, sums, rows, cols)
            for i in range(min(rows, m_size - m0)):
                for j in range(min(cols, n_size - n0)):
                    out[m0 + i, n0 + j] = bias[n0 + j] + sums[i * cols + j]


@numba.njit(parallel=True, cache=True, nogil=True)
def _dense_kernel(x, w, bias, out):  # pragma: no cover - compiled
    # x: shifted activations [M padded, K padded], int16 (int32 when |a - zp| needs it); w: int8
    # weights [N padded, K padded]. Tasks of _DENSE_TILE x _DENSE_TILE outputs.
    tiles_m = (out.shape[0] + _DENSE_TILE - 1) // _DENSE_TILE
    tiles_n = (w.shape[0] + _DENSE_TILE - 1) // _DENSE_TILE
    narrow = out.shape[0] < _BLOCK_ROWS
    for task in prange(tiles_m * tiles_n):
        m_first = (task // tiles_n) * _DENSE_TILE
        n_first = (task % tiles_n) * _DENSE_TILE
        sums = numba.carray(_stack_buffer(_DOT_SUMS, np.int32), _DOT_SUMS)
        if narrow:
            _dense_task(x, w, bias, out, sums, m_first, n_first, _NARROW_ROWS, _NARROW_COLS)
        else:
            _dense_task(x, w, bias, out, sums, m_first, n_first, _BLOCK_ROWS, _BLOCK_COLS)
    return out


def int_gemm(
    a_codes: np.ndarray,
    w_codes: np.ndarray,
    a_zero_point: int = 0,
    bias: np.ndarray | None = None,
    *,
    prepared: DenseOperands | None = None,
) -> np.ndarray:
    """``acc[m, n] = bias[n] + sum_k (a[m, k] - a_zp) * w[n, k]`` in int32.

    ``a_codes``: int8/uint8/int16 ``[M, K]``; ``w_codes``: int8 ``[N, K]``; ``bias``: int32
    ``[N]`` or ``None``. ``prepared`` (:func:`prepare_dense` of the same ``w_codes``, kept with
    the layer) skips the per-call weight conversion.
    """
    check_codes("int_gemm.a", a_codes, ACT_DTYPES, 2)
    if prepared is None:
        prepared = prepare_dense(w_codes)
    elif prepared.codes is not w_codes:
        raise AccelsimError("int_gemm: prepared operands belong to other weights; "
                            "allowed: prepare_dense(w_codes) of this array")
    if a_codes.shape[1] != w_codes.shape[1]:
        raise AccelsimError(
            f"int_gemm: reduction sizes differ, a {a_codes.shape} vs w {w_codes.shape} "
            "(w is [N, K])"
        )
    n = w_codes.shape[0]
    bias32 = _bias_or_zeros("int_gemm", bias, n)
    max_a = max_abs_shifted(a_codes, a_zero_point)
    check_accumulator_bound("int_gemm", max_a, prepared.max_abs, a_codes.shape[1],
                            max_abs_shifted(bias32))
    # int16 lanes (pairs of products per int32 lane) whenever a - zp fits them: always for 8-bit
    # codes; int16 codes far from their zero point take int32 lanes.
    lane = np.int16 if max_a <= INT16_MAX else np.int32
    m, k = a_codes.shape
    # x as long as the weights' padded K: a multiple of either lane type's step.
    w = prepared.padded
    x = _shifted(a_codes, a_zero_point, _BLOCK_ROWS, w.shape[1], lane)
    out = np.empty((m, n), dtype=np.int32)
    tasks = -(-x.shape[0] // _DENSE_TILE) * -(-w.shape[0] // _DENSE_TILE)
    with _threads_for(m * n * k, tasks):
        return _dense_kernel(x, w, bias32, out)


# ---------------------------------------------------------------------------------------------
# 2:4 sparse: the index-mux GEMM on the compressed form
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SparseOperands:
    """2:4 weights in the forms the kernels stream, derived once per layer (:func:`prepare_sparse`).

    ``mux_controls``/``mux_values`` are the shuffle kernel's (:func:`simd.mux_block`): per group
    and output the shuffle bytes of the kept pair and its two values, outputs padded to whole
    tasks; ``None`` where the CPU lacks the shuffle. The portable kernels' forms are derived on
    first use (on a CPU with the shuffle, only int16 codes far from their zero point need them):
    ``rows[n, s] = 4 * (s // 2) + indices[n, s]`` is the activation column (K position) that kept
    value ``s`` of output ``n`` multiplies, the 4:1 mux decoded once instead of on every MAC;
    ``values_t``/``indices_t`` are the ``[K/2, N]`` copies of the narrow-M kernel.
    """

    values: np.ndarray  # int8 [N, K/2]
    indices: np.ndarray  # uint8 [N, K/2]
    max_abs: int  # max |value|
    mux_controls: np.ndarray | None  # uint8 [K/4, N padded * 4]
    mux_values: np.ndarray | None  # int16 [K/4, N padded * 2]

    @functools.cached_property
    def rows(self) -> np.ndarray:  # int32 [N, K/2]
        slot = np.arange(self.values.shape[1], dtype=np.int32)
        return np.ascontiguousarray(
            (SPARSE_GROUP * (slot // SPARSE_KEPT))[None, :] + self.indices.astype(np.int32))

    @functools.cached_property
    def values16(self) -> np.ndarray:  # int16 [N, K/2]
        return self.values.astype(np.int16)

    @functools.cached_property
    def values_t(self) -> np.ndarray:  # int8 [K/2, N]
        return np.ascontiguousarray(self.values.T)

    @functools.cached_property
    def indices_t(self) -> np.ndarray:  # uint8 [K/2, N]
        return np.ascontiguousarray(self.indices.T)


def prepare_sparse(values: np.ndarray, indices: np.ndarray, name: str = "sparse_gemm", *,
                   shuffle: bool | None = None) -> SparseOperands:
    """Check 2:4 operands (``[N, K/2]`` int8 values, uint8 indices); derive their kernel forms.

    ``shuffle``: derive the shuffle kernel's forms (default: where :func:`simd.mux_supported`);
    ``False`` keeps a layer on the portable kernels.
    """
    check_sparse_operands(name, values, indices)
    controls = mux_values = None
    if simd.mux_supported() if shuffle is None else shuffle:
        n, groups = values.shape[0], values.shape[1] // SPARSE_KEPT
        n_padded = _round_up(n, _MUX_TILE_N)
        first, second = (indices[:, s::SPARSE_KEPT] * 2 for s in range(SPARSE_KEPT))
        pairs = _aligned((groups, n_padded, 4), np.uint8)  # padding outputs pick byte 0
        pairs[:, :n] = np.stack([first, first + 1, second, second + 1], axis=2).transpose(1, 0, 2)
        kept = _aligned((groups, n_padded, SPARSE_KEPT), np.int16)
        kept[:, :n] = values.reshape(n, groups, SPARSE_KEPT).transpose(1, 0, 2)
        controls, mux_values = pairs.reshape(groups, -1), kept.reshape(groups, -1)
    return SparseOperands(values=values, indices=indices, max_abs=max_abs_shifted(values),
                          mux_controls=controls, mux_values=mux_values)


@numba.njit(cache=True, nogil=True)
def _mux_task(table, controls, values, out, n_first, rows, vectors):  # pragma: no cover
    numba.literally(rows)
    numba.literally(vectors)
    groups = table.shape[1]
    for g0 in range(0, groups, _MUX_GROUPS):
        g1 = min(groups, g0 + _MUX_GROUPS)
        for n0 in range(n_first, n_first + _MUX_TILE_N, simd.LANES * vectors):
            for m0 in range(0, table.shape[0], rows):
                simd.mux_block(table, controls, values, m0, n0, out, g0, g1, rows, vectors)


@numba.njit(parallel=True, cache=True, nogil=True)
def _mux_kernel(table, controls, values, bias, out):  # pragma: no cover - compiled
    # Tasks of _MUX_TILE_N outputs; within one, _MUX_GROUPS groups at a time, so the controls and
    # values of a block of outputs (64 outputs x 128 groups x 8 bytes = 64 KiB) stay in L1/L2
    # while every row passes. bias: padded like out.
    narrow = table.shape[0] < _MUX_ROWS
    for task in prange(out.shape[1] // _MUX_TILE_N):
        n_first = task * _MUX_TILE_N
        for m in range(out.shape[0]):
            out[m, n_first:n_first + _MUX_TILE_N] = bias[n_first:n_first + _MUX_TILE_N]
        if narrow:
            _mux_task(table, controls, values, out, n_first, _MUX_NARROW_ROWS,
                      _MUX_NARROW_VECTORS)
        else:
            _mux_task(table, controls, values, out, n_first, _MUX_ROWS, _MUX_VECTORS)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _sparse_gemm_kernel(a, a_zp, vt, it, bias, out):  # pragma: no cover - compiled
    # Narrow M (a few rows): vectorized along N. vt/it: kept values and indices transposed to
    # [K/2, N]; slots 2g and 2g+1 belong to group g.
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


@numba.njit(parallel=True, cache=True, nogil=True)
def _sparse_rows_kernel(xt, rows, vals, flush, bias, out):  # pragma: no cover - compiled
    # Wide M: vectorized along M. xt: shifted activations transposed to [K, M padded to _LANES]
    # int16; output n gathers row rows[n, s] of xt and scales it by vals[n, s]. Products and
    # their partial sums over `flush` slots (a multiple of _PASS) fit int16 (the caller bounds
    # them), so 32 MACs are one 512-bit multiply and add; each partial sum then adds into int32.
    m_pad = xt.shape[1]
    n_size, slots = rows.shape
    m_size = out.shape[0]
    tiles_m = (m_pad + _WIDE_TILE_M - 1) // _WIDE_TILE_M
    blocks_n = (n_size + _WIDE_BLOCK_N - 1) // _WIDE_BLOCK_N
    for task in prange(blocks_n * tiles_m):
        n0 = (task // tiles_m) * _WIDE_BLOCK_N
        m0 = (task % tiles_m) * _WIDE_TILE_M
        cols = min(n_size, n0 + _WIDE_BLOCK_N) - n0
        width = min(m_pad, m0 + _WIDE_TILE_M) - m0
        # Stack buffers: the compiler sees they alias nothing, so the inner loop runs without
        # per-pass overlap checks (a third faster on 197 x 768 x 3072).
        part = numba.carray(_stack_buffer(_WIDE_BUFFER, np.int16), (_WIDE_BLOCK_N, _WIDE_TILE_M))
        acc = numba.carray(_stack_buffer(_WIDE_BUFFER, np.int32), (_WIDE_BLOCK_N, _WIDE_TILE_M))
        for j in range(cols):
            for m in range(width):
                part[j, m] = 0
                acc[j, m] = bias[n0 + j]
        s = 0
        while s < slots:
            stop = min(slots, s + flush)
            # One pass: 8 kept values of every output of the block, while the 16 rows of
            # activations their 4 groups can select stay in L1.
            while s + _PASS <= stop:
                for j in range(cols):
                    n = n0 + j
                    p = part[j]
                    r0 = xt[rows[n, s], m0:m0 + width]
                    r1 = xt[rows[n, s + 1], m0:m0 + width]
                    r2 = xt[rows[n, s + 2], m0:m0 + width]
                    r3 = xt[rows[n, s + 3], m0:m0 + width]
                    r4 = xt[rows[n, s + 4], m0:m0 + width]
                    r5 = xt[rows[n, s + 5], m0:m0 + width]
                    r6 = xt[rows[n, s + 6], m0:m0 + width]
                    r7 = xt[rows[n, s + 7], m0:m0 + width]
                    v0 = vals[n, s]
                    v1 = vals[n, s + 1]
                    v2 = vals[n, s + 2]
                    v3 = vals[n, s + 3]
                    v4 = vals[n, s + 4]
                    v5 = vals[n, s + 5]
                    v6 = vals[n, s + 6]
                    v7 = vals[n, s + 7]
                    for m in range(width):
                        p[m] = np.int16(
                            p[m] + np.int16(r0[m] * v0) + np.int16(r1[m] * v1)
                            + np.int16(r2[m] * v2) + np.int16(r3[m] * v3)
                            + np.int16(r4[m] * v4) + np.int16(r5[m] * v5)
                            + np.int16(r6[m] * v6) + np.int16(r7[m] * v7)
                        )
                s += _PASS
            while s < stop:
                for j in range(cols):
                    n = n0 + j
                    p = part[j]
                    r0 = xt[rows[n, s], m0:m0 + width]
                    v0 = vals[n, s]
                    for m in range(width):
                        p[m] = np.int16(p[m] + np.int16(r0[m] * v0))
                s += 1
            for j in range(cols):
                for m in range(width):
                    acc[j, m] += part[j, m]
                    part[j, m] = 0
        for m in range(min(m_size - m0, width)):
            for j in range(cols):
                out[m0 + m, n0 + j] = acc[j, m]
    return out


def _shifted_transpose(a: np.ndarray, zero_point: int) -> np.ndarray:
    """``(a - zero_point).T`` as int16 ``[K, M padded to _LANES]`` (zero padding rows)."""
    m, k = a.shape
    xt = _aligned((k, -(-m // _LANES) * _LANES), np.int16)
    xt[:, :m] = a.T
    xt[:, :m] -= np.int16(zero_point)
    return xt


def _int16_flush(max_a: int, max_w: int, slots: int) -> int:
    """How many slots' products an int16 partial sum surely holds, in whole passes (0: not one
    pass; the int32 kernel runs instead)."""
    product = max_a * max_w
    if product == 0:
        return max(_PASS, -(-slots // _PASS) * _PASS)
    return INT16_MAX // product // _PASS * _PASS


def sparse_gemm(
    a_codes: np.ndarray,
    values: np.ndarray,
    indices: np.ndarray,
    a_zero_point: int = 0,
    bias: np.ndarray | None = None,
    *,
    prepared: SparseOperands | None = None,
) -> np.ndarray:
    """2:4 GEMM on the compressed form, as the hardware runs it.

    ``values``/``indices``: ``[N, K/2]`` kept int8 values and uint8 positions (0..3) in their group
    of 4 along K. ``acc[m, n] = bias[n] + sum_slot (a[m, 4*g + idx] - a_zp) * value``.
    ``prepared`` (:func:`prepare_sparse` of the same two arrays, kept with the layer) skips the
    per-call checks and derivations.
    """
    check_codes("sparse_gemm.a", a_codes, ACT_DTYPES, 2)
    if prepared is None:
        prepared = prepare_sparse(values, indices)
    elif prepared.values is not values or prepared.indices is not indices:
        raise AccelsimError("sparse_gemm: prepared operands belong to other values/indices; "
                            "allowed: prepare_sparse(values, indices) of these arrays")
    k = a_codes.shape[1]
    if k != 2 * values.shape[1]:
        raise AccelsimError(
            f"sparse_gemm: a has K={k} but values {values.shape} encode K={2 * values.shape[1]}"
        )
    m, n = a_codes.shape[0], values.shape[0]
    bias32 = _bias_or_zeros("sparse_gemm", bias, n)
    max_a = max_abs_shifted(a_codes, a_zero_point)
    # Only K/2 products reach each accumulator.
    check_accumulator_bound("sparse_gemm", max_a, prepared.max_abs, k // 2,
                            max_abs_shifted(bias32))
    if prepared.mux_controls is not None and max_a <= INT16_MAX:
        rows = _MUX_ROWS if m >= _MUX_ROWS else _MUX_NARROW_ROWS
        table = _shifted(a_codes, a_zero_point, rows, k, np.int16).view(np.int64)
        acc = _aligned((table.shape[0], prepared.mux_controls.shape[1] // 4), np.int32,
                       zeroed=False)
        with _threads_for(m * n * k // 2, acc.shape[1] // _MUX_TILE_N):
            _mux_kernel(table, prepared.mux_controls, prepared.mux_values,
                        np.pad(bias32, (0, acc.shape[1] - n)), acc)
        return acc[:m, :n] if acc.shape[1] == n else np.ascontiguousarray(acc[:m, :n])
    out = np.empty((m, n), dtype=np.int32)
    flush = _int16_flush(max_a, prepared.max_abs, k // 2)
    wide = m >= _WIDE_M and flush > 0
    tasks = (-(-n // _WIDE_BLOCK_N) * -(-m // _WIDE_TILE_M) if wide
             else -(-m // _TILE_M) * -(-n // _TILE_N))
    with _threads_for(m * n * k // 2, tasks):
        if wide:
            return _sparse_rows_kernel(_shifted_transpose(a_codes, a_zero_point), prepared.rows,
                                       prepared.values16, flush, bias32, out)
        return _sparse_gemm_kernel(np.ascontiguousarray(a_codes), np.int32(a_zero_point),
                                   prepared.values_t, prepared.indices_t, bias32, out)


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
    with _threads_for(out.size * k, a3.shape[0] * a3.shape[1]):
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
    with _threads_for(flat.size, flat.size):
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


@functools.lru_cache(maxsize=1024)
def _multiplier_pairs(reals: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(M0, n) int64 arrays of float64 multipliers (their bytes): a layer requantizes by the same
    per-column multipliers on every call, and converting them one by one in Python cost a
    quarter of a ViT-B/16 forward."""
    pairs = [quantize_multiplier(float(r)) for r in np.frombuffer(reals, dtype=np.float64)]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64)
    shift = np.array([p[1] for p in pairs], dtype=np.int64)
    m0.flags.writeable = shift.flags.writeable = False
    return m0, shift


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
    reals = np.ascontiguousarray(
        np.broadcast_to(np.asarray(multiplier, dtype=np.float64), (cols,)))
    m0, shift = _multiplier_pairs(reals.tobytes())
    out = np.empty(acc.shape, dtype=np.int32)
    with _threads_for(acc.size, acc.shape[0]):
        _requant_kernel(acc, m0, shift, np.int64(zero_point), np.int64(qmin), np.int64(qmax),
                        out)
    return out.astype(code_dtype(qmin, qmax))
