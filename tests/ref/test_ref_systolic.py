"""The simulator's datapath, fold by fold through the 2:4 muxes, equals the reference kernels."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.errors import AccelsimError
from accelsim.ref import codes as C
from accelsim.ref import kernels as K
from accelsim.ref.systolic import run_systolic
from accelsim.sim.mapping import map_gemm
from accelsim.sim.sparse import reduction_steps


def _case(seed: int, m: int, groups: int, n: int):
    rng = np.random.default_rng(seed)
    k = 4 * groups
    a = rng.integers(0, 16, (m, k)).astype(np.uint8)
    zp = int(rng.integers(0, 16))
    w = rng.integers(-7, 8, (n, groups, 4)).astype(np.int8)
    np.put_along_axis(w, np.argsort(rng.random((n, groups, 4)), axis=2)[:, :, :2], 0, axis=2)
    bias = rng.integers(-500, 500, n).astype(np.int32)
    return a, zp, w.reshape(n, k), bias


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 20), groups=st.integers(1, 12), n=st.integers(1, 20),
    rows=st.integers(1, 9), cols=st.integers(1, 9), dataflow=st.sampled_from(["os", "ws", "is"]),
    seed=st.integers(0, 2**16),
)
def test_systolic_dense_and_sparse_equal_kernels(m, groups, n, rows, cols, dataflow, seed):
    a, zp, w, bias = _case(seed, m, groups, n)
    reference = K.int_gemm(a, w, zp, bias)
    dense = run_systolic(a, zp, rows, cols, dataflow, w_codes=w, bias=bias)
    np.testing.assert_array_equal(dense.out, reference)
    values, indices = C.compress_2to4(w)
    sparse = run_systolic(
        a, zp, rows, cols, dataflow, sparse_values=values, sparse_indices=indices, bias=bias
    )
    np.testing.assert_array_equal(sparse.out, reference)
    np.testing.assert_array_equal(sparse.out, K.sparse_gemm(a, values, indices, zp, bias))
    k = 4 * groups
    # Same folds as the simulator's mapping of the same GEMM (2:4 halves the reduction).
    for run, skipping in ((dense, False), (sparse, True)):
        mapping = map_gemm(m, reduction_steps(k, skipping), n, rows, cols, dataflow)
        assert (run.row_folds, run.col_folds) == (mapping.row_folds, mapping.col_folds)
        assert len(run.folds) == run.row_folds * run.col_folds
    temporal = {"os": k, "ws": m, "is": n}[dataflow]
    if dataflow == "os":  # the 2:4 stream is half as long per fold
        assert sparse.mac_steps * 2 == dense.mac_steps == len(dense.folds) * temporal
    else:
        assert dense.mac_steps == len(dense.folds) * temporal
    assert sparse.mux_selections == m * n * k // 2 and dense.mux_selections == 0


def test_systolic_partial_folds_cover_every_output_once():
    a, zp, w, bias = _case(0, 5, 3, 7)
    run = run_systolic(a, zp, 4, 3, "os", w_codes=w, bias=bias)
    # Column fold outer, row fold inner, as the simulator visits them.
    assert run.folds[:3] == (((0, 4), (0, 3)), ((4, 1), (0, 3)), ((0, 4), (3, 3)))
    assert run.folds[-1] == ((4, 1), (6, 1))
    covered = np.zeros((5, 7), int)
    for (m0, ms), (n0, ns) in run.folds:
        covered[m0:m0 + ms, n0:n0 + ns] += 1
    assert (covered == 1).all()


def test_systolic_rejects_unknown_dataflow_and_bad_operands():
    a, zp, w, _ = _case(0, 2, 1, 2)
    with pytest.raises(AccelsimError, match="dataflow='is2' is not one of os, ws, is"):
        run_systolic(a, zp, 2, 2, "is2", w_codes=w)
    with pytest.raises(AccelsimError, match="either w_codes or both"):
        run_systolic(a, zp, 2, 2, "os")
    with pytest.raises(AccelsimError, match="rows=0"):
        run_systolic(a, zp, 0, 2, "os", w_codes=w)
