"""Validation against independent models: a tile-by-tile replay of the memory plan's loop order
and Sparseloop's 2:4 example."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from sim_hw import tiny_hw

from accelsim.graph.ir import GemmNode, Graph
from accelsim.sim import memory, simulate


def replay_bytes(ops: memory.Operands, tiling: memory.Tiling, a_fits: bool,
                 b_fits: bool) -> tuple[float, float]:
    """DRAM bytes of A and B, walking the tiles in the tiling's loop order and loading a tile
    only when the buffer does not hold it (a buffer that fits its whole operand keeps it)."""
    def extent(index: int, tile: int, total: int) -> int:
        return min(tile, total - index * tile)

    outer, inner = ((tiling.tiles_n, tiling.tiles_m) if tiling.order == "n_outer"
                    else (tiling.tiles_m, tiling.tiles_n))
    held_a: set[tuple[int, int]] = set()
    held_b: set[tuple[int, int]] = set()
    a_bytes = b_bytes = 0.0
    for o in range(outer):
        for i in range(inner):
            n_i, m_i = (o, i) if tiling.order == "n_outer" else (i, o)
            for k_i in range(tiling.tiles_k):
                rows = extent(m_i, tiling.tile_m, ops.m)
                depth = extent(k_i, tiling.tile_k, ops.k)
                cols = extent(n_i, tiling.tile_n, ops.n)
                if (m_i, k_i) not in held_a:
                    a_bytes += rows * depth * ops.act_bits / 8
                    held_a = held_a | {(m_i, k_i)} if a_fits else {(m_i, k_i)}
                if (k_i, n_i) not in held_b:
                    b_bytes += depth * cols * ops.weight_bits / 8
                    held_b = held_b | {(k_i, n_i)} if b_fits else {(k_i, n_i)}
    return a_bytes, b_bytes


dims = st.integers(min_value=1, max_value=150)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(dims, dims, dims, st.integers(min_value=1, max_value=16),
       st.integers(min_value=1, max_value=16), st.sampled_from(("os", "ws", "is")),
       st.sampled_from((0.25, 0.5, 1.0, 4.0)), st.sampled_from((0.25, 1.0, 4.0)),
       st.sampled_from((4, 8)), st.booleans())
def test_closed_form_traffic_equals_a_tile_by_tile_replay(m, k, n, rows, cols, dataflow,
                                                          in_kib, w_kib, bits, sparse24):
    hw = tiny_hw(array__rows=rows, array__cols=cols, array__dataflow=dataflow,
                 sram__inputs__size_kib=in_kib, sram__weights__size_kib=w_kib,
                 sram__outputs__size_kib=4.0, precision__weight_bits=bits,
                 precision__act_bits=bits)
    k_granule = 4 if sparse24 else 1
    k = k * k_granule
    weight_bits = (bits + 2) / 2 if sparse24 else float(bits)
    ops = memory.Operands(m, k, n, bits, weight_bits, 32, bits, k_granule)
    candidates = memory.candidate_tilings(ops, hw, memory.granule(dataflow, rows, cols))
    if isinstance(candidates, str):
        return
    plan = memory.plan_memory(ops, hw, 1000, 1, candidates)
    a_fits = ops.a_bytes <= hw.sram.inputs.tile_capacity_bytes
    b_fits = ops.b_bytes <= hw.sram.weights.tile_capacity_bytes
    a_bytes, b_bytes = replay_bytes(ops, plan.tiling, a_fits, b_fits)
    assert plan.dram_read_a_bytes == math.ceil(a_bytes - 1e-9)
    assert plan.dram_read_b_bytes == math.ceil(b_bytes - 1e-9)
    assert plan.dram_write_c_bytes == math.ceil(m * n * bits / 8 - 1e-9)


def test_sparseloop_two_four_example():
    # Sparseloop (Wu et al., MICRO 2022) times a 2:4 GEMM of 512x256x1024 on 1024 MACs at
    # 512 x 1024 x 256 / 2 / 1024 = 65,536 cycles. On a 32x32 OS array with the 2:4 datapath,
    # ideal memory: the same 65,536 steady-state cycles plus one fill and drain (32 + 32 - 2).
    hw = tiny_hw(array__rows=32, array__cols=32, sparsity__support="2:4",
                 precision__weight_bits=8, precision__act_bits=8,
                 sram__inputs__size_kib=1024, sram__weights__size_kib=1024,
                 sram__outputs__size_kib=4096)
    node = GemmNode("g", m=512, k=256, n=1024, sparsity="2:4", weight_density=0.5)
    layer = simulate(Graph("g", (node,)), hw).layers[0]
    assert layer.skipping
    assert layer.compute_cycles == 65_536 + 32 + 32 - 2
    dense = simulate(Graph("g", (GemmNode("g", m=512, k=256, n=1024),)), hw).layers[0]
    assert dense.compute_cycles == 131_072 + 32 + 32 - 2
