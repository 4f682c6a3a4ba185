"""The fast reference (numba kernels, vector_ops) agrees bit for bit with the independent oracle
(accelsim.ref.oracle) on random shapes, in every vector format and accumulator width."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.errors import AccelsimError
from accelsim.ref import kernels as K
from accelsim.ref import oracle as O
from accelsim.ref import vector_ops as V
from accelsim.ref.codes import code_dtype, compress_2to4, quantize_multiplier

SETTINGS = settings(max_examples=30, deadline=None)
seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 24)
formats = st.sampled_from(["fp32", "fp16", "bf16"])


def _act(rng: np.random.Generator, shape: tuple[int, ...], bits: int) -> tuple[np.ndarray, int]:
    """pact2-style unsigned codes with an in-range zero point."""
    codes = rng.integers(0, 2**bits, shape).astype(np.uint8)
    return codes, int(rng.integers(0, 2**bits))


def _two_four(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    w = rng.integers(-8, 8, (n, k // 4, 4)).astype(np.int8)
    drop = np.argsort(rng.random((n, k // 4, 4)), axis=2)[:, :, :2]
    np.put_along_axis(w, drop, 0, axis=2)
    return w.reshape(n, k)


# ---------------------------------------------------------------------------------------------
# GEMMs, accumulator width, requantization
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(m=dims, k=st.integers(1, 80), n=dims, bits=st.sampled_from([4, 8]), seed=seeds)
def test_dense_gemm_equals_oracle(m, k, n, bits, seed):
    rng = np.random.default_rng(seed)
    a, zp = _act(rng, (m, k), bits)
    w = rng.integers(-127 if bits == 8 else -8, 128 if bits == 8 else 8, (n, k)).astype(np.int8)
    bias = rng.integers(-(2**20), 2**20, n).astype(np.int32)
    acc, outside = O.gemm(a, zp, w, bias)
    assert outside == 0
    np.testing.assert_array_equal(K.int_gemm(a, w, zp, bias), acc)


@SETTINGS
@given(m=dims, groups=st.integers(1, 20), n=dims, seed=seeds)
def test_sparse_gemm_equals_oracle_gather(m, groups, n, seed):
    rng = np.random.default_rng(seed)
    a, zp = _act(rng, (m, 4 * groups), 4)
    values, indices = compress_2to4(_two_four(rng, n, 4 * groups))
    bias = rng.integers(-1000, 1000, n).astype(np.int32)
    acc, _ = O.sparse_gemm(a, zp, values, indices, bias)
    np.testing.assert_array_equal(K.sparse_gemm(a, values, indices, zp, bias), acc)


@SETTINGS
@given(batch=st.integers(1, 3), heads=st.integers(1, 3), m=dims, k=dims, n=dims, seed=seeds)
def test_attention_bmm_equals_oracle(batch, heads, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, a_zp = _act(rng, (batch, heads, m, k), 8)
    b, b_zp = _act(rng, (batch, heads, k, n), 8)
    acc, _ = O.bmm(a, a_zp, b, b_zp)
    np.testing.assert_array_equal(K.int_bmm(a, b, a_zp, b_zp), acc)


widths = st.sampled_from([8, 10, 12, 16, 20, 24, 32])
policies = st.sampled_from(["saturate", "wrap"])


@SETTINGS
@given(m=dims, groups=st.integers(1, 40), n=dims, bits=widths, overflow=policies, seed=seeds)
def test_clipped_gemms_equal_oracle_at_every_accumulator_width(m, groups, n, bits, overflow,
                                                               seed):
    rng = np.random.default_rng(seed)
    k = 4 * groups
    a, zp = _act(rng, (m, k), 8)
    dense = rng.integers(-127, 128, (n, k)).astype(np.int8)
    values, indices = compress_2to4(_two_four(rng, n, k))
    bias = rng.integers(-(2**12), 2**12, n).astype(np.int32)
    cases = (
        (K.int_gemm(a, dense, zp, bias), O.gemm(a, zp, dense, bias, bits, overflow)),
        (K.sparse_gemm(a, values, indices, zp, bias),
         O.sparse_gemm(a, zp, values, indices, bias, bits, overflow)),
        (K.int_bmm(a[None], np.ascontiguousarray(a.T)[None], zp, zp),
         O.bmm(a[None], zp, a.T[None], zp, bits, overflow)),
    )
    for exact, (expected, expected_outside) in cases:
        clipped, outside = K.clip_accumulators(exact, bits, overflow)
        np.testing.assert_array_equal(clipped, expected)
        assert outside == expected_outside


def test_narrow_accumulators_do_saturate_in_both():
    rng = np.random.default_rng(7)
    a, zp = _act(rng, (8, 256), 8)
    w = rng.integers(-127, 128, (16, 256)).astype(np.int8)
    exact = K.int_gemm(a, w, zp)
    counts = [K.clip_accumulators(exact, bits, "saturate")[1] for bits in (12, 16, 20, 24, 32)]
    assert counts == [O.gemm(a, zp, w, None, bits)[1] for bits in (12, 16, 20, 24, 32)]
    assert counts[0] > counts[2] and counts[0] > 0 and counts[-1] == 0


@pytest.mark.parametrize("bits", [8, 12, 16, 20, 24, 31])
def test_oracle_accumulator_width_is_twos_complement(bits):
    rng = np.random.default_rng(bits)
    acc = rng.integers(-(2**31), 2**31, 5000).astype(np.int64)
    acc[:4] = [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, -(2 ** (bits - 1)) - 1, 2 ** (bits - 1)]
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    inside = [low <= v <= high for v in acc.tolist()]
    saturated, count = O.clip(acc, bits, "saturate")
    wrapped, wrap_count = O.clip(acc, bits, "wrap")
    assert count == wrap_count == inside.count(False) and count > 0
    assert saturated.tolist() == [min(max(v, low), high) for v in acc.tolist()]
    assert wrapped.tolist() == [(v - low) % 2**bits + low for v in acc.tolist()]
    assert O.clip(acc, 64, "saturate")[1] == 0


@SETTINGS
@given(m=dims, n=dims, seed=seeds)
def test_requantize_equals_oracle_fixed_point(m, n, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**31), 2**31, (m, n)).astype(np.int32)
    acc.flat[: min(3, acc.size)] = [0, -1, 1][: min(3, acc.size)]
    multipliers = np.exp(rng.uniform(-20, 2, n))
    zp = int(rng.integers(0, 256))
    np.testing.assert_array_equal(K.requantize(acc, multipliers, zp, 0, 255),
                                  O.requantize(acc, multipliers, zp, 0, 255))


@SETTINGS
@given(q=st.lists(st.integers(-(2**61), 2**61), min_size=1, max_size=30),
       real=st.floats(2.0**-31, 2.0**-1) | st.floats(1.0, 4.0), negative=st.booleans())
def test_wide_fixed_point_multiply_equals_python_integers(q, real, negative):
    # Up to 62-bit operands (GELU outputs), split into 31-bit halves in int64: still exact.
    real = -real if negative else real
    values = np.array(q, dtype=np.int64)
    if int(np.abs(values).max()) * abs(real) >= 2**62:
        values //= 8
    assert V.multiply_by_real(values, real).tolist() == [O.multiply(v, real)
                                                         for v in values.tolist()]


@SETTINGS
@given(q=st.lists(st.integers(-(2**47), 2**47), min_size=1, max_size=30),
       scale=st.floats(1e-9, 1e-3), out_scale=st.floats(1e-3, 1.0), zp=st.integers(0, 15))
def test_to_codes_equals_oracle(q, scale, out_scale, zp):
    values = np.array(q, dtype=np.int64)
    ours = V.to_codes(values, scale, out_scale, zp, 0, 15)
    assert ours.dtype == code_dtype(0, 15)  # the dtype codes.quantize gives such codes
    np.testing.assert_array_equal(ours, O.to_codes(values, scale, out_scale, zp, 0, 15))


@SETTINGS
@given(real=st.floats(2.0**-31, 2.0**29))
def test_fixed_point_multiplier_from_rationals_equals_codes_frexp(real):
    assert O.fixed_point(real) == quantize_multiplier(real)


# ---------------------------------------------------------------------------------------------
# Float vector ops
# ---------------------------------------------------------------------------------------------


def _floats(rng: np.random.Generator, shape: tuple[int, ...], spread: float) -> np.ndarray:
    """Normal values (wide exponents when ``spread`` is large) of which a fifth are made exact
    ties of bf16 or of fp16 (the dropped bits exactly half an ulp), keeping their magnitude."""
    with np.errstate(over="ignore"):
        x = rng.standard_normal(shape) * np.exp(rng.uniform(-spread, spread, shape))
    bits = x.astype(np.float32).view(np.uint32)
    bf16_ties = (bits & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    fp16_ties = (bits & np.uint32(0xFFFFE000)) | np.uint32(0x1000)
    pick = rng.random(shape)
    bits = np.where(pick < 0.1, bf16_ties, np.where(pick < 0.2, fp16_ties, bits))
    return bits.astype(np.uint32).view(np.float32)


def _same_bits(ours: np.ndarray, oracle: np.ndarray) -> None:
    assert ours.dtype == oracle.dtype == np.float32 and ours.shape == oracle.shape
    nan = np.isnan(ours)
    np.testing.assert_array_equal(nan, np.isnan(oracle))
    np.testing.assert_array_equal(ours[~nan].view(np.uint32), oracle[~nan].view(np.uint32))


@SETTINGS
@given(fmt=formats, rows=st.integers(1, 4), n=st.integers(1, 40), seed=seeds)
def test_float_elementwise_ops_equal_oracle(fmt, rows, n, seed):
    rng = np.random.default_rng(seed)
    a, b = _floats(rng, (rows, n), 40), _floats(rng, (rows, n), 40)
    _same_bits(V.round_to_format(a, fmt), O.round_to_format(a, fmt))
    _same_bits(V.add(a, b, fmt), O.add(a, b, fmt))
    _same_bits(V.mul(a, b[0], fmt), O.mul(a, b[0], fmt))  # broadcast: the vector unit's scale
    _same_bits(V.gelu(a * np.float32(1e-30), fmt), O.gelu(a * np.float32(1e-30), fmt))
    x = _floats(rng, (rows, n), 2) * np.float32(3)
    assert np.all(np.isfinite(x))
    _same_bits(V.gelu(x, fmt), O.gelu(x, fmt))


@SETTINGS
@given(fmt=formats, rows=st.integers(1, 4), n=st.integers(1, 48), seed=seeds,
       eps=st.sampled_from([1e-12, 1e-5]))
def test_float_layer_norm_and_softmax_equal_oracle(fmt, rows, n, seed, eps):
    rng = np.random.default_rng(seed)
    x = _floats(rng, (rows, n), 3) * np.float32(4)
    assert np.all(np.isfinite(V.layer_norm(x, gamma=1.0, beta=0.0, eps=eps, fmt="fp32")))
    gamma = (1 + 0.5 * rng.standard_normal(n)).astype(np.float32)
    beta = (0.2 * rng.standard_normal(n)).astype(np.float32)
    _same_bits(V.layer_norm(x, gamma, beta, eps, fmt), O.layer_norm(x, gamma, beta, eps, fmt))
    _same_bits(V.softmax(x, fmt), O.softmax(x, fmt))
    masked = x.copy()
    masked[:, ::3] = np.finfo(np.float32).min  # an additive mask's value
    _same_bits(V.softmax(masked, fmt), O.softmax(masked, fmt))


def test_float_ops_edges_equal_oracle():
    equal_rows = np.full((2, 5), 3.25, np.float32)
    ones = np.ones(5, np.float32)
    specials = np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, 65520.0, 3.4e38, 1e-45]],
                        dtype=np.float32)
    for fmt in ("fp32", "fp16", "bf16"):
        _same_bits(V.layer_norm(equal_rows, ones, ones, 1e-5, fmt),
                   O.layer_norm(equal_rows, ones, ones, 1e-5, fmt))
        _same_bits(V.softmax(equal_rows, fmt), O.softmax(equal_rows, fmt))
        _same_bits(V.round_to_format(specials, fmt), O.round_to_format(specials, fmt))
        _same_bits(V.gelu(specials[:, [0, 1, 5, 7]], fmt), O.gelu(specials[:, [0, 1, 5, 7]], fmt))


# ---------------------------------------------------------------------------------------------
# Integer vector ops
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(rows=st.integers(1, 4), n=st.integers(1, 40), seed=seeds,
       scale=st.sampled_from([1e-5, 3e-4, 1e-2, 0.08]), magnitude=st.sampled_from([8, 20, 44]))
def test_int_gelu_equals_oracle(rows, n, seed, scale, magnitude):
    rng = np.random.default_rng(seed)
    q = rng.integers(-(2**magnitude), 2**magnitude, (rows, n))
    ours, s = V.int_gelu(q, scale)
    theirs, s_oracle = O.int_gelu(q, scale)
    assert s == s_oracle
    np.testing.assert_array_equal(ours, theirs)


@SETTINGS
@given(rows=st.integers(1, 4), n=st.integers(1, 40), seed=seeds,
       scale=st.sampled_from([1e-5, 3e-4, 1e-2, 0.08]), magnitude=st.sampled_from([8, 20, 44]),
       segments=st.sampled_from([4, 16, 64, 256]), per_channel=st.booleans())
def test_int_gelu_table_equals_oracle(rows, n, seed, scale, magnitude, segments, per_channel):
    rng = np.random.default_rng(seed)
    q = rng.integers(-(2**magnitude), 2**magnitude, (rows, n))
    scales = scale * rng.uniform(0.5, 2.0, n) if per_channel else scale
    ours, s = V.int_gelu_table(q, scales, segments)
    theirs, s_oracle = O.int_gelu_table(q, scales, segments)
    np.testing.assert_array_equal(s, s_oracle)
    np.testing.assert_array_equal(ours, theirs)


@SETTINGS
@given(rows=st.integers(1, 4), n=st.integers(1, 40), seed=seeds,
       scale=st.sampled_from([2e-4, 3e-3, 0.05, 0.6]), bits=st.sampled_from([4, 8, 16]),
       masked=st.booleans())
def test_int_softmax_equals_oracle(rows, n, seed, scale, bits, masked):
    rng = np.random.default_rng(seed)
    q = rng.integers(-round(12 / scale), round(12 / scale) + 1, (rows, n))
    keep = rng.random((rows, n)) < 0.7 if masked else None
    ours, _ = V.int_softmax(q, scale, bits, keep)
    np.testing.assert_array_equal(ours, O.int_softmax(q, scale, bits, keep)[0])


@SETTINGS
@given(rows=st.integers(1, 4), n=st.integers(1, 48), seed=seeds,
       in_bits=st.sampled_from([4, 8, 16, 26]), out_bits=st.sampled_from([8, 16, 32]),
       scale=st.sampled_from([1e-4, 0.02, 1.0]), eps=st.sampled_from([0.0, 1e-5]),
       explicit_scale=st.booleans())
def test_int_layer_norm_equals_oracle(rows, n, seed, in_bits, out_bits, scale, eps,
                                      explicit_scale):
    rng = np.random.default_rng(seed)
    q = rng.integers(-(2 ** (in_bits - 1)), 2 ** (in_bits - 1), (rows, n))
    if rows > 1:
        q[0] = q[0, 0]  # an all-equal row
    gamma = rng.standard_normal(n) * 0.7
    beta = rng.standard_normal(n) * 0.3
    out_scale = 0.01 if explicit_scale else None
    ours, s = V.int_layer_norm(q, scale, gamma, beta, out_bits, eps, out_scale)
    theirs, s_oracle = O.int_layer_norm(q, scale, gamma, beta, out_bits, eps, out_scale)
    assert s == s_oracle
    np.testing.assert_array_equal(ours, theirs)


@SETTINGS
@given(batch=st.integers(1, 3), groups=st.integers(1, 4), per_group=st.integers(1, 3),
       positions=st.integers(1, 9), seed=seeds, in_bits=st.sampled_from([8, 16, 24]),
       eps=st.sampled_from([0.0, 1e-5]), explicit_scale=st.booleans())
def test_int_group_norm_equals_oracle(batch, groups, per_group, positions, seed, in_bits, eps,
                                      explicit_scale):
    rng = np.random.default_rng(seed)
    channels = groups * per_group
    q = rng.integers(-(2 ** (in_bits - 1)), 2 ** (in_bits - 1), (batch, channels, positions))
    gamma = rng.standard_normal(channels) * 0.7
    beta = rng.standard_normal(channels) * 0.3
    out_scale = 0.01 if explicit_scale else None
    ours, s = V.int_group_norm(q, 0.02, groups, gamma, beta, 16, eps, out_scale)
    theirs, s_oracle = O.int_group_norm(q, 0.02, groups, gamma, beta, 16, eps, out_scale)
    assert s == s_oracle
    np.testing.assert_array_equal(ours, theirs)


@SETTINGS
@given(n=st.integers(1, 40), seed=seeds, out_bits=st.sampled_from([8, 16, 24, 32]),
       scales=st.tuples(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0)), explicit=st.booleans())
def test_int_add_equals_oracle(n, seed, out_bits, scales, explicit):
    rng = np.random.default_rng(seed)
    qa = rng.integers(-(2**31) + 1, 2**31, n)
    qb = rng.integers(-(2**20), 2**20, (2, n))
    out_scale = math.sqrt(scales[0] * scales[1]) if explicit else None
    ours, s = V.int_add(qa, scales[0], qb, scales[1], out_bits, out_scale)
    theirs, s_oracle = O.int_add(qa, scales[0], qb, scales[1], out_bits, out_scale)
    assert s == s_oracle
    np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------------------------------------
# check_op: the per-op interface verify uses
# ---------------------------------------------------------------------------------------------


def _recorded_ops(rng: np.random.Generator):
    """(kind, reference output, inputs) of one op of every kind, computed by the fast path."""
    a, zp = _act(rng, (6, 16), 8)
    w = rng.integers(-127, 128, (5, 16)).astype(np.int8)
    values, indices = compress_2to4(_two_four(rng, 5, 16))
    bias = rng.integers(-100, 100, 5).astype(np.int32)
    b, b_zp = _act(rng, (2, 16, 7), 8)
    x = (rng.standard_normal((2, 6, 16)) * 3).astype(np.float32)
    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    q = rng.integers(-3000, 3000, (2, 6, 16))
    keep = rng.random((6, 16)) < 0.8
    acc = K.int_gemm(a, w, zp, bias)
    return [
        ("gemm", K.clip_accumulators(acc, 16, "wrap"),
         dict(a_codes=a, a_zp=zp, w_codes=w, bias=bias, bits=16, overflow="wrap")),
        ("sparse_gemm", K.sparse_gemm(a, values, indices, zp, bias),
         dict(a_codes=a, a_zp=zp, values=values, indices=indices, bias=bias)),
        ("bmm", K.int_bmm(np.stack([a, a]), b, zp, b_zp),
         dict(a_codes=np.stack([a, a]), a_zp=zp, b_codes=b, b_zp=b_zp)),
        ("requantize", K.requantize(acc, 0.003, 7, 0, 255),
         dict(acc=acc, multiplier=0.003, zero_point=7, qmin=0, qmax=255)),
        ("to_codes", V.to_codes(q * 2**30, 1e-9, 0.05, 3, 0, 15),
         dict(q=q * 2**30, scale=1e-9, out_scale=0.05, zero_point=3, qmin=0, qmax=15)),
        ("multiply_by_real", V.multiply_by_real(q * 2**20, -0.3535),
         dict(q=q * 2**20, real=-0.3535)),
        ("round_to_format", V.round_to_format(x, "bf16"), dict(x=x, fmt="bf16")),
        ("add", V.add(x, x[0], "fp16"), dict(a=x, b=x[0], fmt="fp16")),
        ("mul", V.mul(x, np.float32(0.125), "bf16"), dict(a=x, b=np.float32(0.125), fmt="bf16")),
        ("layer_norm", V.layer_norm(x, gamma, beta, 1e-5, "fp16"),
         dict(x=x, gamma=gamma, beta=beta, eps=1e-5, fmt="fp16")),
        ("softmax", V.softmax(x, "bf16"), dict(x=x, fmt="bf16")),
        ("gelu", V.gelu(x, "fp32"), dict(x=x, fmt="fp32")),
        ("int_gelu", V.int_gelu(q, 1e-3), dict(q=q, scale=1e-3)),
        ("int_gelu_table", V.int_gelu_table(q, 1e-3, 16), dict(q=q, scale=1e-3, segments=16)),
        ("int_softmax", V.int_softmax(q, 1e-3, 8, keep), dict(q=q, scale=1e-3, out_bits=8,
                                                              keep=keep)),
        ("int_layer_norm", V.int_layer_norm(q, 1e-3, gamma, beta, 16),
         dict(q=q, scale=1e-3, gamma=gamma, beta=beta, out_bits=16)),
        ("int_group_norm", V.int_group_norm(q, 1e-3, 3, gamma[:6], beta[:6] + 0.5, 16),
         dict(q=q, scale=1e-3, groups=3, gamma=gamma[:6], beta=beta[:6] + 0.5, out_bits=16)),
        ("int_add", V.int_add(q, 1e-3, q[0], 4e-3, 12), dict(qa=q, scale_a=1e-3, qb=q[0],
                                                             scale_b=4e-3, out_bits=12)),
    ]


@pytest.mark.parametrize("max_rows", [None, 2])
def test_check_op_agrees_on_every_kind_and_catches_one_flipped_bit(max_rows):
    ops = _recorded_ops(np.random.default_rng(8))
    assert sorted(kind for kind, _, _ in ops) == sorted(O.OPS)
    for kind, output, inputs in ops:
        result = O.check_op(kind, output, inputs, max_rows)
        assert result.mismatches == 0 and result.elements > 0, kind
        first = output[0] if isinstance(output, tuple) else output
        flipped = first.copy()
        flat = flipped.reshape(-1)
        if flat.dtype.kind == "f":
            flat.view(np.uint32)[0] ^= np.uint32(1)
        else:
            flat[0] ^= 1
        bad = (flipped, *output[1:]) if isinstance(output, tuple) else flipped
        assert O.check_op(kind, bad, inputs, max_rows).mismatches == 1, kind


def test_check_op_compares_scales_and_counts_and_rejects_unknown_kinds():
    q = np.arange(-8, 8).reshape(2, 8)
    out, scale = V.int_gelu(q, 0.01)
    assert O.check_op("int_gelu", (out, scale * 2), dict(q=q, scale=0.01)).mismatches == 1
    channel_scales = np.array([0.01] * 7 + [0.02])
    out, scales = V.int_gelu(q, channel_scales)
    inputs = dict(q=q, scale=channel_scales)
    assert O.check_op("int_gelu", (out, scales), inputs) == O.OpCheck("int_gelu", 24, 0)
    nudged = scales.copy()
    nudged[0] = np.nextafter(nudged[0], 1.0)  # one float64 ulp: below float32 resolution
    assert O.check_op("int_gelu", (out, nudged), inputs).mismatches == 1
    a = np.full((2, 4), 255, np.uint8)
    w = np.full((3, 4), 127, np.int8)
    clipped = K.clip_accumulators(K.int_gemm(a, w), 12, "saturate")
    inputs = dict(a_codes=a, a_zp=0, w_codes=w, bits=12, overflow="saturate")
    assert O.check_op("gemm", clipped, inputs) == O.OpCheck("gemm", 7, 0)
    assert O.check_op("gemm", (clipped[0], 5), inputs).mismatches == 1
    with pytest.raises(AccelsimError, match="op kind 'conv' is not one of gemm, sparse_gemm"):
        O.check_op("conv", q, {})


@pytest.mark.parametrize("kind", ["gemm", "sparse_gemm", "bmm"])
def test_a_sampled_gemm_still_has_its_saturations_counted_on_every_row(kind, monkeypatch):
    monkeypatch.setattr(O, "COUNT_BLOCK_ROWS", 3)  # several blocks, the last one partial
    rng = np.random.default_rng(4)
    a, zp = _act(rng, (2, 7, 16), 8)
    if kind == "bmm":
        b, b_zp = _act(rng, (2, 16, 5), 8)
        acc = K.int_bmm(a, b, zp, b_zp)
        inputs = dict(a_codes=a, a_zp=zp, b_codes=b, b_zp=b_zp)
    else:
        a = a[0]
        w = _two_four(rng, 5, 16)
        values, indices = compress_2to4(w)
        acc = K.int_gemm(a, w, zp)
        inputs = (dict(a_codes=a, a_zp=zp, w_codes=w) if kind == "gemm"
                  else dict(a_codes=a, a_zp=zp, values=values, indices=indices))
    bits = 12
    clipped, outside = K.clip_accumulators(acc, bits, "saturate")
    inputs.update(bits=bits, overflow="saturate")
    assert 0 < outside < acc.size
    assert O.count_outside(kind, inputs) == outside
    first_rows = clipped[..., :1, :] if kind == "bmm" else clipped[:1]
    assert O.check_op(kind, (clipped, outside), inputs, max_rows=1) == O.OpCheck(
        kind, first_rows.size + 1, 0)
    assert O.check_op(kind, (clipped, outside - 1), inputs, max_rows=1).mismatches == 1


# ---------------------------------------------------------------------------------------------
# Per-channel scales (a GEMM accumulator with per-channel weight scales)
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(rows=st.integers(1, 4), n=st.integers(1, 24), seed=seeds)
def test_per_channel_int_ops_equal_oracle(rows, n, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(2**20), 2**20, (rows, n))
    channel_scales = np.exp(rng.uniform(np.log(1e-5), np.log(1e-2), n))
    ours, scale = V.int_gelu(acc, channel_scales)
    theirs, scale_oracle = O.int_gelu(acc, channel_scales)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(scale, scale_oracle)
    np.testing.assert_array_equal(V.to_codes(ours, scale, 0.05, 4, 0, 15),
                                  O.to_codes(ours, scale, 0.05, 4, 0, 15))
    residual = rng.integers(-(2**15), 2**15, (rows, n))
    summed, s_out = V.int_add(residual, 2e-3, acc, channel_scales, 16)
    summed_oracle, s_oracle = O.int_add(residual, 2e-3, acc, channel_scales, 16)
    assert s_out == s_oracle
    np.testing.assert_array_equal(summed, summed_oracle)
    reals = rng.uniform(-3, 3, n)
    reals[0] = 0.0
    assert V.multiply_by_real(acc, reals).tolist() == [
        [O.multiply(int(v), float(r)) for v, r in zip(row, reals, strict=True)]
        for row in acc.tolist()]
