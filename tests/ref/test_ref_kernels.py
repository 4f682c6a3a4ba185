"""Integer kernels against independent oracles (float64 BLAS on codes, exact rationals)."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.compress.quant import quantize_codes
from accelsim.errors import AccelsimError
from accelsim.ref import codes as C
from accelsim.ref import kernels as K

SETTINGS = settings(max_examples=40, deadline=None)


def _oracle(a: np.ndarray, zp: int, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """float64 BLAS on the codes: exact, every partial sum is an integer below 2^53."""
    acc = (a.astype(np.float64) - zp) @ w.astype(np.float64).T
    if bias is not None:
        acc += bias
    return acc


def _act(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> tuple[np.ndarray, int]:
    if kind == "uint8":  # pact2 8-bit: codes 0..255 with a zero point
        return rng.integers(0, 256, shape).astype(np.uint8), int(rng.integers(0, 256))
    if kind == "uint4":  # pact2 4-bit: codes 0..15
        return rng.integers(0, 16, shape).astype(np.uint8), int(rng.integers(0, 16))
    return rng.integers(-127, 128, shape).astype(np.int8), 0  # symmetric 8-bit


def _two_four(rng: np.random.Generator, n: int, k: int, low: int = -7, high: int = 7):
    w = rng.integers(low, high + 1, (n, k // 4, 4)).astype(np.int8)
    drop = np.argsort(rng.random((n, k // 4, 4)), axis=2)[:, :, :2]
    np.put_along_axis(w, drop, 0, axis=2)
    return w.reshape(n, k)


dims = st.integers(min_value=1, max_value=70)
act_kinds = st.sampled_from(["uint8", "uint4", "int8"])
weight_ranges = st.sampled_from([(-7, 7), (-8, 7), (-127, 127)])


@SETTINGS
@given(m=dims, k=dims, n=dims, kind=act_kinds, wr=weight_ranges, seed=st.integers(0, 2**16))
def test_int_gemm_equals_float64_blas(m, k, n, kind, wr, seed):
    rng = np.random.default_rng(seed)
    a, zp = _act(rng, (m, k), kind)
    w = rng.integers(wr[0], wr[1] + 1, (n, k)).astype(np.int8)
    bias = rng.integers(-(2**20), 2**20, n).astype(np.int32)
    acc = K.int_gemm(a, w, zp, bias)
    assert acc.dtype == np.int32 and acc.shape == (m, n)
    np.testing.assert_array_equal(acc, _oracle(a, zp, w, bias))


def test_int_gemm_across_tile_edges_and_bert_shapes():
    rng = np.random.default_rng(1)
    # One past each edge of the dense kernel (4 x 4 blocks, 64 x 64 tasks, 32-element steps
    # along K), one short of them, and the ViT-B/16 FFN shape.
    for m, k, n in [(65, 33, 65), (63, 31, 63), (5, 64, 4), (197, 768, 3072), (1, 3, 1)]:
        a, zp = _act(rng, (m, k), "uint8")
        w = rng.integers(-7, 8, (n, k)).astype(np.int8)
        np.testing.assert_array_equal(K.int_gemm(a, w, zp), _oracle(a, zp, w))


def test_int_gemm_worst_case_magnitudes_do_not_overflow():
    # |a - zp| = 255, |w| = 127: the largest int8 x uint8 product, K at the documented limit.
    k = C.max_supported_k(act_bits=8, weight_bits=8)
    assert k == (2**31 - 1) // (255 * 128)
    k_test = 4096
    a = np.full((2, k_test), 255, np.uint8)
    w = np.full((3, k_test), -127, np.int8)
    acc = K.int_gemm(a, w, 0)
    assert int(acc[0, 0]) == -255 * 127 * k_test


def test_int_gemm_rejects_overflowing_shape():
    a = np.full((1, 70_000), 255, np.uint8)
    w = np.full((1, 70_000), 127, np.int8)
    with pytest.raises(AccelsimError, match=r"2\^31-1") as info:
        K.int_gemm(a, w, 0)
    assert "\n" not in str(info.value)


def test_int_gemm_prepared_weights_give_the_same_sums_and_must_match():
    rng = np.random.default_rng(3)
    a, zp = _act(rng, (7, 40), "uint8")
    w = rng.integers(-127, 128, (9, 40)).astype(np.int8)
    prepared = K.prepare_dense(w)
    np.testing.assert_array_equal(K.int_gemm(a, w, zp, prepared=prepared), _oracle(a, zp, w))
    with pytest.raises(AccelsimError, match="prepared operands belong to other weights"):
        K.int_gemm(a, w.copy(), zp, prepared=prepared)


def test_kernel_operands_start_on_a_cache_line():
    # The vector loads of whole rows must not straddle lines: the 2:4 kernel's speed depended
    # on where numpy happened to place these arrays (benchmarks/README.md).
    rng = np.random.default_rng(4)
    w = _two_four(rng, 9, 40)
    values, indices = C.compress_2to4(w)
    sparse = K.prepare_sparse(values, indices, shuffle=True)
    a = rng.integers(0, 16, (5, 40)).astype(np.uint8)
    arrays = [K.prepare_dense(w).padded, sparse.mux_controls, sparse.mux_values,
              K._shifted(a, 3, 4, 64, np.int16), K._shifted_transpose(a, 3)]
    for shape, dtype in (((3, 5), np.int16), ((7,), np.uint8), ((2, 3, 4), np.int64)):
        arrays.append(K._aligned(shape, dtype))
        assert arrays[-1].shape == shape and arrays[-1].dtype == dtype
        assert not arrays[-1].any()
    assert [a.ctypes.data % 64 for a in arrays] == [0] * len(arrays)
    assert all(a.flags.c_contiguous for a in arrays)


def test_int_gemm_rejects_wrong_dtype_and_shape():
    with pytest.raises(AccelsimError, match="dtype int32"):
        K.int_gemm(np.zeros((2, 4), np.int32), np.zeros((3, 4), np.int8))
    with pytest.raises(AccelsimError, match="reduction sizes differ"):
        K.int_gemm(np.zeros((2, 4), np.int8), np.zeros((3, 5), np.int8))
    with pytest.raises(AccelsimError, match="bias"):
        K.int_gemm(np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8), 0, np.zeros(3))


@SETTINGS
@given(m=dims, groups=st.integers(1, 40), n=dims, kind=act_kinds, seed=st.integers(0, 2**16))
def test_sparse_gemm_equals_dense_with_zeros_in_place(m, groups, n, kind, seed):
    rng = np.random.default_rng(seed)
    k = 4 * groups
    a, zp = _act(rng, (m, k), kind)
    w = _two_four(rng, n, k)
    values, indices = C.compress_2to4(w)
    bias = rng.integers(-1000, 1000, n).astype(np.int32)
    sparse = K.sparse_gemm(a, values, indices, zp, bias)
    np.testing.assert_array_equal(sparse, K.int_gemm(a, w, zp, bias))
    np.testing.assert_array_equal(sparse, _oracle(a, zp, w, bias))


def test_sparse_gemm_index_selects_the_activation():
    # One group: activations 10, 20, 30, 40; kept slots at positions 1 and 3.
    a = np.array([[10, 20, 30, 40]], np.int8)
    values = np.array([[2, -3]], np.int8)
    indices = np.array([[1, 3]], np.uint8)
    assert int(K.sparse_gemm(a, values, indices)[0, 0]) == 2 * 20 - 3 * 40


@SETTINGS
@given(n=dims, groups=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_compress_decompress_and_packing_round_trip(n, groups, seed):
    rng = np.random.default_rng(seed)
    w = _two_four(rng, n, 4 * groups, -8, 7)
    values, indices = C.compress_2to4(w)
    assert values.shape == indices.shape == (n, 2 * groups)
    np.testing.assert_array_equal(C.decompress_2to4(values, indices), w)
    packed_v = C.pack_int4(values)
    packed_i = C.pack_indices_2bit(indices)
    assert packed_v.shape == (n, groups) and packed_i.shape == (n, (2 * groups + 3) // 4)
    np.testing.assert_array_equal(C.unpack_int4(packed_v, 2 * groups), values)
    np.testing.assert_array_equal(C.unpack_indices_2bit(packed_i, 2 * groups), indices)
    dense_odd = rng.integers(-8, 8, (n, 2 * groups + 1)).astype(np.int8)
    np.testing.assert_array_equal(
        C.unpack_int4(C.pack_int4(dense_odd), dense_odd.shape[1]), dense_odd
    )


def test_packing_bit_layout_is_lsb_first():
    assert C.pack_int4(np.array([1, -1, -8, 7], np.int8)).tolist() == [0xF1, 0x78]
    assert C.pack_indices_2bit(np.array([0, 1, 2, 3, 3], np.uint8)).tolist() == [0xE4, 0x03]


def test_compress_fills_short_groups_with_lowest_zero_positions():
    w = np.array([[0, 0, 5, 0, 0, 0, 0, 0]], np.int8)
    values, indices = C.compress_2to4(w)
    assert values.tolist() == [[0, 5, 0, 0]]
    assert indices.tolist() == [[0, 2, 0, 1]]


def test_non_2to4_tensor_is_rejected_in_one_line():
    w = np.array([[1, 2, 3, 0, 1, 0, 0, 1]], np.int8)
    with pytest.raises(AccelsimError, match=r"row 0, group 0 .* 3 non-zeros") as info:
        C.compress_2to4(w, name="layer.weight")
    assert "\n" not in str(info.value) and "layer.weight" in str(info.value)


def test_sparse_indices_must_be_valid():
    values = np.zeros((1, 2), np.int8)
    with pytest.raises(AccelsimError, match="distinct and ascending"):
        K.sparse_gemm(np.zeros((1, 4), np.int8), values, np.array([[2, 1]], np.uint8))
    with pytest.raises(AccelsimError, match="0..3"):
        C.decompress_2to4(values, np.array([[1, 4]], np.uint8))


def test_pack_int4_rejects_out_of_range_codes():
    with pytest.raises(AccelsimError, match="-8..7"):
        C.pack_int4(np.array([9], np.int8))


@SETTINGS
@given(
    batch=st.integers(1, 3), m=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 20),
    kind=act_kinds, seed=st.integers(0, 2**16),
)
def test_int_bmm_equals_float64(batch, m, k, n, kind, seed):
    rng = np.random.default_rng(seed)
    a, zp_a = _act(rng, (batch, 2, m, k), kind)
    b, zp_b = _act(rng, (batch, 2, k, n), kind)
    expected = np.matmul(a.astype(np.float64) - zp_a, b.astype(np.float64) - zp_b)
    np.testing.assert_array_equal(K.int_bmm(a, b, zp_a, zp_b), expected)


def test_int_bmm_rejects_mismatched_shapes():
    with pytest.raises(AccelsimError, match="do not multiply"):
        K.int_bmm(np.zeros((2, 3, 4), np.int8), np.zeros((2, 5, 3), np.int8))


# --- requantization --------------------------------------------------------------------------


def _exact_requant(acc: int, m0: int, shift: int, zp: int, qmin: int, qmax: int) -> int:
    value = Fraction(acc * m0, 2**shift)
    rounded = (value + Fraction(1, 2)).__floor__()  # half-up: ties toward +inf
    return min(max(rounded + zp, qmin), qmax)


@SETTINGS
@given(
    multiplier=st.floats(2.0**-31, 2.0**29, allow_nan=False, allow_infinity=False),
    zp=st.integers(-10, 10), seed=st.integers(0, 2**16),
)
def test_requantize_matches_exact_rational_rounding(multiplier, zp, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**31), 2**31, (3, 5)).astype(np.int32)
    acc[0, :] = [0, 1, -1, 2**31 - 1, -(2**31)]
    m0, shift = C.quantize_multiplier(multiplier)
    assert 2**30 <= m0 < 2**31 and 1 <= shift <= 62
    assert abs(Fraction(m0, 2**shift) - Fraction(multiplier)) <= Fraction(1, 2 ** (shift + 1))
    out = K.requantize(acc, multiplier, zp, -128, 127)
    expected = [[_exact_requant(int(v), m0, shift, zp, -128, 127) for v in row] for row in acc]
    assert out.tolist() == expected


def test_requantize_power_of_two_scales_and_ties_are_exact():
    acc = np.array([[12, -12, 4, -4, 20, -20, 7]], np.int32)
    # multiplier 1/8: 1.5 -> 2, -1.5 -> -1 (half-up), 0.5 -> 1, -0.5 -> 0, 2.5 -> 3, -2.5 -> -2
    out = K.requantize(acc, 0.125, 0, -128, 127)
    assert out.tolist() == [[2, -1, 1, 0, 3, -2, 1]]
    per_channel = K.requantize(np.array([[8, 8]], np.int32), np.array([0.5, 0.25]), 3, 0, 15)
    assert per_channel.tolist() == [[7, 5]]
    saturated = K.requantize(np.array([[10_000, -10_000]], np.int32), 1.0, 0, -8, 7)
    assert saturated.tolist() == [[7, -8]]


def test_quantize_multiplier_rejects_out_of_range():
    with pytest.raises(AccelsimError, match="outside"):
        C.quantize_multiplier(2.0**31)
    with pytest.raises(AccelsimError, match="> 0"):
        C.quantize_multiplier(0.0)


# --- quantize: the shared expression -------------------------------------------------------


def test_quantize_matches_compress_quantizer_including_ties():
    rng = np.random.default_rng(3)
    scale = np.float32(0.0371)
    # Ties and near-ties: k + 0.5 steps, and the float32 neighbours of those products.
    ties = (np.arange(-20, 20) + 0.5).astype(np.float32) * scale
    near = np.concatenate([np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf)])
    x = np.concatenate([ties, near, rng.normal(0, 0.3, 2000).astype(np.float32)])
    for zp, qmin, qmax in [(0, -7, 7), (6, 0, 15), (128, 0, 255)]:
        ours = C.quantize(x, scale, zp, qmin, qmax)
        theirs = quantize_codes(torch.from_numpy(x), torch.tensor(scale), float(zp), qmin, qmax)
        np.testing.assert_array_equal(ours.astype(np.float32), theirs.numpy())
    assert C.quantize(np.array([2.5, 3.5, -2.5], np.float32), 1.0, 0, -7, 7).tolist() == [2, 4, -2]


def test_quantize_rejects_bad_scale():
    with pytest.raises(AccelsimError, match="scale"):
        C.quantize(np.zeros(3, np.float32), 0.0, 0, -7, 7)


@pytest.mark.parametrize("bits", [2, 8, 10, 20, 31])
def test_clip_accumulators_saturates_and_wraps_like_an_n_bit_register(bits):
    rng = np.random.default_rng(bits)
    acc = rng.integers(-(2**31), 2**31, 2000, dtype=np.int64).astype(np.int32)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    acc[:6] = [0, -1, high, low, high + 1, low - 1]
    outside = int(((acc < low) | (acc > high)).sum())
    saturated, count = K.clip_accumulators(acc.reshape(40, 50), bits, "saturate")
    assert count == outside and saturated.dtype == np.int32
    assert np.array_equal(saturated.reshape(-1), np.clip(acc, low, high))
    wrapped, count = K.clip_accumulators(acc, bits, "wrap")
    # Two's complement: the low `bits` bits, sign-extended (Python ints, no numpy modulo).
    expected = [((int(v) + 2 ** (bits - 1)) & (2**bits - 1)) - 2 ** (bits - 1) for v in acc]
    assert count == outside and wrapped.tolist() == expected


def test_clip_accumulators_keeps_int32_and_rejects_bad_policy():
    acc = np.array([[2**31 - 1, -(2**31)]], dtype=np.int32)
    same, count = K.clip_accumulators(acc, 32, "saturate")
    assert same is acc and count == 0
    with pytest.raises(AccelsimError, match=r"overflow='clamp' is not one of saturate, wrap"):
        K.clip_accumulators(acc, 16, "clamp")
