"""The integer kernels against a plain numpy int64 matmul, on random shapes and magnitudes.

Shapes cross every dispatch and tile edge of :mod:`accelsim.ref.kernels`: M = 1 and narrow M
(the N-vectorized 2:4 kernel; the shuffle kernel's 1-row blocks below 8 rows), M >= 16 up to past
one 256-row tile (the M-vectorized 2:4 kernel), N across its 16-output blocks and the shuffle
kernel's 128-output tasks, M and N off the dense kernel's 4 x 4 blocks and 64-output tasks,
K off its 32-element vector steps, and magnitudes from 4-bit codes (long int16 partial sums)
through the largest products (int16 sums over one pass, or int32 only) to int16 codes far from
their zero point (the dense kernel's int32 lanes).
"""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.errors import AccelsimError
from accelsim.formats import twos_complement_range
from accelsim.ref import codes as C
from accelsim.ref import kernels as K
from accelsim.ref import simd

SETTINGS = settings(max_examples=30, deadline=None)

# (dtype, lowest code, highest code) of the activation codes; the zero point is drawn inside.
ACTS = {
    "uint4": (np.uint8, 0, 15),
    "uint8": (np.uint8, 0, 255),
    "int8": (np.int8, -128, 127),
    "int16_small": (np.int16, -300, 300),
    # |a - zp| up to 65535: past int16 lanes, so the dense GEMM runs on int32 lanes.
    "int16_wide": (np.int16, -32768, 32767),
}
# Both bmm operands are activations: two int16_wide codes overflow int32 at any K > 0.
ACTIVATION_PAIRS = [kind for kind in ACTS if kind != "int16_wide"]
WEIGHTS = {"int4": (-8, 7), "int8": (-128, 127), "int2": (-2, 1)}


