"""Invariants of simulate() over random GEMMs and design points (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_hw import tiny_hw

from accelsim.graph.ir import GemmNode, Graph
from accelsim.sim import simulate

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)

dims = st.integers(min_value=1, max_value=200)
quads = st.integers(min_value=1, max_value=64).map(lambda q: 4 * q)  # k for 2:4 weights
array_dims = st.integers(min_value=1, max_value=32)
dataflows = st.sampled_from(("os", "ws", "is"))
sram_kib = st.sampled_from((2, 8, 64, 1024))
bandwidth = st.floats(min_value=0.5, max_value=200.0)
bits = st.sampled_from((4, 8))
flags = st.booleans()


def design(rows, cols, dataflow, kib, gbps, ideal, double_buffered, wbits, **extra):
    return tiny_hw(array__rows=rows, array__cols=cols, array__dataflow=dataflow,
                   sram__weights__size_kib=kib, sram__inputs__size_kib=kib,
                   sram__outputs__size_kib=kib, dram__bandwidth_gbps=gbps, ideal_memory=ideal,
                   sram__weights__double_buffered=double_buffered,
                   sram__inputs__double_buffered=double_buffered,
                   precision__weight_bits=wbits, precision__act_bits=wbits, **extra)


def run(node, hw):
    return simulate(Graph("g", (node,)), hw)


@SETTINGS
@given(dims, dims, dims, array_dims, array_dims, dataflows, sram_kib, bandwidth, flags, flags,
       bits)
def test_dense_cycles_at_least_macs_over_pes(m, k, n, rows, cols, dataflow, kib, gbps, ideal,
                                             db, wbits):
    hw = design(rows, cols, dataflow, kib, gbps, ideal, db, wbits)
    result = run(GemmNode("g", m=m, k=k, n=n), hw)
    if result.feasible:
        assert result.totals.cycles >= m * k * n / (rows * cols)
        assert 0 < result.totals.utilization <= 1


@SETTINGS
@given(dims, quads, dims, array_dims, array_dims, dataflows, sram_kib, bandwidth, flags, flags)
def test_sparse_cycles_at_least_half_macs_over_pes(m, k, n, rows, cols, dataflow, kib, gbps,
                                                   ideal, db):
    hw = design(rows, cols, dataflow, kib, gbps, ideal, db, 4, sparsity__support="2:4")
    result = run(GemmNode("g", m=m, k=k, n=n, sparsity="2:4", weight_density=0.5), hw)
    if result.feasible:
        assert result.layers[0].skipping
        assert result.totals.cycles >= m * k * n / (2 * rows * cols)


@SETTINGS
@given(dims, quads, dims, array_dims, array_dims, dataflows, sram_kib, bandwidth,
       st.floats(min_value=1.01, max_value=10.0), flags, flags)
def test_more_bandwidth_never_slower(m, k, n, rows, cols, dataflow, kib, gbps, factor, db,
                                     sparse):
    node = GemmNode("g", m=m, k=k, n=n, sparsity="2:4" if sparse else "dense")
    slow = run(node, design(rows, cols, dataflow, kib, gbps, False, db, 4,
                            sparsity__support="2:4"))
    fast = run(node, design(rows, cols, dataflow, kib, gbps * factor, False, db, 4,
                            sparsity__support="2:4"))
    assert slow.feasible == fast.feasible
    if slow.feasible:
        assert fast.totals.cycles <= slow.totals.cycles


@SETTINGS
@given(dims, quads, dims, array_dims, array_dims, dataflows, sram_kib, bandwidth, flags, flags,
       bits)
def test_sparse_never_slower_than_dense_on_same_array(m, k, n, rows, cols, dataflow, kib, gbps,
                                                      ideal, db, wbits):
    hw = design(rows, cols, dataflow, kib, gbps, ideal, db, wbits, sparsity__support="2:4")
    dense = run(GemmNode("g", m=m, k=k, n=n), hw)
    sparse = run(GemmNode("g", m=m, k=k, n=n, sparsity="2:4", weight_density=0.5), hw)
    if dense.feasible:
        assert sparse.feasible
        assert sparse.totals.cycles <= dense.totals.cycles
        assert sparse.totals.dram_bytes <= dense.totals.dram_bytes


@SETTINGS
@given(dims, quads, dims, array_dims, array_dims, dataflows, sram_kib, bandwidth, flags,
       st.floats(min_value=0.0, max_value=0.5), flags)
def test_energy_total_is_the_sum_of_its_parts(m, k, n, rows, cols, dataflow, kib, gbps, ideal,
                                              density, gating):
    hw = design(rows, cols, dataflow, kib, gbps, ideal, True, 4, sparsity__support="2:4",
                sparsity__zero_gating=gating, energy__leakage_mw_per_mm2=20.0,
                energy__register_pj_per_byte=0.03, energy__mux_pj_per_bit=0.001)
    result = run(GemmNode("g", m=m, k=k, n=n, sparsity="2:4", weight_density=density), hw)
    if result.feasible:
        data = result.to_dict()
        for layer in data["layers"]:
            parts = layer["energy_uj"]
            assert parts["total"] == pytest.approx(
                sum(v for key, v in parts.items() if key != "total"), rel=1e-12)
            assert min(parts.values()) >= 0
        assert data["totals"]["energy_uj"] == pytest.approx(
            sum(layer["energy_uj"]["total"] for layer in data["layers"]), rel=1e-12)


@SETTINGS
@given(dims, dims, dims, array_dims, array_dims, dataflows, sram_kib, bandwidth, flags, flags,
       bits, st.integers(min_value=2, max_value=12))
def test_instances_never_slower_than_separate_layers(m, k, n, rows, cols, dataflow, kib, gbps,
                                                     ideal, db, wbits, count):
    # count instances stream as one layer: one prologue/epilogue and one fill/drain, the same
    # DRAM traffic and MACs as count separate layers.
    # Separate layers: each reads a model input and writes a model output, as the instances do.
    hw = design(rows, cols, dataflow, kib, gbps, ideal, db, wbits)
    separate = simulate(Graph("g", tuple(
        GemmNode(f"g{i}", m=m, k=k, n=n, weight_bits=8, inputs=("",)) for i in range(count))), hw)
    many = run(GemmNode("g", m=m, k=k, n=n, weight_bits=8, count=count), hw)
    assert separate.feasible == many.feasible
    if separate.feasible:
        one_layer, layer = separate.layers[0], many.layers[0]
        assert layer.compute_cycles <= count * one_layer.compute_cycles
        assert layer.cycles <= separate.totals.cycles
        assert layer.dram_bytes == separate.totals.dram_bytes
        assert layer.energy.mac_pj == pytest.approx(count * one_layer.energy.mac_pj)
        assert 0 < layer.utilization <= 1
