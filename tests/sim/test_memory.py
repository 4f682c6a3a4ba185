"""Tiling, re-fetch and sub-byte storage in sim.memory / sim.sparse, checked by hand."""

from __future__ import annotations

import dataclasses

import pytest
from sim_hw import CONFIGS, tiny_hw

from accelsim.hw import load_hw, with_overrides
from accelsim.sim import mapping, memory, sparse


def ops(m, k, n, bits=8, weight_bits=8.0, k_granule=1):
    return memory.Operands(m, k, n, bits, weight_bits, 32, bits, k_granule)


@pytest.mark.parametrize(("dataflow", "expected"), [
    ("os", (4, 1, 8)), ("ws", (1, 4, 8)), ("is", (8, 4, 1))])
def test_granule_is_the_fold_shape(dataflow, expected):
    assert memory.granule(dataflow, 4, 8) == expected


def test_tiles_fill_half_of_each_double_buffered_buffer():
    # 1 KiB buffers -> 512 B per tile. OS 4x4 granule; A 64x64 int8 = 4 KiB, B 64x16 = 1 KiB.
    tiling = memory.plan_tiles(ops(64, 64, 16), tiny_hw(), memory.granule("os", 4, 4))
    assert (tiling.tile_k, tiling.tiles_k) == (64, 1)  # a 4-row strip of A is 256 B: fits
    assert tiling.tile_m == 8 and tiling.tile_n == 8  # 8 x 64 B = 512 B each
    assert (tiling.tiles_m, tiling.tiles_n) == (8, 2)


def test_reduction_is_split_when_a_strip_does_not_fit():
    tiling = memory.plan_tiles(ops(4, 1024, 4), tiny_hw(), memory.granule("os", 4, 4))
    assert tiling.tile_k == 128 and tiling.tiles_k == 8  # 4 x 128 B = 512 B


def test_refetch_counts_follow_the_loop_order():
    t = memory.Tiling(8, 64, 8, 8, 1, 2, "n_outer")
    assert memory.refetch_counts(t) == (2, 1)
    assert memory.refetch_counts(dataclasses.replace(t, order="m_outer")) == (1, 8)
    assert memory.refetch_counts(dataclasses.replace(t, tiles_m=1)) == (1, 1)
    assert memory.refetch_counts(dataclasses.replace(t, tiles_k=3)) == (2, 8)
    # An operand that fits its buffer whole is loaded once, whatever caps the tile.
    assert memory.refetch_counts(t, a_fits=True) == (1, 1)
    assert memory.refetch_counts(dataclasses.replace(t, tiles_k=3), b_fits=True) == (2, 1)


def test_plan_memory_picks_the_cheaper_order():
    hw = tiny_hw()
    o = ops(64, 64, 16)
    gran = memory.granule("os", 4, 4)
    plan = memory.plan_memory(o, hw, 1000, 1, (memory.plan_tiles(o, hw, gran),))
    # n_outer: A 4096 x 2 + B 1024 = 9216; m_outer: A 4096 + B 1024 x 8 = 12288.
    assert plan.tiling.order == "n_outer"
    assert (plan.dram_read_a_bytes, plan.dram_read_b_bytes) == (8192, 1024)
    assert plan.dram_write_c_bytes == 64 * 16 and plan.stall_cycles == 0


def test_plan_memory_takes_the_least_traffic_among_tilings_within_the_cycle_tie(monkeypatch):
    # ViT-B/16's fused Q/K/V GEMM (4-bit, A and B from DRAM, the output kept on chip) on
    # int4_sparse with the IS dataflow: streaming the weights once per row block (m-outer) is
    # 1.3% faster than reading them once (n-outer), within CYCLES_TIE (2%), so the plan reads
    # them once.
    hw = with_overrides(load_hw(CONFIGS / "int4_sparse.yaml"), {"array.dataflow": "is"})
    o = ops(197, 768, 2304, bits=4, weight_bits=4.0)
    candidates = memory.candidate_tilings(o, hw, memory.granule("is", 64, 64))
    compute = mapping.map_gemm(197, 768, 2304, 64, 64, "is").compute_cycles
    src = memory.Sources(c_to_dram=False)
    plan = memory.plan_memory(o, hw, compute, 1, candidates, src)
    assert plan.dram_read_b_bytes == 768 * 2304 // 2
    monkeypatch.setattr(memory, "CYCLES_TIE", 0.0)
    fastest = memory.plan_memory(o, hw, compute, 1, candidates, src)
    assert fastest.dram_read_b_bytes == 4 * 768 * 2304 // 2
    assert fastest.stall_cycles < plan.stall_cycles
    assert compute + plan.stall_cycles <= (compute + fastest.stall_cycles) * 1.02 + 1


def test_compressed_weight_bits():
    assert sparse.weight_bits_per_element(4, skipping=True) == 3.0  # (4 + 2) / 2: 0.75x
    assert sparse.weight_bits_per_element(8, skipping=True) == 5.0  # 0.625x
    assert sparse.weight_bits_per_element(16, skipping=True) == 9.0  # 0.5625x
    assert sparse.weight_bits_per_element(4, skipping=False) == 4.0
    assert sparse.reduction_steps(64, skipping=True) == 32


def test_sparse_k_granule_keeps_whole_groups_and_never_grows():
    gran = memory.granule("ws", 6, 4)  # k extent 6 -> 4 for 2:4 groups
    tiling = memory.plan_tiles(ops(4, 16, 4, weight_bits=3.0, k_granule=4),
                               tiny_hw(sram__inputs__size_kib=0.03), gran)
    assert tiling.tile_k % 4 == 0