def _int64_gemm(a: np.ndarray, zp: int, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    acc = (a.astype(np.int64) - zp) @ w.astype(np.int64).T
    return acc if bias is None else acc + bias


def _acts(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> tuple[np.ndarray, int]:
    dtype, low, high = ACTS[kind]
    return rng.integers(low, high + 1, shape).astype(dtype), int(rng.integers(low, high + 1))


def _two_four(rng: np.random.Generator, n: int, k: int, low: int, high: int) -> np.ndarray:
    w = rng.integers(low, high + 1, (n, k // 4, 4)).astype(np.int8)
    drop = np.argsort(rng.random((n, k // 4, 4)), axis=2)[:, :, :2]
    np.put_along_axis(w, drop, 0, axis=2)
    return w.reshape(n, k)


ms = st.one_of(st.just(1), st.integers(2, 15), st.integers(16, 300))
# The 2:4 shuffle kernel where the CPU has it, and the portable kernels always.
SHUFFLE = [False, True] if simd.mux_supported() else [False]


@SETTINGS
@given(m=ms, groups=st.integers(1, 24), n=st.integers(1, 140), act=st.sampled_from(list(ACTS)),
       weight=st.sampled_from(list(WEIGHTS)), with_bias=st.booleans(),
       shuffle=st.sampled_from(SHUFFLE), seed=st.integers(0, 2**16))
def test_sparse_gemm_equals_numpy_int64(m, groups, n, act, weight, with_bias, shuffle, seed):
    rng = np.random.default_rng(seed)
    k = 4 * groups
    a, zp = _acts(rng, (m, k), act)
    w = _two_four(rng, n, k, *WEIGHTS[weight])
    values, indices = C.compress_2to4(w)
    bias = rng.integers(-(2**20), 2**20, n).astype(np.int32) if with_bias else None
    prepared = K.prepare_sparse(values, indices, shuffle=shuffle)
    acc = K.sparse_gemm(a, values, indices, zp, bias, prepared=prepared)
    assert acc.dtype == np.int32 and acc.shape == (m, n) and acc.flags.c_contiguous
    np.testing.assert_array_equal(acc, _int64_gemm(a, zp, w, bias))


@SETTINGS
@given(m=ms, k=st.integers(1, 90), n=st.integers(1, 40), act=st.sampled_from(list(ACTS)),
       weight=st.sampled_from(list(WEIGHTS)), seed=st.integers(0, 2**16))
def test_int_gemm_equals_numpy_int64_with_odd_k(m, k, n, act, weight, seed):
    rng = np.random.default_rng(seed)
    a, zp = _acts(rng, (m, k), act)
    w = rng.integers(*WEIGHTS[weight], (n, k), endpoint=True).astype(np.int8)
    bias = rng.integers(-(2**20), 2**20, n).astype(np.int32)
    np.testing.assert_array_equal(K.int_gemm(a, w, zp, bias), _int64_gemm(a, zp, w, bias))


@pytest.mark.parametrize("shuffle", SHUFFLE)
@pytest.mark.parametrize("m", [7, 9])
def test_sparse_gemm_across_the_shuffle_kernels_group_passes(m, shuffle):
    # 130 groups: one past the shuffle kernel's 128 groups per pass; 129 outputs: one past a task.
    rng = np.random.default_rng(m)
    a, zp = _acts(rng, (m, 4 * 130), "uint8")
    w = _two_four(rng, 129, 4 * 130, -128, 127)
    values, indices = C.compress_2to4(w)
    bias = rng.integers(-(2**20), 2**20, 129).astype(np.int32)
    prepared = K.prepare_sparse(values, indices, shuffle=shuffle)
    np.testing.assert_array_equal(K.sparse_gemm(a, values, indices, zp, bias, prepared=prepared),
                                  _int64_gemm(a, zp, w, bias))


def test_the_shuffle_kernel_is_used_where_the_cpu_has_it():
    values, indices = C.compress_2to4(np.zeros((4, 8), np.int8))
    assert (K.prepare_sparse(values, indices).mux_controls is not None) == simd.mux_supported()
    assert K.prepare_sparse(values, indices, shuffle=False).mux_controls is None


@pytest.mark.parametrize("shuffle", SHUFFLE)
@pytest.mark.parametrize("weight", [-16, 16, -128, 127])
def test_sparse_gemm_largest_int16_partial_sums_are_exact(weight, shuffle):
    # |a - zp| = 255 with every kept value at `weight`: 16 x 255 = 4080 fills an int16 partial
    # sum to 8 x 4080 = 32640 after one pass of 8 slots; 128 x 255 fits no pass (int32 kernel).
    m, k, n = 40, 4 * 50, 33
    a = np.full((m, k), 255, np.uint8)
    w = np.zeros((n, k), np.int8)
    w[:, 0::4] = weight
    w[:, 3::4] = weight
    values, indices = C.compress_2to4(w)
    prepared = K.prepare_sparse(values, indices, shuffle=shuffle)
    acc = K.sparse_gemm(a, values, indices, 0, prepared=prepared)
    assert int(acc[0, 0]) == 255 * weight * (k // 2)
    np.testing.assert_array_equal(acc, _int64_gemm(a, 0, w, None))


@SETTINGS
@given(m=ms, groups=st.integers(1, 24), n=st.integers(1, 40), bits=st.integers(2, 24),
       overflow=st.sampled_from(["saturate", "wrap"]), seed=st.integers(0, 2**16))
def test_sparse_gemm_then_accumulator_width_equals_numpy(m, groups, n, bits, overflow, seed):
    rng = np.random.default_rng(seed)
    k = 4 * groups
    a, zp = _acts(rng, (m, k), "uint8")
    w = _two_four(rng, n, k, -8, 7)
    values, indices = C.compress_2to4(w)
    exact = _int64_gemm(a, zp, w, None)
    clipped, outside = K.clip_accumulators(K.sparse_gemm(a, values, indices, zp), bits, overflow)
    low, high = twos_complement_range(bits)
    expected = (np.clip(exact, low, high) if overflow == "saturate"
                else (exact - low) % (high - low + 1) + low)
    np.testing.assert_array_equal(clipped, expected)
    assert outside == int(np.count_nonzero((exact < low) | (exact > high)))


@SETTINGS
@given(batch=st.integers(1, 3), m=st.integers(1, 40), k=st.integers(1, 70),
       n=st.integers(1, 40), act=st.sampled_from(ACTIVATION_PAIRS), seed=st.integers(0, 2**16))
def test_int_bmm_equals_numpy_int64(batch, m, k, n, act, seed):
    rng = np.random.default_rng(seed)
    a, zp_a = _acts(rng, (batch, m, k), act)
    b, zp_b = _acts(rng, (batch, k, n), act)
    expected = np.matmul(a.astype(np.int64) - zp_a, b.astype(np.int64) - zp_b)
    np.testing.assert_array_equal(K.int_bmm(a, b, zp_a, zp_b), expected)


@pytest.mark.parametrize("shuffle", SHUFFLE)
def test_results_do_not_depend_on_the_thread_count(shuffle):
    rng = np.random.default_rng(3)
    a, zp = _acts(rng, (197, 768), "uint4")
    w = _two_four(rng, 300, 768, -8, 7)
    values, indices = C.compress_2to4(w)
    prepared = K.prepare_sparse(values, indices, shuffle=shuffle)
    previous = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            runs.append((K.sparse_gemm(a, values, indices, zp, prepared=prepared),
                         K.int_gemm(a, w, zp)))
    finally:
        numba.set_num_threads(previous)
    for sparse, dense in runs:
        np.testing.assert_array_equal(sparse, _int64_gemm(a, zp, w, None))
        np.testing.assert_array_equal(dense, sparse)


def test_thread_count_stays_within_cpus_tasks_and_the_callers_setting():
    big = 1 << 30
    assert K.thread_count(1, 100) == 1  # too small to wake the pool
    assert K.thread_count(big, 1) == 1  # one task
    assert 1 <= K.thread_count(big, 100) <= min(numba.get_num_threads(), K.idle_cpus())
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert K.thread_count(big, 100) == 1
    finally:
        numba.set_num_threads(previous)


def test_prepared_operands_must_be_those_of_the_arrays():
    rng = np.random.default_rng(0)
    values, indices = C.compress_2to4(_two_four(rng, 4, 8, -8, 7))
    other = K.prepare_sparse(values.copy(), indices.copy())
    with pytest.raises(AccelsimError, match="prepared operands") as info:
        K.sparse_gemm(np.zeros((2, 8), np.uint8), values, indices, prepared=other)
    assert "\n" not in str(info.value)
